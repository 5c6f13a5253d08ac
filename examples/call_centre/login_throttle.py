"""Wrong passwords are limited per login name: after a few, the name is locked a while.

A locked name is refused before its password is checked (no argon2 run, the same
answer whether the password is right or wrong), so guessing cannot go on at the
speed of the hash. The count is kept in this process's memory, as the sessions are.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 15 * 60


class LoginThrottle:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        lock: float = LOCK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window
        self._lock = lock
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked_for(self, login: str) -> int:
        """Seconds (rounded up) until ``login`` may try again; 0 if it may now."""
        until = self._locked_until.get(_key(login))
        if until is None:
            return 0
        left = until - self._clock()
        if left <= 0:
            del self._locked_until[_key(login)]
            return 0
        return int(left) + (left % 1 > 0)

    def failed(self, login: str) -> None:
        """Count a wrong password; the failure that reaches the limit locks the name."""
        key, now = _key(login), self._clock()
        recent = [t for t in self._failures.get(key, ()) if now - t < self._window]
        recent.append(now)
        if len(recent) >= self._max_failures:
            self._locked_until[key] = now + self._lock
            recent = []
        self._failures[key] = recent
        self._prune(now)

    def succeeded(self, login: str) -> None:
        self._failures.pop(_key(login), None)

    def _prune(self, now: float) -> None:
        stale = [k for k, ts in self._failures.items() if not ts or now - ts[-1] >= self._window]
        for key in stale:
            del self._failures[key]


def _key(login: str) -> str:
    return login.strip().lower()[:64]
