"""The requests a client started and has not finished with: their pacing, deadline and
notification token (what ``wait`` and the notification receiver need to know)."""

from __future__ import annotations

from dataclasses import dataclass

from backchannel.rp.authentication_request import AuthenticationStarted
from backchannel.rp.clock import Clock

# Entries are dropped this long after their request expired (a late ping may still come).
KEEP_AFTER_EXPIRY = 60.0


@dataclass(frozen=True)
class Pending:
    started: AuthenticationStarted
    deadline: float  # monotonic: when expires_in runs out
    notification_token: str | None


class PendingRequests:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, Pending] = {}

    def add(self, started: AuthenticationStarted, notification_token: str | None) -> Pending:
        now = self._clock.monotonic()
        for auth_req_id, entry in list(self._entries.items()):
            if entry.deadline + KEEP_AFTER_EXPIRY < now:
                del self._entries[auth_req_id]
        entry = Pending(started, now + started.expires_in, notification_token)
        self._entries[started.auth_req_id] = entry
        return entry

    def get(self, auth_req_id: str) -> Pending | None:
        return self._entries.get(auth_req_id)

    def forget(self, auth_req_id: str) -> None:
        self._entries.pop(auth_req_id, None)
