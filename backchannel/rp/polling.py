"""Polling the token endpoint until the user decides (CIBA §7.3, §10.1, §11).

Pacing, as CIBA and the specifications it borrows from require:

- never poll sooner than ``interval`` seconds after the previous poll (§7.3);
- ``slow_down`` adds 5 seconds to the interval, for good (RFC 8628 §3.5);
- a 503 is waited out for its ``Retry-After`` (RFC 9110 §10.2.3); the
  provider's ``Retry-After`` already covers its raised interval, so nothing is
  added to it, and the client's interval becomes at least that long, so that
  its following polls are not early either;
- no poll once ``expires_in`` has passed: the answer could only be
  ``expired_token``, so the client raises :class:`ExpiredToken` itself.

With long polling the poll carries ``Prefer: wait=N`` (RFC 7240). When the
answer carries ``Preference-Applied`` the provider held the poll: the interval
counts from the poll's start, so after a poll held that long the next one
goes out at once. A provider that does not answer with ``Preference-Applied``
is polled the ordinary way, and asked no more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from backchannel.rp.clock import Clock
from backchannel.rp.errors import ExpiredToken, OAuthError

SLOW_DOWN_STEP = 5


@dataclass(frozen=True)
class PollAnswer:
    """One answer of the token endpoint: the token body, or the error; and whether held."""

    tokens: dict[str, Any] | None
    error: OAuthError | None
    held: bool


# Sends one poll asking the provider to hold it up to the given seconds (0: do not ask).
PollOnce = Callable[[int], Awaitable[PollAnswer]]


@dataclass(frozen=True)
class Pacing:
    interval: float
    deadline: float | None  # on the clock's monotonic scale; None: only the provider knows
    long_poll_wait: int  # seconds to ask for; 0 never asks


def _expired() -> ExpiredToken:
    return ExpiredToken("the request expired before the user decided (expires_in has passed)")


async def poll_until_decided(poll_once: PollOnce, pacing: Pacing, clock: Clock) -> dict[str, Any]:
    """The token response body once approved; the error of any other final answer."""
    interval = pacing.interval
    long_poll_wait = pacing.long_poll_wait
    while True:
        began = clock.monotonic()
        ask = long_poll_wait
        if pacing.deadline is not None:
            remaining = pacing.deadline - began
            if remaining <= 0:
                raise _expired()
            ask = min(ask, int(remaining))
        answer = await poll_once(ask)
        if answer.tokens is not None:
            return answer.tokens
        error = answer.error
        assert error is not None
        if ask and not answer.held:
            long_poll_wait = 0
        if error.error == "authorization_pending":
            delay = interval - (clock.monotonic() - began) if answer.held else interval
        elif error.error == "slow_down":
            interval += SLOW_DOWN_STEP
            delay = interval
        elif error.status == 503:
            delay = error.retry_after if error.retry_after is not None else interval
            interval = max(interval, delay)
        else:
            raise error
        delay = max(0.0, delay)
        if pacing.deadline is not None and clock.monotonic() + delay >= pacing.deadline:
            raise _expired()
        if delay:
            await clock.sleep(delay)
