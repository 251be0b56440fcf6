"""OAuth2 access tokens for XOAUTH2 (IMAP and SMTP): Microsoft 365, Google, any OAuth2 server.

A `TokenSource` asks the account's `token_url` for an access token with a refresh token
(`grant: refresh_token`) or with the client's own credentials (`grant: client_credentials`,
Microsoft's app-only access), and keeps it until a minute before it expires. A refresh token
the server rotates is persisted at once (`email:tokens` in the state store) and used from then
on, also after a restart: Zammad's Microsoft 365 tokens died after 90 days because the rotated
ones were thrown away. The generic flow needs no vendor library.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from intake import StateNamespace, StateStore, get_logger

from .settings import OAuth2

log = get_logger(service="email", component="oauth2")
EXPIRY_MARGIN_S = 60.0  # a token this close to its end is renewed before use
DEFAULT_LIFETIME_S = 3600.0  # when the server does not say (`expires_in` missing)


class TokenRefused(Exception):
    """The token endpoint refused the grant (a revoked or expired refresh token, a wrong
    secret): shown as the mailbox's `auth_error`, retried slowly, never a tight loop."""


class TokenUnavailable(Exception):
    """The token endpoint could not be reached or answered nonsense: retried with backoff."""


def token_namespace(store: StateStore) -> StateNamespace:
    return store.namespace("email:tokens")


class TokenSource:
    """Access tokens for one account and purpose (`imap`, `smtp`), cached and renewed."""

    def __init__(self, key: str, oauth: OAuth2, store: StateNamespace | None = None, *,
                 timeout_s: float = 30.0) -> None:
        self.key = key  # `<account>:<purpose>`: where a rotated refresh token is kept
        self.oauth = oauth
        self.store = store
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0  # tokens asked for (for tests and logs)

    async def access_token(self) -> str:
        async with self._lock:
            if self._token is None or time.time() >= self._expires_at - EXPIRY_MARGIN_S:
                await self._renew()
            assert self._token is not None
            return self._token

    def forget(self) -> None:
        """Drop the cached token (the server refused it): the next use asks for a new one."""
        self._token, self._expires_at = None, 0.0

    async def _refresh_token(self) -> str | None:
        if self.store is not None:
            kept = await self.store.get(self.key)
            if isinstance(kept, dict) and kept.get("refresh_token"):
                return str(kept["refresh_token"])
        configured = self.oauth.refresh_token
        return configured.get_secret_value() if configured else None

    async def _renew(self) -> None:
        form: dict[str, str] = {"client_id": self.oauth.client_id}
        if self.oauth.client_secret is not None:
            form["client_secret"] = self.oauth.client_secret.get_secret_value()
        if self.oauth.scope:
            form["scope"] = self.oauth.scope
        if self.oauth.grant == "client_credentials":
            form["grant_type"] = "client_credentials"
        else:
            refresh = await self._refresh_token()
            if not refresh:
                raise TokenRefused(f"{self.key}: no refresh token configured")
            form.update(grant_type="refresh_token", refresh_token=refresh)
        answer = await self._post(form)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenUnavailable(f"{self.key}: the token endpoint sent no access_token")
        lifetime = answer.get("expires_in", DEFAULT_LIFETIME_S)
        try:
            seconds = float(lifetime)
        except (TypeError, ValueError):
            seconds = DEFAULT_LIFETIME_S
        self._token, self._expires_at = token, time.time() + seconds
        self.fetched += 1
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated and self.store is not None \
                and rotated != await self._refresh_token():
            await self.store.put(self.key, {"refresh_token": rotated, "at": time.time()})
            log.info("refresh_token_rotated", key=self.key)

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.post(self.oauth.token_url, data=form) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TokenUnavailable(f"{self.key}: {exc!r}"[:300]) from exc
        if not isinstance(body, dict):
            raise TokenUnavailable(f"{self.key}: HTTP {status}, not a JSON object")
        if status in (400, 401, 403):  # RFC 6749 section 5.2: invalid_grant, invalid_client
            error = f"{body.get('error', status)}: {body.get('error_description', '')}"
            raise TokenRefused(f"{self.key}: {error}"[:300])
        if status != 200:
            raise TokenUnavailable(f"{self.key}: HTTP {status}")
        return body


__all__ = ["TokenRefused", "TokenSource", "TokenUnavailable", "token_namespace"]
