"""What operators watch: Prometheus metrics, request ids, JSON logs without secrets.

- ``metrics``: :class:`Metrics`, one registry per app, and its ``record_*`` calls;
- ``middleware``: the ASGI middleware that assigns request ids and counts requests;
- ``logging``: the JSON (or text) log format and the secret redactor.
"""

from backchannel.observability.logging import REQUEST_ID, JsonFormatter, configure_logging
from backchannel.observability.metrics import Metrics
from backchannel.observability.middleware import ObservedStarlette, RequestObservability

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "Metrics",
    "ObservedStarlette",
    "RequestObservability",
    "configure_logging",
]
