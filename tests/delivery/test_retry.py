"""Back-off and Retry-After for outbound deliveries (Web Push, client notifications)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from backchannel.delivery.retry import BACKOFF_CAP, parse_retry_after, retry_delay


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_back_off_grows_is_capped_and_yields_to_a_longer_retry_after() -> None:
    delays = [retry_delay(attempt, None) for attempt in range(1, 12)]
    assert 1 <= delays[0] < 1.2 and 2 <= delays[1] < 2.3
    assert all(a <= b * 1.1 for a, b in itertools.pairwise(delays))
    assert max(delays) <= BACKOFF_CAP * 1.1
    assert retry_delay(1, 30.0) == 30.0
    assert retry_delay(6, 1.0) >= 32
