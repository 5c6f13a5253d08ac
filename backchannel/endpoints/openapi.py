"""``GET /openapi.json``: the OpenAPI 3.1 description of every endpoint.

The document is package data (``backchannel/endpoints/openapi.json``), the contract the
test suite holds the app to (tests/endpoints/test_openapi.py, tests/contract/).
It is served with ``servers`` naming the configured issuer, so tools pointed at
it call this server.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backchannel.endpoints.request_context import services_of

OPENAPI_PATH = "/openapi.json"
DOCUMENT_CACHE = "public, max-age=300"


@functools.cache
def _shipped_text() -> str:
    package = resources.files(__package__ or "backchannel.endpoints")
    return package.joinpath("openapi.json").read_text("utf-8")


def openapi_document() -> dict[str, Any]:
    """The document as shipped, without ``servers``: a fresh copy on each call."""
    document: dict[str, Any] = json.loads(_shipped_text())
    return document


@functools.cache
def _served(issuer: str) -> bytes:
    document = {**openapi_document(), "servers": [{"url": issuer}]}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def openapi(request: Request) -> Response:
    return Response(
        _served(services_of(request).settings.issuer),
        media_type="application/json",
        headers={"Cache-Control": DOCUMENT_CACHE},
    )
