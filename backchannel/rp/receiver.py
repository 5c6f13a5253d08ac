"""The client notification endpoint for ping (CIBA §10.2) and push (§10.3) clients.

The provider POSTs JSON with ``Authorization: Bearer <client_notification_token>``,
the token the client sent with that request (§7.1). The receiver answers:

- 204 once the notification is handed to the callback;
- 401 (with ``WWW-Authenticate: Bearer``) when the bearer token is missing or
  is not the one sent for that ``auth_req_id`` (compared in constant time);
- 400 when the body is not a JSON object with an ``auth_req_id``, or a pushed
  token response does not verify; 413 when it is larger than ``MAX_BODY_BYTES``.

A ping is ``{"auth_req_id"}``: the client then calls :meth:`CibaClient.wait`.
A push carries the token response and the ``auth_req_id`` (§10.3.1), whose ID
token must verify with ``at_hash``, the ``auth_req_id`` claim and, with a
refresh token, ``rt_hash``; or an error (§12) ``{"auth_req_id", "error",
"error_description"}``. The framework adapters, for Starlette and aiohttp, only
read the request and write the answer; Starlette is imported when its adapter
is made, so the library itself needs only aiohttp.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from backchannel.rp.errors import InvalidIdToken, OAuthError, ProtocolError
from backchannel.rp.tokens import TokenResponse

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from backchannel.rp.client import CibaClient

MAX_BODY_BYTES = 256 * 1024
CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Compared against when no token is known for an auth_req_id, so that both cases take as long.
_NO_TOKEN = b"\x00" * 32


@dataclass(frozen=True)
class PingNotification:
    """The user decided (CIBA §10.2): collect the result with :meth:`CibaClient.wait`."""

    auth_req_id: str


@dataclass(frozen=True)
class PushedTokens:
    """The tokens, pushed and verified (CIBA §10.3.1)."""

    auth_req_id: str
    tokens: TokenResponse


@dataclass(frozen=True)
class PushedError:
    """The request ended without tokens (CIBA §12): ``error`` is an AccessDenied,
    ExpiredToken or TransactionFailed (or another OAuthError)."""

    auth_req_id: str
    error: OAuthError


Notification = PingNotification | PushedTokens | PushedError
NotificationCallback = Callable[[Notification], Awaitable[None]]
TokenLookup = Callable[[str], Awaitable[str | None]]
Mode = Literal["ping", "push"]


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class NotificationReceiver:
    """Checks and decodes a notification, framework-neutral; ``handle`` gives the status.

    ``token_lookup`` finds the notification token sent for an ``auth_req_id``; by
    default the client's own memory of the requests it started (a relying party
    running several processes stores them somewhere shared and looks them up there).
    """

    def __init__(
        self,
        client: CibaClient,
        callback: NotificationCallback,
        *,
        mode: Mode,
        token_lookup: TokenLookup | None = None,
    ) -> None:
        if mode not in ("ping", "push"):
            raise ValueError("mode must be 'ping' or 'push'")
        self.client = client
        self.callback = callback
        self.mode = mode
        self._lookup = token_lookup or self._remembered_token

    async def _remembered_token(self, auth_req_id: str) -> str | None:
        return self.client.notification_token_for(auth_req_id)

    async def handle(self, authorization: str | None, body: bytes | None) -> int:
        """The HTTP status to answer; ``body`` None means it was too large."""
        try:
            notification = await self._read(authorization, body)
        except _Refused as refused:
            return refused.status
        await self.callback(notification)
        if self.mode == "push":
            self.client.forget(notification.auth_req_id)
        return 204

    async def _read(self, authorization: str | None, body: bytes | None) -> Notification:
        if body is None:
            raise _Refused(413)
        try:
            message = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400) from None
        if not isinstance(message, dict):
            raise _Refused(400)
        auth_req_id = message.get("auth_req_id")
        if not isinstance(auth_req_id, str) or not auth_req_id:
            raise _Refused(400)
        await self._check_bearer(authorization, auth_req_id)
        if self.mode == "ping":
            return PingNotification(auth_req_id)
        return await self._pushed(message, auth_req_id)

    async def _check_bearer(self, authorization: str | None, auth_req_id: str) -> None:
        scheme, _, presented = (authorization or "").strip().partition(" ")
        expected = await self._lookup(auth_req_id)
        matches = hmac.compare_digest(
            presented.strip().encode(), expected.encode() if expected else _NO_TOKEN
        )
        if scheme.lower() != "bearer" or expected is None or not matches:
            raise _Refused(401)

    async def _pushed(self, message: dict[str, Any], auth_req_id: str) -> Notification:
        if "error" in message:
            error, description = message["error"], message.get("error_description")
            if not isinstance(error, str) or not error or "access_token" in message:
                raise _Refused(400)
            return PushedError(
                auth_req_id,
                OAuthError.from_code(error, description if isinstance(description, str) else None),
            )
        try:
            tokens = await self.client.verified_push(message, auth_req_id)
        except (ProtocolError, InvalidIdToken):
            raise _Refused(400) from None
        return PushedTokens(auth_req_id, tokens)


async def _read_limited(chunks: AsyncIterator[bytes]) -> bytes | None:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _headers(status: int) -> dict[str, str]:
    return dict(CHALLENGE) if status == 401 else {}


def starlette_notification_endpoint(
    client: CibaClient,
    callback: NotificationCallback,
    *,
    mode: Mode,
    token_lookup: TokenLookup | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint for ``Route(path, endpoint, methods=["POST"])``."""
    from starlette.responses import Response

    receiver = NotificationReceiver(client, callback, mode=mode, token_lookup=token_lookup)

    async def endpoint(request: Request) -> Response:
        body = await _read_limited(request.stream())
        status = await receiver.handle(request.headers.get("authorization"), body)
        return Response(status_code=status, headers=_headers(status))

    return endpoint


def aiohttp_notification_handler(
    client: CibaClient,
    callback: NotificationCallback,
    *,
    mode: Mode,
    token_lookup: TokenLookup | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler for ``app.router.add_post(path, handler)``."""
    receiver = NotificationReceiver(client, callback, mode=mode, token_lookup=token_lookup)

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await _read_limited(request.content.iter_chunked(65536))
        status = await receiver.handle(request.headers.get("Authorization"), body)
        return web.Response(status=status, headers=_headers(status))

    return handler
