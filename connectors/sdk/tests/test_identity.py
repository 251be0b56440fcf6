"""Who may open a session: HMAC vectors, JWTs, devices, and every refusal's reason."""

from __future__ import annotations

import hashlib
import hmac
import time
import unicodedata
from typing import Any

import jwt
import pytest

from intake.testing import RecordingPublisher

from .conftest import APP_SECRET, WIDGET_SECRET, Sdk


def python_hmac(secret: str, user_id: str) -> str:
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("user_id", ["u-1001", "李雷", "用户🎉42", "a:b:c", " padded ",
                                     unicodedata.normalize("NFC", "café")])
async def test_hmac_signed_users_are_verified(app_client: Sdk, user_id: str) -> None:
    answer = await app_client.session({"user": {"id": user_id},
                                       "user_hash": python_hmac(APP_SECRET, user_id)})
    assert answer["user"] == {"id": user_id, "verified": True, "name": None}
    assert len(answer["session_token"]) >= 40 and "device_token" not in answer


async def test_the_id_is_taken_byte_for_byte(app_client: Sdk) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    answer = await app_client.session({"user": {"id": nfd},
                                       "user_hash": python_hmac(APP_SECRET, nfc)}, status=401)
    assert answer["error"] == "invalid_identity"
    upper = await app_client.session({"user": {"id": "U-1001"},
                                      "user_hash": python_hmac(APP_SECRET, "u-1001")}, 401)
    assert upper["error"] == "invalid_identity"


async def test_another_apps_secret_or_a_forged_hash_is_refused(app_client: Sdk) -> None:
    for given in (python_hmac(WIDGET_SECRET, "u-1"), "0" * 64, "", None, 5):
        answer = await app_client.session({"user": {"id": "u-1"}, "user_hash": given}, 401)
        assert answer["error"] == "invalid_identity"


async def test_hmac_mandatory_refuses_unproven_and_anonymous(app_client: Sdk) -> None:
    for body in ({"user": {"id": "u-1"}}, {"anonymous": True}, {}):
        answer = await app_client.session(body, 401)
        assert answer["error"] == "identity_required"


def token(claims: dict[str, Any], secret: str = APP_SECRET, algorithm: str = "HS256",
          **headers: Any) -> str:
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 600, **claims}, secret, algorithm=algorithm,
                      headers=headers or None)


async def test_a_jwt_names_the_user_by_sub_or_external_id(app_client: Sdk) -> None:
    answer = await app_client.session({"jwt": token({"sub": "u-7", "name": "韩梅梅"})})
    assert answer["user"] == {"id": "u-7", "verified": True, "name": "韩梅梅"}
    zendesk = await app_client.session({"jwt": token({"external_id": "z-9", "aud": "demo-shop"})})
    assert zendesk["user"]["id"] == "z-9"


@pytest.mark.parametrize(("claims", "reason"), [
    ({"sub": "u", "exp": int(time.time()) - 120}, "token_expired"),
    ({"sub": "u", "nbf": int(time.time()) + 7200, "exp": int(time.time()) + 9000},
     "token_not_yet_valid"),
    ({"sub": "u", "iat": int(time.time()), "exp": int(time.time()) + 2 * 86_400},
     "token_lifetime_too_long"),
    ({"sub": "u", "aud": "another-app"}, "invalid_identity"),
    ({"name": "no subject"}, "invalid_identity"),
])
async def test_jwt_refusals_name_their_reason(app_client: Sdk, claims: dict[str, Any],
                                              reason: str) -> None:
    answer = await app_client.session({"jwt": token(claims)}, 401)
    assert answer["error"] == reason


async def test_alg_none_other_algorithms_and_tampering_are_refused(app_client: Sdk) -> None:
    good = token({"sub": "u-1"})
    header, _payload, signature = good.split(".")
    other_payload = jwt.utils.base64url_encode(b'{"sub":"u-2","exp":9999999999}').decode()
    forged = [
        jwt.encode({"sub": "u-1", "exp": int(time.time()) + 60}, None, algorithm="none"),
        token({"sub": "u-1"}, algorithm="HS512"),
        f"{header}.{other_payload}.{signature}",
        token({"sub": "u-1"}, secret=WIDGET_SECRET),
        good[:-2],
        "not a token",
    ]
    for forgery in forged:
        answer = await app_client.session({"jwt": forgery}, 401)
        assert answer["error"] == "invalid_identity", forgery
    exp_missing = jwt.encode({"sub": "u-1"}, APP_SECRET, algorithm="HS256")
    assert (await app_client.session({"jwt": exp_missing}, 401))["error"] == "invalid_identity"


async def test_a_body_user_differing_from_the_token_is_a_mismatch(app_client: Sdk) -> None:
    answer = await app_client.session({"jwt": token({"sub": "u-1"}), "user": {"id": "u-2"}}, 401)
    assert answer["error"] == "identity_mismatch"


async def test_only_verified_jwt_claims_become_identities(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    claims = {"sub": "u-5", "email": "a@example.com", "email_verified": True,
              "phone_number": "+8613800138000", "phone_number_verified": False}
    session = (await app_client.session({"jwt": token(claims)}))["session_token"]
    status, _ = await app_client.call("POST", "/messages", session,
                                      {"client_msg_id": "m1", "text": "hi"})
    assert status == 201
    kinds = {(i.kind, i.value) for i in publisher.messages[0].sender.identities}
    assert kinds == {("sdk_user", "demo-shop:u-5"), ("email", "a@example.com")}


async def test_typed_email_is_contact_data_never_an_identity(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-6", email="victim@example.com", phone="+8613800138000")
    status, _ = await app_client.call("POST", "/messages", session,
                                      {"client_msg_id": "m1", "text": "hi"})
    assert status == 201
    message = publisher.messages[0]
    assert [i.kind for i in message.sender.identities] == ["sdk_user"]
    assert message.channel_data is not None
    assert message.channel_data["contact"] == {"email": "victim@example.com",
                                               "phone": "+8613800138000", "verified": False}


async def test_a_user_id_without_proof_is_only_a_device_display_name(
        widget_client: Sdk, publisher: RecordingPublisher) -> None:
    answer = await widget_client.session({"user": {"id": "u-1001"}})
    assert answer["user"]["verified"] is False and answer["user"]["id"] is None
    assert answer["device_token"]
    status, _ = await widget_client.call("POST", "/messages", answer["session_token"],
                                         {"client_msg_id": "m1", "text": "hi"})
    assert status == 201
    identity = publisher.messages[0].sender.identities
    assert [i.kind for i in identity] == ["sdk_device"]


async def test_a_device_is_resumed_then_spent_by_the_user_signing_in(
        widget_client: Sdk, publisher: RecordingPublisher) -> None:
    first = await widget_client.session({"anonymous": True})
    device_token, visitor = first["device_token"], first["session_token"]
    status, ticket = await widget_client.call("POST", "/tickets", visitor,
                                              {"client_msg_id": "t1", "text": "where?"})
    assert status == 201
    again = await widget_client.session({"device_token": device_token})
    assert "device_token" not in again
    status, mine = await widget_client.call("GET", "/tickets", again["session_token"])
    assert [t["id"] for t in mine["items"]] == [ticket["id"]]
    user = await widget_client.session({"user": {"id": "u-9"}, "device_token": device_token,
                                        "user_hash": python_hmac(WIDGET_SECRET, "u-9")})
    status, mine = await widget_client.call("GET", "/tickets", user["session_token"])
    assert [t["id"] for t in mine["items"]] == [ticket["id"]]
    status, _ = await widget_client.call("POST", f"/tickets/{ticket['id']}/messages",
                                         user["session_token"],
                                         {"client_msg_id": "m2", "text": "it's me"})
    assert status == 201
    kinds = [i.kind for i in publisher.messages[-1].sender.identities]
    assert kinds == ["sdk_user", "sdk_device"]
    # The token is spent: the next person on that device gets nothing of the first's.
    spent = await widget_client.session({"device_token": device_token}, 401)
    assert spent["error"] == "invalid_identity"
    status, _ = await widget_client.call("GET", "/tickets", visitor)
    assert status == 200


async def test_a_revoked_or_foreign_session_is_refused(app_client: Sdk,
                                                       widget_client: Sdk) -> None:
    session = await app_client.signed("u-1")
    assert (await app_client.call("GET", "/tickets", session))[0] == 200
    status, answer = await widget_client.call("GET", "/tickets", session)
    assert (status, answer["error"]) == (401, "session_expired")
    assert (await app_client.call("DELETE", "/sessions/current", session))[0] == 204
    status, answer = await app_client.call("GET", "/tickets", session)
    assert (status, answer["error"]) == (401, "session_expired")


async def test_an_unknown_app_is_404(app_client: Sdk) -> None:
    response = await app_client.client.post("/sdk/v1/apps/nope/sessions", json={})
    assert response.status == 404 and (await response.json())["error"] == "unknown_app"
