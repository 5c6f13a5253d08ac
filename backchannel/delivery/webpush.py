"""Sending one Web Push message (RFC 8030) and classifying what the push service said.

The payload is encrypted to the subscription with pywebpush (RFC 8291,
``aes128gcm``) and signed with the VAPID key the subscription was made for
(RFC 8292). The POST itself is made here, on the app's shared aiohttp session,
rather than by ``WebPusher.send_async``: that call follows redirects (aiohttp's
default), which would carry the request past the push-host allow-list, and it
cannot connect to the address that was checked (DNS rebinding).

The endpoint is outside input (the browser's subscription), so every send
first passes :func:`check_push_endpoint`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from backchannel.delivery.pinned_post import pinned_attempts, post_first_reachable
from backchannel.delivery.retry import parse_retry_after
from backchannel.settings import Settings
from backchannel.url_guard import UnsafeURL, check_outbound_url

log = logging.getLogger(__name__)

# Push services accept at most 4096 bytes of encrypted body (RFC 8030 §7.2).
MAX_BODY_BYTES = 4096
# A VAPID token's lifetime (RFC 8292 §2: at most 24 hours).
VAPID_TOKEN_LIFETIME = 3600
# A token is reused for later messages until this long before its expiry.
VAPID_TOKEN_REUSE_MARGIN = 1800
# At most this many tokens are kept (keys × push-service origins × subjects).
VAPID_TOKENS_KEPT = 1024
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

Outcome = Literal["sent", "gone", "retry", "failed"]


@dataclass(frozen=True)
class PushSubscription:
    endpoint: str
    p256dh: str  # base64url uncompressed P-256 point
    auth: str  # base64url 16-byte secret

    def as_subscription_info(self) -> dict[str, Any]:
        """The ``PushSubscription.toJSON()`` shape pywebpush reads."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class PushResult:
    """What became of one attempt: ``sent``; ``gone`` (the subscription is dead);
    ``retry`` (try again, not before ``retry_after`` seconds if given); ``failed``
    (permanently: refused endpoint, bad subscription, 4xx)."""

    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


def check_push_endpoint(endpoint: str, settings: Settings) -> str:
    """Return ``endpoint`` if a push may be sent to it; :class:`UnsafeURL` otherwise.

    https and a host from ``settings.push_allowed_hosts``; with
    ``settings.push_allow_loopback`` (dev and tests) also http(s) on loopback.
    """
    try:
        host = (urlsplit(endpoint).hostname or "").rstrip(".")
    except ValueError as exc:
        raise UnsafeURL(f"malformed URL: {exc}") from None
    if settings.push_allow_loopback and host in LOOPBACK_HOSTS:
        return check_outbound_url(endpoint, allow_insecure=True)
    return check_outbound_url(
        endpoint, allow_insecure=False, allowed_hosts=settings.push_allowed_hosts
    )


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The message's plaintext: compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def vapid_headers(
    vapid: Vapid, endpoint: str, subject: str, *, now: float | None = None
) -> dict[str, str]:
    """``Authorization: vapid t=<JWT>,k=<key>`` for the endpoint's origin (RFC 8292 §3)."""
    # A fresh claims dict each time: signers fill in and keep what they are given.
    claims: dict[str, str | int] = {
        "aud": push_origin(endpoint),
        "exp": int(time.time() if now is None else now) + VAPID_TOKEN_LIFETIME,
        "sub": subject,
    }
    headers: dict[str, str] = vapid.sign(claims)
    return headers


def push_origin(endpoint: str) -> str:
    """The push service's origin: a VAPID token's audience (RFC 8292 §2)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class VapidTokens:
    """VAPID ``Authorization`` headers, each signed once per key, push-service origin
    and subject and reused for every message to that origin (RFC 8292 §2 allows it)
    until ``VAPID_TOKEN_REUSE_MARGIN`` seconds before it expires; then a new one is
    signed. Keyed by the ``Vapid`` instance: a key loaded anew gets tokens anew."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[tuple[Vapid, str, str], tuple[float, dict[str, str]]] = {}

    def headers(self, vapid: Vapid, endpoint: str, subject: str) -> dict[str, str]:
        now = self._clock()
        key = (vapid, push_origin(endpoint), subject)
        cached = self._tokens.get(key)
        if cached is not None and now < cached[0] - VAPID_TOKEN_REUSE_MARGIN:
            return cached[1]
        headers = vapid_headers(vapid, endpoint, subject, now=now)
        if len(self._tokens) >= VAPID_TOKENS_KEPT:
            self._tokens = {k: v for k, v in self._tokens.items() if now < v[0]}
            if len(self._tokens) >= VAPID_TOKENS_KEPT:
                self._tokens.clear()
        self._tokens[key] = (int(now) + VAPID_TOKEN_LIFETIME, headers)
        return headers

    def forget(self, vapid: Vapid, endpoint: str) -> None:
        """Drop the tokens of ``vapid`` for the endpoint's push service (it refused one)."""
        origin = push_origin(endpoint)
        self._tokens = {
            k: v for k, v in self._tokens.items() if not (k[0] is vapid and k[1] == origin)
        }


async def send_web_push(
    http: aiohttp.ClientSession,
    settings: Settings,
    subscription: PushSubscription,
    payload: dict[str, Any],
    *,
    vapid: Vapid,
    topic: str,
    ttl: int,
    urgency: str = "high",
    tokens: VapidTokens | None = None,
) -> PushResult:
    """Encrypt, sign and POST one message; never raises for delivery problems.

    With ``tokens``, the VAPID token is taken from (and kept in) that cache."""
    try:
        endpoint = check_push_endpoint(subscription.endpoint, settings)
    except UnsafeURL as exc:
        return PushResult("failed", error=f"endpoint refused: {exc}")
    try:
        body = WebPusher(subscription.as_subscription_info()).encode(
            encode_payload(payload), "aes128gcm"
        )["body"]
        auth = (
            tokens.headers(vapid, endpoint, settings.vapid_subject)
            if tokens is not None
            else vapid_headers(vapid, endpoint, settings.vapid_subject)
        )
    except (WebPushException, VapidException, ValueError, TypeError) as exc:
        return PushResult("failed", error=f"cannot encrypt or sign: {exc}")
    if len(body) > MAX_BODY_BYTES:
        return PushResult("failed", error=f"message too large ({len(body)} bytes encrypted)")
    headers = {
        **auth,
        "TTL": str(max(0, ttl)),
        "Urgency": urgency,
        "Topic": topic,
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
    }
    try:
        # One deadline for resolving the host and every connection attempt.
        async with asyncio.timeout(settings.push_timeout):
            attempts = await _connection_attempts(endpoint, settings)
            status, retry_after = await post_first_reachable(http, attempts, headers, body)
    except UnsafeURL as exc:
        return PushResult("failed", error=f"endpoint refused: {exc}")
    except TimeoutError:
        return PushResult("retry", error=f"no answer within {settings.push_timeout} s")
    except aiohttp.ClientError as exc:
        return PushResult("retry", error=f"{type(exc).__name__}: {exc}")
    if status in (401, 403) and tokens is not None:
        tokens.forget(vapid, endpoint)  # the next message to this service is signed anew
    return classify_response(status, retry_after)


def classify_response(status: int, retry_after: str | None) -> PushResult:
    """RFC 8030 §5 answers: 201 (and 200/202) sent; 404/410 the subscription is
    gone; 408/429/5xx retry (honouring Retry-After); any other status fails."""
    if 200 <= status <= 202:
        return PushResult("sent", status)
    if status in (404, 410):
        return PushResult("gone", status, error=f"HTTP {status}")
    if status in (408, 425, 429) or status >= 500:
        return PushResult("retry", status, parse_retry_after(retry_after), f"HTTP {status}")
    return PushResult("failed", status, error=f"HTTP {status}")


async def _connection_attempts(endpoint: str, settings: Settings) -> list[dict[str, Any]]:
    """Request options per address to try: loopback as is (with the development
    setting); public hosts pinned to the addresses just checked."""
    host = (urlsplit(endpoint).hostname or "").rstrip(".")
    if settings.push_allow_loopback and host in LOOPBACK_HOSTS:
        return [{"url": endpoint}]
    return await pinned_attempts(endpoint, allow_insecure=False)
