"""Every verification attempt of this panel, and a live feed of their changes.

An attempt is immutable; each change replaces it in the book, which hands the
new version to every open feed of the agent it belongs to (the page's event
stream). The book is kept in memory, newest first, up to ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from examples.call_centre.caller import CallerId

MAX_ATTEMPTS = 1000
LISTED = 50  # the attempts a page lists


class Status(StrEnum):
    WAITING = "waiting"  # the caller's phone shows the request
    VERIFIED = "verified"  # approved: the identity is known
    DENIED = "denied"  # the caller pressed Deny
    NOT_ME = "not_me"  # the caller says it wasn't them
    EXPIRED = "expired"  # nobody answered in time
    NO_MATCH = "no_match"  # the provider knows nobody by that email, phone or account
    REFUSED = "refused"  # the provider would not prompt the caller (policy, too many prompts)
    FAILED = "failed"  # something broke: the provider unreachable, an answer refused

    @property
    def final(self) -> bool:
        return self is not Status.WAITING


@dataclass(frozen=True)
class Identity:
    """Who approved, from the verified ID token (``sub``, ``auth_time``, ``acr``) and
    the userinfo answer for the same subject (``name``)."""

    subject: str
    name: str | None
    verified_at: datetime
    acr: str | None


@dataclass(frozen=True)
class Attempt:
    id: str
    agent: str  # the agent's login name
    caller: CallerId
    reason: str  # a key of binding.REASONS
    code: str
    binding_message: str
    started_at: datetime
    status: Status = Status.WAITING
    expires_at: datetime | None = None
    detail: str | None = None  # the provider's words, for refused and failed attempts
    identity: Identity | None = None
    ended_at: datetime | None = None
    done_at: datetime | None = None  # when the agent confirmed the request carried out


class AttemptBook:
    def __init__(self) -> None:
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()
        self._feeds: dict[asyncio.Queue[Attempt | None], str] = {}
        self._closed = False

    def add(self, attempt: Attempt) -> None:
        self._attempts[attempt.id] = attempt
        self._attempts.move_to_end(attempt.id, last=False)
        while len(self._attempts) > MAX_ATTEMPTS:
            self._attempts.popitem(last=True)
        self._publish(attempt)

    def update(self, attempt_id: str, **changes: Any) -> Attempt | None:
        """Replace the attempt with ``changes`` applied; None if it is gone."""
        current = self._attempts.get(attempt_id)
        if current is None:
            return None
        changed = dataclasses.replace(current, **changes)
        self._attempts[attempt_id] = changed
        self._publish(changed)
        return changed

    def get(self, attempt_id: str, agent: str) -> Attempt | None:
        """The attempt, if it is ``agent``'s (agents see only their own)."""
        attempt = self._attempts.get(attempt_id)
        return attempt if attempt is not None and attempt.agent == agent else None

    def of_agent(self, agent: str, limit: int = LISTED) -> list[Attempt]:
        """The agent's attempts, newest first."""
        mine = (a for a in self._attempts.values() if a.agent == agent)
        return [a for _, a in zip(range(limit), mine, strict=False)]

    @contextlib.contextmanager
    def feed(self, agent: str) -> Iterator[asyncio.Queue[Attempt | None]]:
        """A queue of the agent's attempts as they change; None once the book closes."""
        queue: asyncio.Queue[Attempt | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        self._feeds[queue] = agent
        try:
            yield queue
        finally:
            del self._feeds[queue]

    def close(self) -> None:
        """End every feed (the panel is stopping)."""
        self._closed = True
        for queue in self._feeds:
            queue.put_nowait(None)

    def _publish(self, attempt: Attempt) -> None:
        for queue, agent in self._feeds.items():
            if agent == attempt.agent:
                queue.put_nowait(attempt)
