"""A local Web Push service (RFC 8030) on 127.0.0.1, and subscriptions to it.

It does what a real push service checks: ``POST /push/<token>`` must carry
``Authorization: vapid t=<JWT>,k=<key>`` (RFC 8292: an ES256 JWT verified
with ``k``, ``aud`` the service's origin, ``exp`` in the future and at most a
day away, ``sub`` a mailto: or https: URL), ``Content-Encoding: aes128gcm``,
``Content-Type: application/octet-stream`` and a ``TTL``. The body is decrypted
with the subscription's private key and auth secret (RFC 8291), which the test
holds, so a test sees exactly what a phone would. A request failing a check is
answered 400/401/403/415 and listed in ``errors``.

Each subscription (token) has a behaviour:
- ``normal``: 201;
- ``gone``: 410 (the subscription expired or was unsubscribed);
- ``busy``: 503 with ``Retry-After`` the first time, then 201;
- ``slow``: the first request sleeps past the sender's timeout, then 201;
- ``redirect``: 307 to another token of this service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import http_ece
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from backchannel.oauth.secrets import new_secret


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TestSubscription:
    """A browser's push subscription whose private half the test keeps."""

    __test__ = False  # not a pytest class

    token: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    behaviour: str = "normal"
    # The applicationServerKey the subscription was made with; None accepts any key.
    server_key: str | None = None
    retry_after: str = "1"
    slow_seconds: float = 3.0

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url(point)

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    def to_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()``."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class ReceivedPush:
    """A message the service accepted (201), as the phone would get it."""

    token: str
    at: float  # time.monotonic()
    ttl: int
    urgency: str | None
    topic: str | None
    payload: dict[str, Any]
    vapid_key: str  # the k= of the Authorization header
    vapid_claims: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    token: str
    at: float
    status: int | str  # HTTP status answered, or "timeout" for a slow request


@dataclass
class LocalPushService:
    origin: str = ""
    subscriptions: dict[str, TestSubscription] = field(default_factory=dict)
    received: list[ReceivedPush] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: dict[str, int] = field(default_factory=dict)

    def subscribe(self, behaviour: str = "normal", **options: Any) -> TestSubscription:
        """A new subscription (P-256 key pair, 16-byte auth secret) to this service."""
        token = new_secret(16)
        subscription = TestSubscription(
            token=token,
            endpoint=f"{self.origin}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
            behaviour=behaviour,
            **options,
        )
        self.subscriptions[token] = subscription
        return subscription

    def received_by(self, subscription: TestSubscription) -> list[ReceivedPush]:
        return [m for m in self.received if m.token == subscription.token]

    def attempts_at(self, subscription: TestSubscription) -> list[Attempt]:
        return [a for a in self.attempts if a.token == subscription.token]

    async def wait_until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``condition()`` holds after some request; AssertionError after ``within``."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(condition), within)
            except TimeoutError:
                raise AssertionError(
                    f"push service: condition not met within {within} s; "
                    f"received {len(self.received)}, attempts {self.attempts}, "
                    f"errors {self.errors}"
                ) from None

    async def _record(self, attempt: Attempt, message: ReceivedPush | None = None) -> None:
        async with self._changed:
            self.attempts.append(attempt)
            if message is not None:
                self.received.append(message)
            self._changed.notify_all()

    async def _refuse(self, token: str, status: int, problem: str) -> web.Response:
        self.errors.append(f"{token}: {problem}")
        await self._record(Attempt(token, time.monotonic(), status))
        return web.Response(status=status, text=problem)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        now = time.monotonic()
        subscription = self.subscriptions.get(token)
        if subscription is None:
            return await self._refuse(token, 404, "no such subscription")
        seen = self._seen[token] = self._seen.get(token, 0) + 1
        if subscription.behaviour == "gone":
            await self._record(Attempt(token, now, 410))
            return web.Response(status=410)
        if subscription.behaviour == "redirect":
            await self._record(Attempt(token, now, 307))
            target = next(iter(t for t in self.subscriptions if t != token), token)
            raise web.HTTPTemporaryRedirect(f"{self.origin}/push/{target}")
        vapid = self._verify_vapid(request.headers.get("Authorization", ""), subscription)
        if isinstance(vapid, str):
            return await self._refuse(token, 401 if "key" not in vapid else 403, vapid)
        key, claims = vapid
        if request.headers.get("Content-Encoding") != "aes128gcm":
            return await self._refuse(token, 415, "Content-Encoding must be aes128gcm")
        if request.content_type != "application/octet-stream":
            return await self._refuse(token, 415, "Content-Type must be application/octet-stream")
        ttl = request.headers.get("TTL", "")
        if not ttl.isdigit():
            return await self._refuse(token, 400, "TTL header missing or invalid")
        body = await request.read()
        if len(body) > 4096:
            return await self._refuse(token, 413, "payload too large")
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth_secret,
                version="aes128gcm",
            )
            payload = json.loads(plaintext.decode("utf-8"))
        except Exception as exc:
            return await self._refuse(token, 400, f"cannot decrypt: {exc!r}")
        if subscription.behaviour == "busy" and seen == 1:
            await self._record(Attempt(token, now, 503))
            return web.Response(status=503, headers={"Retry-After": subscription.retry_after})
        if subscription.behaviour == "slow" and seen == 1:
            await self._record(Attempt(token, now, "timeout"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), subscription.slow_seconds)
            return web.Response(status=201)
        message = ReceivedPush(
            token=token,
            at=now,
            ttl=int(ttl),
            urgency=request.headers.get("Urgency"),
            topic=request.headers.get("Topic"),
            payload=payload,
            vapid_key=key,
            vapid_claims=claims,
        )
        await self._record(Attempt(token, now, 201), message)
        return web.Response(status=201, headers={"Location": f"{self.origin}/message/{seen}"})

    def _verify_vapid(
        self, header: str, subscription: TestSubscription
    ) -> tuple[str, dict[str, Any]] | str:
        """(k, claims) of a valid RFC 8292 Authorization header, or what is wrong with it."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return "Authorization must use the vapid scheme"
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, k = parts.get("t"), parts.get("k")
        if not token or not k:
            return "vapid Authorization needs t and k"
        try:
            point = b64url_decode(k)
            if len(point) != 65 or point[0] != 4:
                return "k is not an uncompressed P-256 point"
            key = ECKey.import_key(
                {"kty": "EC", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:])}
            )
            decoded = jwt.decode(token, key, algorithms=["ES256"])
        except (JoseError, ValueError) as exc:
            return f"VAPID JWT does not verify: {exc!r}"
        claims = dict(decoded.claims)
        now = time.time()
        if claims.get("aud") != self.origin:
            return f"aud {claims.get('aud')!r} is not {self.origin!r}"
        if not isinstance(claims.get("exp"), int) or not now < claims["exp"] <= now + 86400:
            return f"exp {claims.get('exp')!r} not within the next 24 hours"
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            return f"sub {sub!r} is not a mailto: or https: URL"
        if subscription.server_key is not None and k != subscription.server_key:
            return "signed with another key than the subscription's applicationServerKey"
        return k, claims


@contextlib.asynccontextmanager
async def run_push_service() -> AsyncIterator[LocalPushService]:
    """Serve a :class:`LocalPushService` on 127.0.0.1 (a free port) while in the block."""
    service = LocalPushService()
    app = web.Application()
    app.router.add_post("/push/{token}", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    service.origin = f"http://{host}:{port}"
    try:
        yield service
    finally:
        service._closing.set()
        await runner.cleanup()


async def insert_device(
    conn: asyncpg.Connection,
    user_id: int,
    subscription: TestSubscription | None,
    *,
    name: str = "Test phone",
    vapid_kid: str | None = None,
) -> str:
    """A device row as enrolment would leave it; its device_id."""
    device_id = "dev-" + secrets.token_hex(8)
    jwk = ECKey.generate_key("P-256", private=False).as_dict(private=False)
    await conn.execute(
        """INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint,
                                push_endpoint, push_p256dh, push_auth, vapid_kid)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        device_id,
        user_id,
        name,
        jwk,
        secrets.token_urlsafe(32),
        subscription.endpoint if subscription else None,
        subscription.p256dh if subscription else None,
        subscription.auth if subscription else None,
        vapid_kid,
    )
    return device_id
