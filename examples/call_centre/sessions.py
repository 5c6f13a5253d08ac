"""Server-side sessions behind an HttpOnly, SameSite=Strict cookie.

The cookie holds only a random session id. A session starts anonymous on the
login page (it carries the login form's CSRF token) and gets a new id and a new
token when an agent logs in, so an id planted before the login is worth
nothing after it. Sessions end after ``idle`` seconds without a request, after
``lifetime`` seconds whatever happens, and at logout. They live in this
process's memory: a restart logs everybody out.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from examples.call_centre.agents import Agent

COOKIE = "call_centre_session"
MAX_SESSIONS = 10_000  # the oldest go first beyond this (anonymous ones are cheap to make)


@dataclass
class Session:
    id: str = field(repr=False)
    csrf_token: str = field(repr=False)
    agent: Agent | None
    started: float
    seen: float


class SessionStore:
    def __init__(
        self,
        *,
        idle: float,
        lifetime: float,
        secure: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.secure = secure
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, agent: Agent | None = None) -> Session:
        now = self._clock()
        self._prune(now)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), agent, now, now)
        self._sessions[session.id] = session
        return session

    def of(self, request: Request) -> Session | None:
        """The live session the request's cookie names; it counts as activity."""
        session_id = request.cookies.get(COOKIE)
        session = self._sessions.get(session_id) if session_id else None
        if session is None or not self.is_live(session):
            return None
        session.seen = self._clock()
        return session

    def is_live(self, session: Session) -> bool:
        """Whether the session still counts (not ended, not idle or old too long)."""
        if self._sessions.get(session.id) is not session:
            return False
        now = self._clock()
        if now - session.seen > self.idle or now - session.started > self.lifetime:
            self.end(session)
            return False
        return True

    def sign_in(self, anonymous: Session | None, agent: Agent) -> Session:
        """A new session for ``agent``, replacing the anonymous one the login form had."""
        if anonymous is not None:
            self.end(anonymous)
        return self.start(agent)

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(self.lifetime),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path="/", secure=self.secure, httponly=True, samesite="strict"
        )

    def _prune(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            expired = now - oldest.started > self.lifetime
            if not expired and len(self._sessions) < MAX_SESSIONS:
                break
            self._sessions.popitem(last=False)
        for session in [s for s in self._sessions.values() if now - s.seen > self.idle]:
            self.end(session)
