"""When to try an outbound delivery again: capped exponential back-off with a little
jitter, or the receiver's ``Retry-After`` (RFC 9110 §10.2.3) when that is longer."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempt + 1``: capped exponential back-off with a
    little jitter, or the push service's Retry-After when that is longer."""
    backoff: float = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    backoff *= 1 + random.random() / 10
    return backoff if retry_after is None else max(retry_after, backoff)
