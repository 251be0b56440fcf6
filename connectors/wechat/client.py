"""WechatClient: WeChat's server API over aiohttp (tokens, media, user info, messages).

Access tokens: one per account, cached in memory and in the state store, refreshed ahead of
`expires_in` and never used after it, fetched by one task at a time while the others wait
(single flight). Official accounts use the stable token API (`POST /cgi-bin/stable_token`),
which returns the same token while it is valid, so that replicas do not invalidate each
other's; on 40001 the token is fetched again normally first, and with `force_refresh` only when
WeChat hands back the very token it just rejected. WeCom apps use `GET /cgi-bin/gettoken`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import Counter

from intake import get_logger

from .errors import ApiError, ApiRefused
from .settings import OfficialAccount, WechatSettings, WecomApp
from .state import WechatState

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# Seconds before `expires_in` at which a token is no longer used (WeChat's tokens last 7200 s).
REFRESH_AHEAD_S = 300.0
API_CALLS = Counter("intake_wechat_api_calls_total", "WeChat API calls by endpoint and errcode",
                    ["service", "endpoint", "errcode"])
TOKEN_REFRESHES = Counter("intake_wechat_token_refreshes_total",
                          "Access tokens fetched, by account", ["service", "account"])
log = get_logger(service="wechat", component="client")
_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)

Account = OfficialAccount | WecomApp


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float


@dataclass(frozen=True)
class Download:
    """A media body being read: its filename and content type from WeChat's headers."""

    filename: str | None
    content_type: str
    chunks: AsyncGenerator[bytes, None]


class WechatClient:
    """Every call to WeChat for a set of accounts; `session` is made on first use."""

    def __init__(self, settings: WechatSettings, state: WechatState | None = None) -> None:
        self.settings = settings
        self.state = state
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.api_timeout_s))
        return self._session

    def base(self, account: Account) -> str:
        base = (self.settings.wecom_api_base if isinstance(account, WecomApp)
                else self.settings.api_base)
        return base.rstrip("/")

    # -- tokens -------------------------------------------------------------------------------

    async def token(self, account: Account) -> str:
        cached = self._tokens.get(account.id)
        if cached is not None and cached.expires_at > time.time():
            return cached.value
        lock = self._locks.setdefault(account.id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(account.id)
            if cached is not None and cached.expires_at > time.time():
                return cached.value
            if self.state is not None:
                stored = await self.state.tokens.get(account.id)
                if stored and float(stored["expires_at"]) > time.time():
                    token = Token(stored["value"], float(stored["expires_at"]))
                    self._tokens[account.id] = token
                    return token.value
            return (await self._fetch(account, force=False)).value

    async def refresh(self, account: Account, rejected: str) -> str:
        """A new token after WeChat refused `rejected` (40001, 40014, 42001)."""
        lock = self._locks.setdefault(account.id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(account.id)
            if cached is not None and cached.value != rejected and cached.expires_at > time.time():
                return cached.value  # another caller refreshed it meanwhile
            token = await self._fetch(account, force=False)
            if token.value == rejected and isinstance(account, OfficialAccount):
                token = await self._fetch(account, force=True)
            return token.value

    async def _fetch(self, account: Account, *, force: bool) -> Token:
        if isinstance(account, WecomApp):
            data = await self._call("GET", f"{self.base(account)}/cgi-bin/gettoken",
                                    "gettoken", params={
                                        "corpid": account.corp_id,
                                        "corpsecret": account.secret.get_secret_value()})
        else:
            body: dict[str, Any] = {"grant_type": "client_credential", "appid": account.app_id,
                                    "secret": account.app_secret.get_secret_value()}
            if force:
                body["force_refresh"] = True
            data = await self._call("POST", f"{self.base(account)}/cgi-bin/stable_token",
                                    "stable_token", json_body=body)
        value = str(data.get("access_token", ""))
        if not value:
            raise ApiError("WeChat answered no access_token")
        expires_in = float(data.get("expires_in", 7200))
        # Refreshed ahead of its end (a tenth of a short life), never used after it.
        ahead = min(REFRESH_AHEAD_S, expires_in / 10)
        token = Token(value, time.time() + expires_in - ahead)
        self._tokens[account.id] = token
        TOKEN_REFRESHES.labels("wechat", account.id).inc()
        if self.state is not None:
            await self.state.tokens.put(account.id, {"value": token.value,
                                                     "expires_at": token.expires_at})
        log.info("token_fetched", account=account.id, force=force, expires_in=expires_in)
        return token

    # -- calls with a token -------------------------------------------------------------------

    async def call(self, account: Account, method: str, path: str, endpoint: str, *,
                   params: dict[str, str] | None = None, json_body: Any = None,
                   data: Any = None) -> dict[str, Any]:
        """One API call with the account's token, refreshed and retried once on 40001/42001."""
        token = await self.token(account)
        for attempt in (1, 2):
            query = {**(params or {}), "access_token": token}
            try:
                return await self._call(method, f"{self.base(account)}{path}", endpoint,
                                        params=query, json_body=json_body, data=data)
            except ApiRefused as exc:
                if exc.errcode in TOKEN_ERRORS and attempt == 1:
                    token = await self.refresh(account, token)
                    continue
                raise
        raise AssertionError("unreachable")

    async def _call(self, method: str, url: str, endpoint: str, *,
                    params: dict[str, str] | None = None, json_body: Any = None,
                    data: Any = None) -> dict[str, Any]:
        headers = None
        if json_body is not None:
            # Unescaped UTF-8: WeChat shows `\\uXXXX` escapes literally in some messages.
            data = json.dumps(json_body, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self.session().request(method, url, params=params, data=data,
                                              headers=headers) as response:
                if response.status >= 500:
                    API_CALLS.labels("wechat", endpoint, f"http_{response.status}").inc()
                    raise ApiError(f"WeChat answered HTTP {response.status}")
                text = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            API_CALLS.labels("wechat", endpoint, "network").inc()
            raise ApiError(f"WeChat's API is unreachable: {type(exc).__name__}") from exc
        try:
            answer = json.loads(text)
        except ValueError:
            API_CALLS.labels("wechat", endpoint, "not_json").inc()
            raise ApiError("WeChat answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise ApiError("WeChat answered something that is not a JSON object")
        return self._checked(answer, endpoint)

    @staticmethod
    def _checked(answer: dict[str, Any], endpoint: str) -> dict[str, Any]:
        errcode = int(answer.get("errcode", 0) or 0)
        API_CALLS.labels("wechat", endpoint, str(errcode)).inc()
        if errcode == 0:
            return answer
        message = f"{errcode} {answer.get('errmsg', '')}".strip()
        if errcode in (-1, 45009) or (errcode >= 50000 and errcode < 60000):
            raise ApiError(message, errcode=errcode)
        raise ApiRefused(message, errcode=errcode)

    # -- media --------------------------------------------------------------------------------

    async def media(self, account: Account, media_id: str) -> Download:
        """Start downloading a media id: bytes, or a video's `video_url` followed.

        A JSON answer is not media: an error (`{"errcode": 40007}`, often as text/plain) or a
        video's `{"video_url": …}`. Read `chunks` to the end (the response closes then).
        """
        token = await self.token(account)
        for attempt in (1, 2):
            url = f"{self.base(account)}/cgi-bin/media/get"
            response = await self._open(url, {"access_token": token, "media_id": media_id})
            head = await response.content.read(1)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            disposition = response.headers.get("Content-disposition", "")
            if not disposition and (head == b"{" or content_type in (
                    "application/json", "text/plain")):
                body = head + await response.read()
                response.release()
                try:
                    answer = json.loads(body)
                except ValueError:
                    raise ApiError("WeChat's media answer is neither media nor JSON") from None
                if isinstance(answer, dict) and answer.get("video_url"):
                    API_CALLS.labels("wechat", "media_get", "0").inc()
                    video = await self._open(str(answer["video_url"]), None)
                    return Download(None, video.headers.get("Content-Type", "video/mp4")
                                    .split(";")[0], _chunks(video, b""))
                try:
                    self._checked(answer if isinstance(answer, dict) else {}, "media_get")
                except ApiRefused as exc:
                    if exc.errcode in TOKEN_ERRORS and attempt == 1:
                        token = await self.refresh(account, token)
                        continue
                    raise
                raise ApiError("WeChat's media answer carried no media")
            API_CALLS.labels("wechat", "media_get", "0").inc()
            match = _FILENAME.search(disposition)
            return Download(match.group(1) if match else None,
                            content_type or "application/octet-stream",
                            _chunks(response, head))
        raise AssertionError("unreachable")

    async def _open(self, url: str, params: dict[str, str] | None) -> aiohttp.ClientResponse:
        try:
            response = await self.session().get(url, params=params)
        except (aiohttp.ClientError, TimeoutError) as exc:
            API_CALLS.labels("wechat", "media_get", "network").inc()
            raise ApiError(f"WeChat's media API is unreachable: {type(exc).__name__}") from exc
        if response.status >= 400:
            response.release()
            API_CALLS.labels("wechat", "media_get", f"http_{response.status}").inc()
            if response.status >= 500:
                raise ApiError(f"WeChat's media API answered HTTP {response.status}")
            raise ApiRefused(f"the media URL answered HTTP {response.status}", errcode=0)
        return response

    async def upload(self, account: Account, kind: str, filename: str, content_type: str,
                     data: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("media", data, filename=filename, content_type=content_type)
        answer = await self.call(account, "POST", "/cgi-bin/media/upload", "media_upload",
                                 params={"type": kind}, data=form)
        return str(answer.get("media_id", ""))

    async def unionid(self, account: OfficialAccount, openid: str) -> str | None:
        answer = await self.call(account, "GET", "/cgi-bin/user/info", "user_info",
                                 params={"openid": openid, "lang": "zh_CN"})
        value = answer.get("unionid")
        return str(value) if value else None

    async def send(self, account: Account, body: dict[str, Any]) -> dict[str, Any]:
        """A customer-service message (official accounts) or an app message (WeCom)."""
        if isinstance(account, WecomApp):
            return await self.call(account, "POST", "/cgi-bin/message/send", "message_send",
                                   json_body={**body, "agentid": account.agent_id})
        return await self.call(account, "POST", "/cgi-bin/message/custom/send",
                               "custom_send", json_body=body)


async def _chunks(response: aiohttp.ClientResponse,
                  head: bytes) -> AsyncGenerator[bytes, None]:
    try:
        if head:
            yield head
        async for chunk in response.content.iter_chunked(64 * 1024):
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(f"the media download broke off: {type(exc).__name__}") from exc
    finally:
        response.release()


CHECK_HINTS = {
    40013: "the AppID (WeCom: CorpID) is wrong",
    40125: "the AppSecret (WeCom: the app's Secret) is wrong",
    40001: "the AppSecret is wrong or the token was refused",
    40164: "this server's IP address is not on the account's IP whitelist (公众号后台 → "
           "基本配置 → IP白名单; WeCom: 企业可信IP)",
    40089: "the WeCom app's Secret is wrong",
    -1: "WeChat is busy; try again in a minute",
}


async def check_account(settings: WechatSettings, account: Account) -> tuple[bool, str]:
    """Fetch an access token for `account`: (ok, what to tell ops). Never prints a secret."""
    client = WechatClient(settings)
    try:
        await client._fetch(account, force=False)
    except ApiRefused as exc:
        hint = CHECK_HINTS.get(exc.errcode, "see WeChat's global return codes")
        return False, f"WeChat refused the token request: {exc.errcode}, {hint}"
    except ApiError as exc:
        if exc.errcode is not None:
            hint = CHECK_HINTS.get(exc.errcode, "WeChat's side; try again later")
            return False, f"WeChat answered {exc.errcode}: {hint}"
        return False, (f"no network path to {client.base(account)}: {exc} (check DNS, proxy "
                       "and firewall, or INTAKE_WECHAT_API_BASE)")
    finally:
        await client.close()
    return True, f"access token fetched from {client.base(account)}"
