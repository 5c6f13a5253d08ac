"""One POST to a client's notification endpoint (CIBA §10.2 ping, §10.3 push).

The body is JSON and the request carries ``Authorization: Bearer
<client_notification_token>``. The endpoint's shape is checked again and its
host resolved right before connecting; the connection goes to an address that
was checked (``pinned_post``) and redirects are not followed. Answers:

- 2xx: delivered (any body is ignored);
- 408, 425, 429 and 5xx, timeouts and connection errors: try again later,
  honouring ``Retry-After``;
- a redirect, any other 4xx (401 and 403 included), an endpoint the SSRF
  guard refuses, or a notification token that cannot travel in a header:
  failed for good, never retried.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from backchannel.delivery.pinned_post import pinned_attempts, post_first_reachable
from backchannel.delivery.retry import parse_retry_after
from backchannel.url_guard import UnsafeURL, check_outbound_url

Outcome = Literal["sent", "retry", "failed"]
# RFC 6750 §2.1 b64token: what /bc-authorize accepts as client_notification_token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class NotificationResult:
    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


async def post_notification(
    http: aiohttp.ClientSession,
    endpoint: str,
    bearer: str,
    body: dict[str, Any],
    *,
    seconds: float,
    allow_insecure: bool,
) -> NotificationResult:
    """POST ``body`` to ``endpoint`` within ``seconds``; never raises for delivery problems."""
    try:
        check_outbound_url(endpoint, allow_insecure=allow_insecure)
    except UnsafeURL as exc:
        return NotificationResult("failed", error=f"endpoint refused: {exc}")
    if not _B64TOKEN.fullmatch(bearer):
        # Stored before /bc-authorize refused it: a line break would not even fit in a header.
        return NotificationResult("failed", error="the client_notification_token is malformed")
    headers = {
        "Authorization": f"Bearer {bearer}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        # One deadline for resolving the host and every connection attempt.
        async with asyncio.timeout(seconds):
            attempts = await pinned_attempts(endpoint, allow_insecure=allow_insecure)
            status, retry_after = await post_first_reachable(http, attempts, headers, data)
    except UnsafeURL as exc:
        return NotificationResult("failed", error=f"endpoint refused: {exc}")
    except TimeoutError:
        return NotificationResult("retry", error=f"no answer within {seconds:g} s")
    except aiohttp.ClientError as exc:
        return NotificationResult("retry", error=f"{type(exc).__name__}: {exc}")
    return classify_answer(status, retry_after)


def classify_answer(status: int, retry_after: str | None) -> NotificationResult:
    """What an HTTP status from a notification endpoint means for the delivery."""
    if 200 <= status <= 299:
        return NotificationResult("sent", status)
    if 300 <= status <= 399:
        return NotificationResult("failed", status, error=f"HTTP {status}: redirect not followed")
    if status in (408, 425, 429) or status >= 500:
        return NotificationResult("retry", status, parse_retry_after(retry_after), f"HTTP {status}")
    return NotificationResult("failed", status, error=f"HTTP {status}")
