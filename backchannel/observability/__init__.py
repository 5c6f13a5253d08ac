"""What operators watch: Prometheus metrics, request ids, JSON logs without secrets.

- ``metrics``: :class:`Metrics`, one registry per app, and its ``record_*`` calls;
- ``requests``: request ids, request outcomes and the access log line, which
  ``endpoints/gateway.py`` applies to every request;
- ``logging``: the JSON (or text) log format and the secret redactor.
"""

from backchannel.observability.logging import REQUEST_ID, JsonFormatter, configure_logging
from backchannel.observability.metrics import Metrics

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "Metrics",
    "configure_logging",
]
