"""JSON answers, encoded by one shared encoder.

Starlette's ``JSONResponse`` calls ``json.dumps`` with its options, which builds
a new encoder for every response; :class:`JSONResponse` here writes the same
bytes (compact, UTF-8, no NaN) with an encoder made once.
"""

from __future__ import annotations

import json
from typing import Any

from starlette import responses

__all__ = ["JSONResponse"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")
