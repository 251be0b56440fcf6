"""Who is calling: HMAC-signed user ids, JWTs, anonymous devices, and session tokens.

Only what the app vouched for becomes an identity. A user id with a valid HMAC (the app's
backend signs it: lowercase hex of HMAC-SHA256(identity_secret, UTF-8 bytes of the id)) or a
valid JWT is a verified user; a user id without proof, where proof is optional, is a display
name on a device session. Every refusal is a 401 with its reason.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import jwt

from intake import Identity

from ..errors import Invalid, Unauthorized
from ..normalize import check_text, verified_claims
from ..settings import SdkApp
from ..state import Owner, SdkState, Session

USER_ID_MAX = 255
CONTACT_CHARS = 320


def user_hash(secret: str, user_id: str) -> str:
    """What the company's backend computes for a user id (as Chatwoot and Intercom sign)."""
    return hmac.new(secret.encode(), user_id.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


def hmac_valid(app: SdkApp, user_id: str, given: Any) -> bool:
    if not isinstance(given, str) or not app.secrets():
        return False
    # Every secret is compared, so the time taken does not tell which one matched.
    results = [hmac.compare_digest(user_hash(secret, user_id).encode(),
                                   given.encode("utf-8", "replace"))
               for secret in app.secrets()]
    return any(results)


def check_user_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= USER_ID_MAX:
        raise Invalid("user.id must be a string of 1 to 255 characters.", "invalid_user",
                      {"user.id": "1 to 255 characters"})
    check_text(value, max_chars=USER_ID_MAX, name="user.id")
    return value


def verify_jwt(app: SdkApp, token: Any) -> dict[str, Any]:
    """The claims of a valid token; Unauthorized (with the reason) for anything else."""
    if not isinstance(token, str) or not app.secrets():
        raise Unauthorized("The token cannot be verified.")
    policy = app.jwt
    claims: dict[str, Any] | None = None
    error: Unauthorized | None = None
    for secret in app.secrets():
        try:
            claims = jwt.decode(
                token, secret, algorithms=list(policy.algorithms), leeway=policy.leeway_s,
                options={"require": ["exp"], "verify_aud": False})
            break
        except jwt.ExpiredSignatureError:
            error = Unauthorized("The token has expired.", "token_expired")
            break
        except jwt.ImmatureSignatureError:
            error = Unauthorized("The token is not valid yet.", "token_not_yet_valid")
            break
        except jwt.InvalidTokenError:
            error = error or Unauthorized("The token is not valid for this app.")
    if claims is None:
        raise error or Unauthorized("The token is not valid for this app.")
    now = time.time()
    issued = claims.get("iat", claims.get("nbf", now))
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        raise Unauthorized("The token's iat is not a time.")
    if float(claims["exp"]) - min(float(issued), now) > policy.max_lifetime_s + policy.leeway_s:
        raise Unauthorized(f"The token lives longer than {policy.max_lifetime_s} s.",
                           "token_lifetime_too_long")
    audience = claims.get("aud")
    if audience is not None:
        wanted = {app.id, app.namespace}
        given = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(a, str) and a in wanted for a in given):
            raise Unauthorized("The token is for another app.")
    subject = claims.get("sub") or claims.get("external_id")
    if not isinstance(subject, str) or not 1 <= len(subject) <= USER_ID_MAX:
        raise Unauthorized("The token names no user (sub or external_id).")
    return claims


def _contact(user: dict[str, Any]) -> dict[str, Any] | None:
    """Typed email and phone: shown to agents as `channel_data.contact`, never identities."""
    contact = {}
    for name in ("name", "email", "phone"):
        value = user.get(name)
        if isinstance(value, str) and value:
            contact[name] = check_text(value, max_chars=CONTACT_CHARS, name=f"user.{name}")
    return contact or None


async def open_session(state: SdkState, app: SdkApp, body: dict[str, Any]
                       ) -> tuple[str, Session, str | None]:
    """A new session for a proof in `body`: (token, session, new device token or None)."""
    user = body.get("user")
    if user is not None and not isinstance(user, dict):
        raise Invalid("user must be an object.", "invalid_user", {"user": "an object"})
    user = user or {}
    device_token = body.get("device_token")
    if device_token is not None and not isinstance(device_token, str):
        raise Invalid("device_token must be a string.", "invalid_device_token")
    if "jwt" in body:
        claims = verify_jwt(app, body["jwt"])
        subject = claims.get("sub") or claims["external_id"]
        if "id" in user and user["id"] != subject:
            raise Unauthorized("user.id differs from the token's user.", "identity_mismatch")
        owner = Owner("user", app.id, subject, app.namespace)
        name = claims.get("name") if isinstance(claims.get("name"), str) else None
        return await _verified(state, app, owner, device_token, name=name,
                               identities=verified_claims(claims), contact=None)
    if "user_hash" in body:
        user_id = check_user_id(user.get("id"))
        if not hmac_valid(app, user_id, body["user_hash"]):
            raise Unauthorized("The user_hash does not match the user id.")
        owner = Owner("user", app.id, user_id, app.namespace)
        contact = _contact(user)
        return await _verified(state, app, owner, device_token,
                               name=(contact or {}).get("name"), identities=[],
                               contact=contact)
    if app.hmac_mandatory:
        raise Unauthorized("This app admits only users signed by its backend.",
                           "identity_required")
    if not app.allow_anonymous:
        raise Unauthorized("This app admits no anonymous sessions.", "identity_required")
    contact = _contact(user)
    display = user.get("id") if isinstance(user.get("id"), str) else None
    if display is not None:
        check_user_id(display)  # not trusted: a display name on a device session
    new_token: str | None = None
    if device_token is not None:
        device = await state.device(app.id, device_token)
        if device is None or device.get("spent_by"):
            raise Unauthorized("The device token is unknown or was spent.")
        device_id = str(device["device_id"])
    elif body.get("anonymous") is True or user:
        device_id, new_token = await state.new_device(app.id)
    else:
        raise Unauthorized("Send a user_hash, a jwt, a device_token or anonymous: true.",
                           "identity_required")
    owner = Owner("device", app.id, device_id)
    name = display or (contact or {}).get("name")
    token, session = await state.open_session(app.id, owner, app.session_lifetime_s,
                                              display_name=name, contact=contact)
    return token, session, new_token


async def _verified(state: SdkState, app: SdkApp, owner: Owner, device_token: str | None, *,
                    name: str | None, identities: list[Identity],
                    contact: dict[str, Any] | None) -> tuple[str, Session, str | None]:
    if device_token is not None:
        # A device's tickets move to the user signing in on it; the token is then spent.
        device_id = await state.spend_device(app.id, device_token, owner)
        if device_id is not None:
            identities = [*identities, Owner("device", app.id, device_id).identity]
    token, session = await state.open_session(app.id, owner, app.session_lifetime_s,
                                              display_name=name, contact=contact,
                                              identities=identities)
    return token, session, None


async def session_of(state: SdkState, app: SdkApp, authorization: str | None) -> Session:
    """The session a request's `Authorization: Bearer …` names, for this app, unexpired."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("Send Authorization: Bearer <session_token>.", "session_expired")
    session = await state.session(authorization[len("Bearer "):].strip())
    if session is None or session.app != app.id:
        raise Unauthorized("The session is unknown or was revoked.", "session_expired")
    if session.expires_at <= time.time():
        raise Unauthorized("The session has expired.", "session_expired")
    return session
