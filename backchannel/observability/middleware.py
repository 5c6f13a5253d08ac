"""Request ids, request counts and durations, as a pure ASGI middleware.

Every HTTP request gets an id: the caller's ``X-Request-ID`` when it is sane
(1–64 characters of ``[A-Za-z0-9._-]``), else a fresh random one. The id is
returned in ``X-Request-ID`` and set in :data:`REQUEST_ID` for the log lines
written while the request is served. When the response ends, the request is
counted by route template (the matched route's path, ``unmatched`` when no
route matched), status class and outcome: the OAuth error code that
``errors.render_oauth_error`` stored in ``request.state.oauth_error``, else
``ok``, ``client_error`` or ``server_error``.

:class:`ObservedStarlette` installs the middleware outside Starlette's own
``ServerErrorMiddleware``, so that an unexpected error's 500 answer carries
the id too and its log line has it.

With ``BACKCHANNEL_ACCESS_LOG`` on, each request also gets one line on the
``backchannel.access`` logger: client address, method, path (never the query
string), status and duration, with the request id. Health probes are logged
at DEBUG, so that load balancers polling them do not fill the log.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Collection
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backchannel.observability.logging import REQUEST_ID
from backchannel.observability.metrics import Metrics

__all__ = ["REQUEST_ID_HEADER", "ObservedStarlette", "RequestObservability", "new_request_id"]

access_log = logging.getLogger("backchannel.access")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def new_request_id() -> str:
    """A fresh request id: 16 hex digits (64 random bits)."""
    # Correlation only, not a secret: a fast PRNG is enough.
    return f"{random.getrandbits(64):016x}"


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``X-Request-ID`` if it is sane, else ``None``."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def outcome_of(status: int, scope: Scope) -> str:
    """The OAuth error code the response carries, or what its status says."""
    state = scope.get("state")
    code = state.get("oauth_error") if state is not None else None
    if code is not None:
        return str(code)
    if status >= 500:
        return "server_error"
    return "client_error" if status >= 400 else "ok"


def route_template(scope: Scope) -> str:
    """The matched route's path (``/token``, ``/authenticator``), or ``unmatched``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObservability:
    """Assigns request ids and records every HTTP request in :class:`Metrics`."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        log_requests: bool = False,
        quiet_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        outcome: str | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not status:
                status, outcome = 500, "server_error"
            raise
        except BaseException:  # cancelled: the client went away, or shutdown
            if not status:
                outcome = "cancelled"
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record_request(
                route_template(scope),
                _STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "none",
                outcome or outcome_of(status, scope),
                seconds,
            )
            if self.log_requests:
                self._log(scope, status, seconds)
            REQUEST_ID.reset(token)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        path: str = scope["path"]
        level = logging.DEBUG if path in self.quiet_paths else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        client = scope.get("client")
        address = client[0] if client else "-"
        method: str = scope["method"]
        answered = str(status) if status else "-"  # "-": no answer (client gone, shutdown)
        milliseconds = round(seconds * 1000, 1)
        access_log.log(
            level,
            "%s %s %s %s %.1f ms",
            address,
            method,
            path,
            answered,
            milliseconds,
            extra={
                "client": address,
                "method": method,
                "path": path,
                "status": status or None,
                "duration_ms": milliseconds,
            },
        )


class ObservedStarlette(Starlette):
    """Starlette with :class:`RequestObservability` outermost, around even the 500 handler."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        log_requests: bool = False,
        quiet_paths: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        self.metrics = metrics
        self.log_requests = log_requests
        self.quiet_paths = quiet_paths
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestObservability(
            super().build_middleware_stack(),
            self.metrics,
            log_requests=self.log_requests,
            quiet_paths=self.quiet_paths,
        )
