"""The HTTP edge: pages, QR codes, embeds, schema, and every kind of submission."""

from __future__ import annotations

import hashlib
import io
import re
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import segno
from aiohttp.test_utils import TestClient

from connectors.webform.inbound import render_qr
from connectors.webform.normalize import REFERENCE
from intake.blobs import FileBlobStore

from .conftest import PUBLIC_URL, FailingPublisher, MakeClient, RecordingPublisher

CONTACT = {"name": "王芳", "email": "Wang.Fang@Example.CN", "phone": "138 0013 8000",
           "topic": "complaint", "subject": "快递损坏", "message": "收到的包裹破了。\n商品有划痕。",
           "consent": "on"}
HTML = {"Accept": "text/html,application/xhtml+xml"}


def token_of(page: str) -> str:
    match = re.search(r'name="_token" value="([0-9a-f]{32})"', page)
    assert match, "the page carries an idempotency token"
    return match.group(1)


async def test_form_page_renders_labels_honeypot_and_theme(client: TestClient) -> None:
    response = await client.get("/forms/contact")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '<html lang="zh-CN">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'action="/forms/contact/submissions"' in page
    assert 'enctype="multipart/form-data"' in page and 'method="post"' in page
    for name in ("name", "email", "phone", "topic", "subject", "message", "attachment",
                 "consent"):
        assert f'<label for="f-{name}">' in page
        assert f'id="f-{name}" name="{name}"' in page
    assert "（必填）" in page  # required is said in words, not only by colour
    assert 'aria-describedby="f-email-help"' in page
    assert re.search(r'<div class="hp" aria-hidden="true">.*?name="website" value="" '
                     r'tabindex="-1" autocomplete="off"', page, re.S)
    assert "--theme: #0f766e" in page
    assert "<script" not in page.split("</form>")[0]  # nothing the form needs is scripted
    assert token_of(page) != token_of(await (await client.get("/forms/contact")).text())


async def test_static_stylesheet_is_served(client: TestClient) -> None:
    response = await client.get("/static/webform/form.css")
    assert response.status == 200 and response.content_type == "text/css"
    assert ":focus-visible" in await response.text()
    assert (await client.get("/static/webform/../settings.py")).status == 404


async def test_unknown_form_is_404_form_not_found(client: TestClient) -> None:
    response = await client.get("/forms/nope/schema")
    assert response.status == 404
    assert (await response.json())["error"] == "form_not_found"
    response = await client.post("/forms/nope/submissions", json={"a": "b"})
    assert response.status == 404
    assert (await response.json())["error"] == "form_not_found"
    response = await client.get("/forms/nope", headers=HTML)
    assert response.status == 404 and "not found" in await response.text()


async def test_schema_lists_fields_options_and_submit_url(client: TestClient) -> None:
    response = await client.get("/forms/contact/schema")
    assert response.status == 200
    schema = await response.json()
    assert schema["id"] == "contact"
    assert schema["title"] == "联系我们 · Contact us"
    assert schema["submit_url"] == f"{PUBLIC_URL}/forms/contact/submissions"
    fields = {f["name"]: f for f in schema["fields"]}
    assert list(fields) == ["name", "email", "phone", "topic", "subject", "message",
                            "attachment", "consent"]
    assert fields["email"] == {"name": "email", "type": "email", "label": "电子邮箱 Email",
                               "required": True,
                               "help": "我们会通过此邮箱回复您。We reply to this address."}
    assert [o["value"] for o in fields["topic"]["options"]] == [
        "enquiry", "after_sales", "complaint", "suggestion"]
    assert fields["topic"]["options"][1]["label"] == "售后 After-sales"
    assert "options" not in fields["name"]
    assert fields["attachment"]["multiple"] is True


async def test_qr_codes_encode_the_public_form_url(client: TestClient) -> None:
    url = f"{PUBLIC_URL}/forms/contact"
    svg = await client.get("/forms/contact/qr.svg")
    assert svg.status == 200 and svg.content_type == "image/svg+xml"
    body = await svg.read()
    assert body.startswith(b"<?xml") and b"<svg" in body
    expected = io.BytesIO()
    segno.make(url, error="m", micro=False).save(expected, kind="svg", scale=8, border=4,
                                                  xmldecl=True, svgns=True)
    assert body == expected.getvalue()
    # Another URL gives another picture, so the comparison above means something.
    assert body != render_qr(f"{PUBLIC_URL}/forms/tiny", "svg")
    png = await client.get("/forms/contact/qr.png")
    assert png.status == 200 and png.content_type == "image/png"
    assert (await png.read()).startswith(b"\x89PNG\r\n\x1a\n")


async def test_embed_script_and_iframe_snippet(client: TestClient) -> None:
    response = await client.get("/forms/contact/embed.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    script = await response.text()
    assert f'frame.src = "{PUBLIC_URL}/forms/contact";' in script
    assert 'getAttribute("data-target")' in script
    assert "insertBefore(frame, script.nextSibling)" in script
    assert "width:100%" in script
    snippet = await (await client.get("/forms/contact/embed")).text()
    assert snippet.startswith(f'<iframe src="{PUBLIC_URL}/forms/contact"')
    assert 'title="联系我们 · Contact us"' in snippet


async def test_json_submission_becomes_a_message(client: TestClient,
                                                 publisher: RecordingPublisher) -> None:
    response = await client.post("/forms/contact/submissions", json=CONTACT,
                                 headers={"User-Agent": "shop-app/2.1"})
    assert response.status == 201
    receipt = await response.json()
    [message] = publisher.messages
    assert receipt["id"] == str(message.id)
    assert receipt["status"] == "received"
    assert REFERENCE.match(receipt["reference"])
    assert receipt["idempotency_key"] == message.idempotency_key
    assert message.idempotency_key.startswith("webform:contact:")
    assert message.channel == "webform" and message.account == "contact"
    assert message.kind == "form_submission"
    assert message.sender.name == "王芳"
    assert [(i.kind, i.value, i.verified) for i in message.sender.identities] == [
        ("email", "wang.fang@example.cn", False), ("phone", "+8613800138000", False)]
    assert message.subject == "快递损坏"
    assert message.text.startswith("收到的包裹破了。\n商品有划痕。\n\n")
    assert "类别 Topic: 投诉 Complaint" in message.text
    assert message.form is not None and message.form.fields["topic"] == "complaint"
    assert message.form.fields["consent"] is True
    assert message.form.fields["attachment"] == []
    assert message.channel_data == {"reference": receipt["reference"],
                                    "user_agent": "shop-app/2.1", "client_ip": "127.0.0.1"}
    assert message.flags == []
    assert message.raw and message.raw.startswith("sha256:")
    assert message.trace_id and len(message.trace_id) == 32


async def test_json_accepts_a_fields_envelope(client: TestClient,
                                              publisher: RecordingPublisher) -> None:
    response = await client.post("/forms/contact/submissions", json={"fields": CONTACT})
    assert response.status == 201
    assert publisher.messages[0].sender.name == "王芳"


async def test_urlencoded_submission_keeps_raw_body(client: TestClient,
                                                    publisher: RecordingPublisher,
                                                    blobs: FileBlobStore) -> None:
    body = "name=Ann+Lee&email=ann%40example.com&topic=enquiry&subject=Hi&message=Hello&consent=on"
    response = await client.post("/forms/contact/submissions", data=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 201, await response.text()
    [message] = publisher.messages
    assert await blobs.get(message.raw or "") == body.encode()
    assert message.sender.name == "Ann Lee"
    assert [i.kind for i in message.sender.identities] == ["email"]


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]
              ) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, filename, data, content_type in files:
        form.add_field(name, data, filename=filename, content_type=content_type)
    return form


def raw_multipart(fields: dict[str, str], files: list[tuple[str, str, bytes, str]]
                  ) -> tuple[bytes, dict[str, str]]:
    """Built by hand: aiohttp's client refuses control characters in a filename."""
    boundary = "----intakeBoundary7MA4YWxk"
    out = bytearray()
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()
    for name, filename, data, content_type in files:
        # RFC 5987 `filename*` is how a browser-independent client sends any character.
        quoted = urllib.parse.quote(filename, safe="")
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f"filename*=UTF-8''{quoted}\r\nContent-Type: {content_type}\r\n\r\n"
                ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_multipart_files_go_to_the_blob_store(client: TestClient,
                                                    publisher: RecordingPublisher,
                                                    blobs: FileBlobStore) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    pdf = b"%PDF-1.4\n" + b"x" * 1000
    body, headers = raw_multipart(CONTACT, [
        ("attachment", "../../etc/照片\x07.png", png, "image/png"),
        ("attachment", "C:\\Users\\a\\invoice.pdf", pdf, "application/pdf")])
    response = await client.post("/forms/contact/submissions", data=body, headers=headers)
    assert response.status == 201, await response.text()
    [message] = publisher.messages
    first, second = message.attachments
    assert first.filename == "照片_.png"
    assert first.original_filename == "../../etc/照片\ufffd.png"
    assert second.filename == "invoice.pdf"
    assert first.content_type == "image/png" and second.content_type == "application/pdf"
    for attachment, content in ((first, png), (second, pdf)):
        assert attachment.size == len(content)
        assert attachment.sha256 == hashlib.sha256(content).hexdigest()
        assert attachment.blob == f"sha256:{attachment.sha256}"
        assert await blobs.get(attachment.blob) == content
    assert message.form is not None
    assert message.form.fields["attachment"] == ["照片_.png", "invoice.pdf"]
    raw = await blobs.get(message.raw or "")
    assert b'"content_type": "multipart/form-data"' in raw
    assert hashlib.sha256(png).hexdigest().encode() in raw


async def test_a_raw_control_character_in_a_part_header_is_400(client: TestClient) -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="a"; filename="x\x07"\r\n\r\n'
            b"data\r\n--b--\r\n")
    response = await client.post("/forms/contact/submissions", data=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_body"


async def test_an_empty_file_input_is_no_attachment(client: TestClient,
                                                    publisher: RecordingPublisher) -> None:
    data = multipart(CONTACT, [("attachment", "", b"", "application/octet-stream")])
    response = await client.post("/forms/contact/submissions", data=data)
    assert response.status == 201, await response.text()
    assert publisher.messages[0].attachments == []


async def test_invalid_fields_answer_422_per_field_in_json(client: TestClient,
                                                           publisher: RecordingPublisher
                                                           ) -> None:
    bad = dict(CONTACT, email="not-an-address", phone="12", topic="refund", consent="",
               message="", extra="?")
    response = await client.post("/forms/contact/submissions", json=bad)
    assert response.status == 422
    body = await response.json()
    assert body["error"] == "validation_failed"
    assert set(body["fields"]) == {"email", "phone", "topic", "consent", "message", "extra"}
    assert body["fields"]["topic"] == "Choose one of the listed options."
    assert body["fields"]["consent"] == "Tick this box to continue."
    assert body["fields"]["message"] == "This field is required."
    assert publisher.messages == []


async def test_pattern_max_length_accept_and_checkbox_rules(make_client: MakeClient,
                                                            publisher: RecordingPublisher
                                                            ) -> None:
    client = await make_client(max_field_chars=50)
    data = multipart({"order": "12a456", "question": "q" * 51, "newsletter": "maybe",
                      "mail": "x@example.com"},
                     [("photo", "a.gif", b"GIF89a", "image/gif")])
    response = await client.post("/forms/tiny/submissions", data=data)
    assert response.status == 422
    fields = (await response.json())["fields"]
    assert fields["order"] == "This is not in the expected format."
    assert fields["question"].startswith("Use at most 50 characters")
    assert fields["newsletter"] == "Tick the box or leave it empty."
    assert "not accepted" in fields["photo"]
    data = multipart({"order": "123456", "question": "Where is it?", "newsletter": "on",
                      "mobile": "+44 20 7946 0018"},
                     [("photo", "a.JPG", b"\xff\xd8\xff", "image/jpeg")])
    response = await client.post("/forms/tiny/submissions", data=data)
    assert response.status == 201, await response.text()
    message = publisher.messages[-1]
    assert message.subject == "Order question: Where is it?"
    assert message.sender.name is None
    assert [i.value for i in message.sender.identities] == ["+442079460018"]
    assert message.text == "Where is it?\n\nOrder number: 123456\nNewsletter: yes"


async def test_a_phone_without_country_code_needs_a_default_region(client: TestClient) -> None:
    response = await client.post("/forms/tiny/submissions",
                                 json={"question": "q", "mobile": "020 7946 0018"})
    assert response.status == 422
    assert "country code" in (await response.json())["fields"]["mobile"]


async def test_browser_gets_the_form_again_with_values_and_errors(client: TestClient) -> None:
    page = await (await client.get("/forms/contact")).text()
    token = token_of(page)
    bad = dict(CONTACT, email="nope", _token=token, name="<b>Ann</b>")
    response = await client.post("/forms/contact/submissions", data=multipart(bad, []),
                                 headers=HTML)
    assert response.status == 422
    page = await response.text()
    assert '<div class="error-summary" role="alert"' in page
    assert '<a href="#f-email">电子邮箱 Email: Enter a valid email address' in page
    assert 'aria-describedby="f-email-help f-email-error"' in page
    assert 'aria-invalid="true"' in page
    assert 'value="&lt;b&gt;Ann&lt;/b&gt;"' in page  # kept, and escaped
    assert 'value="nope"' in page
    assert '<option value="complaint" selected>' in page
    assert "收到的包裹破了。\n商品有划痕。</textarea>" in page
    assert 'name="consent" value="on" checked' in page
    assert token_of(page) == token  # the same rendered page is still one message


async def test_browser_success_redirects_to_the_confirmation(client: TestClient,
                                                             publisher: RecordingPublisher
                                                             ) -> None:
    token = token_of(await (await client.get("/forms/contact")).text())
    response = await client.post("/forms/contact/submissions",
                                 data=multipart(dict(CONTACT, _token=token), []),
                                 headers=HTML, allow_redirects=False)
    assert response.status == 303
    location = response.headers["Location"]
    [message] = publisher.messages
    reference = message.channel_data["reference"]  # type: ignore[index]
    assert location == f"/forms/contact/thanks?ref={reference}"
    page = await (await client.get(location)).text()
    assert f'<p class="reference" id="reference">{reference}</p>' in page
    assert "我们已收到您的留言" in page
    # A double click posts the same page twice: one idempotency key, one reference.
    again = await client.post("/forms/contact/submissions",
                              data=multipart(dict(CONTACT, _token=token), []),
                              headers=HTML, allow_redirects=False)
    assert again.headers["Location"] == location
    assert publisher.messages[1].idempotency_key == message.idempotency_key
    # The same page sent again after editing is another message.
    edited = await client.post("/forms/contact/submissions",
                               data=multipart(dict(CONTACT, _token=token, subject="x"), []),
                               headers=HTML, allow_redirects=False)
    assert edited.headers["Location"] != location


async def test_thanks_page_refuses_a_made_up_reference(client: TestClient) -> None:
    response = await client.get("/forms/contact/thanks?ref=<script>", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/forms/contact"


async def test_idempotency_key_header_makes_a_retry_the_same(client: TestClient,
                                                             publisher: RecordingPublisher
                                                             ) -> None:
    receipts = []
    for _ in range(2):
        response = await client.post("/forms/contact/submissions", json=CONTACT,
                                     headers={"Idempotency-Key": "order-77-try"})
        assert response.status == 201
        receipts.append(await response.json())
    assert receipts[0]["idempotency_key"] == "webform:contact:order-77-try"
    assert receipts[0]["reference"] == receipts[1]["reference"]
    assert {m.idempotency_key for m in publisher.messages} == {"webform:contact:order-77-try"}
    # Without a key every submission is its own message.
    other = await (await client.post("/forms/contact/submissions", json=CONTACT)).json()
    assert other["idempotency_key"] != receipts[0]["idempotency_key"]
    bad = await client.post("/forms/contact/submissions", json=CONTACT,
                            headers={"Idempotency-Key": "has space"})
    assert bad.status == 400
    assert (await bad.json())["error"] == "idempotency_key_invalid"


async def test_a_filled_honeypot_is_accepted_but_flagged(client: TestClient,
                                                         publisher: RecordingPublisher) -> None:
    response = await client.post("/forms/contact/submissions",
                                 json=dict(CONTACT, website="http://spam.example"))
    assert response.status == 201
    assert (await response.json())["status"] == "received"
    [message] = publisher.messages
    assert message.flags == ["spam_suspect"]
    assert "website" not in (message.form.fields if message.form else {})


async def test_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=2048)
    response = await client.post("/forms/contact/submissions",
                                 json=dict(CONTACT, message="x" * 4000))
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    # Enforced while reading too, when no Content-Length announces the size.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"a" * 1024

    response = await client.post("/forms/contact/submissions", data=chunks(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 413


async def test_file_over_the_limit_is_413_naming_the_field(client: TestClient,
                                                           publisher: RecordingPublisher
                                                           ) -> None:
    data = multipart(CONTACT, [("attachment", "big.pdf", b"x" * (33 * 1024), "application/pdf")])
    response = await client.post("/forms/contact/submissions", data=data)
    assert response.status == 413
    body = await response.json()
    assert body["error"] == "payload_too_large"
    assert "big.pdf is over the limit of 32 KiB" in body["fields"]["attachment"]
    assert publisher.messages == []
    html = await client.post("/forms/contact/submissions", headers=HTML,
                             data=multipart(CONTACT, [("attachment", "big.pdf",
                                                       b"x" * (33 * 1024), "application/pdf")]))
    assert html.status == 413
    assert 'href="#f-attachment"' in await html.text()


async def test_too_many_files_is_422(client: TestClient) -> None:
    files = [("attachment", f"{i}.pdf", b"%PDF", "application/pdf") for i in range(4)]
    response = await client.post("/forms/contact/submissions", data=multipart(CONTACT, files))
    assert response.status == 422
    assert "at most 3 files" in (await response.json())["fields"]["attachment"]


async def test_other_content_types_are_415(client: TestClient) -> None:
    response = await client.post("/forms/contact/submissions", data="<x/>",
                                 headers={"Content-Type": "application/xml"})
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"


async def test_malformed_json_is_400(client: TestClient) -> None:
    response = await client.post("/forms/contact/submissions", data="{nope",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_body"


async def test_rate_limit_answers_429_with_retry_after(make_client: MakeClient,
                                                       publisher: RecordingPublisher) -> None:
    client = await make_client(rate_limit_per_minute=6, rate_limit_burst=2)
    statuses = [(await client.post("/forms/contact/submissions", json=CONTACT)).status
                for _ in range(2)]
    assert statuses == [201, 201]
    response = await client.post("/forms/contact/submissions", json=CONTACT)
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert (await response.json())["error"] == "rate_limited"
    assert len(publisher.messages) == 2


async def test_forwarded_for_counts_only_when_trusted(make_client: MakeClient) -> None:
    client = await make_client(rate_limit_per_minute=1, rate_limit_burst=1,
                               trust_forwarded_for=True)
    for ip in ("198.51.100.1", "198.51.100.2"):
        response = await client.post("/forms/contact/submissions", json=CONTACT,
                                     headers={"X-Forwarded-For": f"10.0.0.9, {ip}"})
        assert response.status == 201


async def test_broker_and_outbox_down_is_503_and_nothing_claimed(make_client: MakeClient
                                                                 ) -> None:
    client = await make_client(publisher=FailingPublisher())
    response = await client.post("/forms/contact/submissions", json=CONTACT)
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    body = await response.json()
    assert body["error"] == "unavailable"
    assert "reference" not in body and "id" not in body
    html = await client.post("/forms/contact/submissions", data=multipart(CONTACT, []),
                             headers=HTML, allow_redirects=False)
    assert html.status == 503
    page = await html.text()
    assert "暂时无法保存您的留言" in page and 'value="王芳"' in page


async def test_submissions_and_refusals_are_counted_in_metrics(client: TestClient) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    received = sample("intake_messages_in_total", service="webform", channel="webform")
    refused = sample("intake_errors_total", service="webform", reason="validation_failed")
    assert (await client.post("/forms/contact/submissions", json=CONTACT)).status == 201
    assert (await client.post("/forms/contact/submissions", json={"name": "x"})).status == 422
    assert sample("intake_messages_in_total", service="webform",
                  channel="webform") == received + 1
    assert sample("intake_errors_total", service="webform",
                  reason="validation_failed") == refused + 1


async def test_a_blob_store_that_fails_is_503_and_the_retry_stores_everything(
        aiohttp_client: Any, tmp_path: Path) -> None:
    from .conftest import build_app, make_settings

    class FlakyBlobs(FileBlobStore):
        failures = 1

        async def put(self, data: bytes, ref: str | None = None) -> str:
            if self.failures:
                self.failures -= 1
                raise OSError("disk unavailable")
            return await super().put(data, ref)

    publisher = RecordingPublisher()
    blobs = FlakyBlobs(tmp_path / "blobs")
    client = await aiohttp_client(build_app(make_settings(), publisher, blobs))
    headers = {"Idempotency-Key": "retry-after-blob-failure"}
    first = await client.post("/forms/contact/submissions", json=CONTACT, headers=headers)
    assert first.status == 503
    assert (await first.json())["error"] == "unavailable"
    assert publisher.messages == []  # answered before anything was published
    again = await client.post("/forms/contact/submissions", json=CONTACT, headers=headers)
    assert again.status == 201
    # The same key both times (the first copy, if out, is a harmless duplicate), and the raw
    # body the message names is in the store now.
    keys = {m.idempotency_key for m in publisher.messages}
    assert keys == {"webform:contact:retry-after-blob-failure"}
    raw = publisher.messages[-1].raw
    assert raw is not None and await blobs.exists(raw)


async def test_a_blob_failure_publishes_nothing_so_a_retry_without_a_key_is_one_ticket(
        aiohttp_client: Any, tmp_path: Path) -> None:
    """No Idempotency-Key and no page token: the retry gets a new key, so a message published
    before the blob failure would have become a second ticket."""
    from .conftest import build_app, make_settings

    class FlakyBlobs(FileBlobStore):
        failures = 1

        async def put(self, data: bytes, ref: str | None = None) -> str:
            stored = await super().put(data, ref)
            if self.failures:  # written, but the commit is reported failed (a full disk)
                self.failures -= 1
                raise OSError("no space left on device")
            return stored

    publisher = RecordingPublisher()
    client = await aiohttp_client(build_app(make_settings(), publisher, FlakyBlobs(
        tmp_path / "blobs")))
    first = await client.post("/forms/contact/submissions", json=CONTACT)
    assert first.status == 503 and publisher.messages == []
    again = await client.post("/forms/contact/submissions", json=CONTACT)
    assert again.status == 201
    assert len(publisher.messages) == 1

