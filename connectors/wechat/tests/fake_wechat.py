"""A fake WeChat API server at the HTTP level, built from WeChat's documentation.

Official accounts (api.weixin.qq.com): `POST /cgi-bin/stable_token` (the same token while it is
valid; `force_refresh` makes a new one), `GET /cgi-bin/token`, `GET /cgi-bin/media/get` (bytes
with `Content-disposition`; `{"video_url"}` for videos; `{"errcode":40007}` served as
text/plain), `POST /cgi-bin/media/upload`, `GET /cgi-bin/user/info`, `POST
/cgi-bin/message/custom/send`. WeCom (qyapi.weixin.qq.com): `GET /cgi-bin/gettoken`, `POST
/cgi-bin/message/send`. Errcodes as WeChat documents them: 40001 invalid token, 42001 expired,
40013 invalid AppID, 40125 invalid AppSecret, 40164 IP not whitelisted, 40007 invalid media
id, 45015 window closed, 45047 quota, 43004 unfollowed, -1 system busy. Everything else
requested (an XXE's fetch) is recorded in `stray`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

SECRETS = {"wx2c2769f8efd9abc2": "intake-demo-secret-safe",
           "wx1111111111111111": "intake-demo-secret-plain",
           "wx2222222222222222": "intake-demo-secret-compat"}
WECOM_SECRETS = {"wx5823bf96d3bd56c7": "intake-demo-secret-wecom"}


@dataclass
class Media:
    body: bytes = b""
    content_type: str = "image/jpeg"
    filename: str | None = "photo.jpg"
    video: bool = False
    errcode: int | None = None
    delay_s: float = 0.0


@dataclass
class FakeWechat:
    expires_in: int = 7200
    whitelisted: bool = True
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # app id → token, expiry
    media: dict[str, Media] = field(default_factory=dict)
    unionids: dict[str, str | None] = field(default_factory=dict)
    user_info_fails: bool = False
    # Per recipient, the errcodes the next sends answer (then 0).
    send_script: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    stray: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> FakeWechat:
        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", self.stable_token)
        app.router.add_get("/cgi-bin/token", self.legacy_token)
        app.router.add_get("/cgi-bin/gettoken", self.wecom_token)
        app.router.add_get("/cgi-bin/media/get", self.media_get)
        app.router.add_get("/video/{name}", self.video)
        app.router.add_post("/cgi-bin/media/upload", self.media_upload)
        app.router.add_get("/cgi-bin/user/info", self.user_info)
        app.router.add_post("/cgi-bin/message/custom/send", self.custom_send)
        app.router.add_post("/cgi-bin/message/send", self.wecom_send)
        app.router.add_route("*", "/{tail:.*}", self.anything_else)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    # -- tokens -----------------------------------------------------------------------------------

    def invalidate(self, app_id: str) -> None:
        """The token WeChat handed out stops working (another party forced a refresh)."""
        self.tokens.pop(app_id, None)

    def _issue(self, app_id: str, force: bool) -> dict[str, Any]:
        current = self.tokens.get(app_id)
        if current is None or force or current[1] <= time.time():
            current = (f"TOKEN-{app_id}-{secrets.token_hex(6)}", time.time() + self.expires_in)
            self.tokens[app_id] = current
        self.calls["token_issued"] += 1
        return {"access_token": current[0], "expires_in": int(current[1] - time.time())}

    def _app_of(self, token: str) -> tuple[str | None, int]:
        for app_id, (value, expires_at) in self.tokens.items():
            if value == token:
                return (app_id, 0) if expires_at > time.time() else (None, 42001)
        if token.startswith("TOKEN-"):
            return None, 40001
        return None, 40001

    def _credentials(self, app_id: str, secret: str,
                     table: dict[str, str]) -> dict[str, Any] | None:
        if app_id not in table:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if table[app_id] != secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if not self.whitelisted:
            return {"errcode": 40164, "errmsg": "invalid ip 203.0.113.9, not in whitelist"}
        return None

    async def stable_token(self, request: web.Request) -> web.Response:
        self.calls["stable_token"] += 1
        body = await request.json()
        refused = self._credentials(body.get("appid", ""), body.get("secret", ""), SECRETS)
        if refused:
            return web.json_response(refused)
        return web.json_response(self._issue(body["appid"], bool(body.get("force_refresh"))))

    async def legacy_token(self, request: web.Request) -> web.Response:
        self.calls["token"] += 1
        q = request.query
        refused = self._credentials(q.get("appid", ""), q.get("secret", ""), SECRETS)
        return web.json_response(refused or self._issue(q["appid"], True))

    async def wecom_token(self, request: web.Request) -> web.Response:
        self.calls["gettoken"] += 1
        q = request.query
        refused = self._credentials(q.get("corpid", ""), q.get("corpsecret", ""), WECOM_SECRETS)
        if refused:
            return web.json_response(refused)
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  **self._issue(q["corpid"], False)})

    def _token_error(self, request: web.Request) -> web.Response | None:
        app_id, errcode = self._app_of(request.query.get("access_token", ""))
        if app_id is None:
            return web.json_response({"errcode": errcode, "errmsg": "access_token invalid"})
        return None

    # -- media and users ---------------------------------------------------------------------

    async def media_get(self, request: web.Request) -> web.StreamResponse:
        self.calls["media_get"] += 1
        refused = self._token_error(request)
        if refused:
            return refused
        media = self.media.get(request.query.get("media_id", ""))
        if media is None or media.errcode is not None:
            # WeChat serves this JSON as text/plain.
            return web.Response(text=json.dumps({"errcode": media.errcode if media else 40007,
                                                 "errmsg": "invalid media_id"}),
                                content_type="text/plain")
        if media.delay_s:
            await asyncio.sleep(media.delay_s)
        if media.video:
            return web.json_response({"video_url": f"{self.url}/video/{request.query['media_id']}"})
        headers = {}
        if media.filename:
            headers["Content-disposition"] = f'attachment; filename="{media.filename}"'
        return web.Response(body=media.body, content_type=media.content_type, headers=headers)

    async def video(self, request: web.Request) -> web.Response:
        self.calls["video"] += 1
        media = self.media[request.match_info["name"]]
        return web.Response(body=media.body, content_type="video/mp4")

    async def media_upload(self, request: web.Request) -> web.Response:
        refused = self._token_error(request)
        if refused:
            return refused
        form = await request.post()
        upload = form["media"]
        self.uploads.append(getattr(upload, "filename", ""))
        return web.json_response({"type": request.query.get("type"), "media_id": "UPLOADED-1",
                                  "created_at": int(time.time())})

    async def user_info(self, request: web.Request) -> web.Response:
        self.calls["user_info"] += 1
        refused = self._token_error(request)
        if refused:
            return refused
        if self.user_info_fails:
            return web.json_response({"errcode": -1, "errmsg": "system error"})
        openid = request.query.get("openid", "")
        answer: dict[str, Any] = {"subscribe": 1, "openid": openid, "language": "zh_CN"}
        if self.unionids.get(openid):
            answer["unionid"] = self.unionids[openid]
        return web.json_response(answer)

    # -- messages ---------------------------------------------------------------------------------

    async def _send(self, request: web.Request, endpoint: str) -> web.Response:
        self.calls[endpoint] += 1
        refused = self._token_error(request)
        if refused:
            return refused
        body = await request.json()
        script = self.send_script[body.get("touser", "")]
        errcode = script.pop(0) if script else 0
        if errcode:
            return web.json_response({"errcode": errcode, "errmsg": f"fake error {errcode}"})
        self.sent.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok",
                                  "msgid": 1000 + len(self.sent)})

    async def custom_send(self, request: web.Request) -> web.Response:
        return await self._send(request, "custom_send")

    async def wecom_send(self, request: web.Request) -> web.Response:
        return await self._send(request, "message_send")

    async def anything_else(self, request: web.Request) -> web.Response:
        self.stray.append(request.path_qs)
        return web.Response(status=404)
