"""Log lines for operators: one JSON object per line, with secrets masked.

:class:`JsonFormatter` writes ``ts``, ``level``, ``logger``, ``message``, the
``request_id`` of the request being served (set by the middleware in
:data:`REQUEST_ID`), any ``extra=`` fields and the traceback. Both it and
:class:`RedactingFormatter` (the ``text`` format) pass everything through
:func:`redact_text` / :func:`redact_value`, so that a careless log call
cannot leak a credential: values of secret-named keys (``client_secret=…``,
``"auth_req_id": …``), ``Bearer``/``Basic`` credentials, JWTs and passwords
in URLs are replaced by ``[redacted]``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RedactingFormatter",
    "configure_logging",
    "redact_text",
    "redact_value",
]

REDACTED: Final = "[redacted]"

# The id of the request the current task serves (None outside requests).
REQUEST_ID: ContextVar[str | None] = ContextVar("backchannel_request_id", default=None)

# Keys whose values are credentials or one-time identifiers.
SECRET_KEYS: Final = frozenset(
    {
        "access_token",
        "auth_req_id",
        "authorization",
        "client_assertion",
        "client_notification_token",
        "client_secret",
        "code",
        "cookie",
        "enrolment_code",
        "id_token",
        "login_hint_token",
        "metrics_token",
        "password",
        "proxy_authorization",
        "refresh_token",
        "secret",
        "set_cookie",
        "token",
        "user_code",
    }
)
# Structured keys ending so are secret too (``private_key``, ``push_auth_secret``...).
_SECRET_SUFFIXES: Final = ("_secret", "_token", "_password", "_key")

# Keys named in free text, followed by ``=`` or ``:`` and a value (optionally quoted).
_KEYED_VALUE = re.compile(
    r"(?<![A-Za-z0-9_-])(?P<key>"
    + "|".join(sorted((re.escape(k) for k in SECRET_KEYS), key=len, reverse=True))
    + r")(?P<sep>[\"']?\s*[:=]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;)}\]]+)",
    re.IGNORECASE,
)
# A JWS/JWT or JWE: a JSON header ("eyJ") and more segments, or three long base64url segments.
_JWT = re.compile(
    r"(?<![A-Za-z0-9_-])(?:eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"
    r"|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{16,})(?:\.[A-Za-z0-9_-]*)*"
)
_CREDENTIALS = re.compile(r"\b(Bearer|Basic|DPoP|vapid)\s+[A-Za-z0-9._~+/=,:-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")

# Attributes every LogRecord has; anything else came from ``extra=``.
_RECORD_FIELDS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _keyed(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ('"', "'") else ""
    return f"{match['key']}{match['sep']}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """``text`` with credentials, JWTs, secret-named values and URL passwords masked."""
    text = _JWT.sub(REDACTED, text)
    text = _CREDENTIALS.sub(lambda m: f"{m[1]} {REDACTED}", text)
    text = _KEYED_VALUE.sub(_keyed, text)
    return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)


def is_secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def redact_value(key: str, value: Any) -> Any:
    """A JSON-ready copy of ``value`` logged under ``key``, secrets masked."""
    if is_secret_key(key):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value("", v) for v in value]
    return redact_text(str(value))


def _message(record: logging.LogRecord) -> str:
    """The record's message; a call whose arguments do not fit its format is not
    left to ``Handler.handleError``, which would print the raw arguments."""
    try:
        return record.getMessage()
    except (TypeError, ValueError, KeyError):
        return f"{record.msg} (log arguments did not match the format)"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(_message(record)),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in entry:
                entry[key] = redact_value(key, value)
        if record.exc_info:
            entry["exc_info"] = redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactingFormatter(logging.Formatter):
    """The plain-text format (``LOG_FORMAT=text``), secrets masked like the JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord({**record.__dict__, "msg": _message(record), "args": None})
        return redact_text(super().format(copy))


TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at ``level`` to ``stream`` (stderr) as JSON or text."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else RedactingFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
