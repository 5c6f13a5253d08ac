"""Request ids, request outcomes and the access log line, for the request gateway.

Every HTTP request gets an id: the caller's ``X-Request-ID`` when it is sane
(1–64 characters of ``[A-Za-z0-9._-]``), else a fresh random one. The id is
returned in ``X-Request-ID`` and set in :data:`REQUEST_ID` for the log lines
written while the request is served. When the response ends, the request is
counted by route template (the matched route's path, ``unmatched`` when no
route matched), status class and outcome: the OAuth error code that
``errors.render_oauth_error`` stored in ``request.state.oauth_error``, else
``ok``, ``client_error`` or ``server_error``.

``endpoints/gateway.py`` applies these around every request, outside the
error answers, so that an unexpected error's 500 answer carries the id too and
its log line has it.

With ``BACKCHANNEL_ACCESS_LOG`` on, each request also gets one line on the
``backchannel.access`` logger: client address, method, path (never the query
string), status and duration, with the request id. Health probes are logged
at DEBUG, so that load balancers polling them do not fill the log.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Collection

from starlette.types import Scope

__all__ = [
    "REQUEST_ID_HEADER",
    "log_request",
    "new_request_id",
    "outcome_of",
    "route_template",
    "sane_request_id",
]

access_log = logging.getLogger("backchannel.access")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def new_request_id() -> str:
    """A fresh request id: 16 hex digits (64 random bits)."""
    # Correlation only, not a secret: a fast PRNG is enough.
    return f"{random.getrandbits(64):016x}"


def sane_request_id(value: bytes) -> str | None:
    """A caller's ``X-Request-ID`` value if it is sane, else ``None``."""
    return value.decode("ascii") if _SANE_ID.fullmatch(value) else None


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


def log_request(scope: Scope, status: int, seconds: float, quiet_paths: Collection[str]) -> None:
    """The access log line of a finished request (DEBUG for ``quiet_paths``)."""
    path: str = scope["path"]
    level = logging.DEBUG if path in quiet_paths else logging.INFO
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
