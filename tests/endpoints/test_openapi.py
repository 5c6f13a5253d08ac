"""The OpenAPI document describes exactly the routes the app serves, and is served itself."""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from backchannel.endpoints.openapi import openapi_document
from backchannel.endpoints.routes import routes
from tests.conftest import ISSUER
from tests.support.route_coverage import (
    undescribed_routes,
    unserved_operations,
)


def test_every_route_the_app_serves_is_described() -> None:
    assert undescribed_routes(routes(), openapi_document()) == []


def test_every_described_operation_is_served() -> None:
    assert unserved_operations(routes(), openapi_document()) == []


def test_a_route_missing_from_the_document_is_reported() -> None:
    async def handler() -> None: ...

    extra: list[BaseRoute] = [
        Route("/token", handler, methods=["GET", "POST"]),
        Route("/undocumented", handler, methods=["POST"]),
        Mount("/elsewhere", app=handler),
    ]
    assert undescribed_routes(extra, openapi_document()) == [
        "GET /token",
        "POST /undocumented",
        "mount /elsewhere",
    ]


def test_a_described_path_the_app_does_not_serve_is_reported() -> None:
    document = openapi_document()
    ghost = {**document, "paths": {**document["paths"], "/ghost": {"post": {}}}}
    assert "POST /ghost" in unserved_operations(routes(), ghost)
    token_only = [r for r in routes() if getattr(r, "path", None) != "/userinfo"]
    assert {"GET /userinfo", "POST /userinfo"} <= set(unserved_operations(token_only, document))


def test_every_operation_has_an_id_and_documents_its_errors() -> None:
    ids = []
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            statuses = set(operation["responses"])
            assert any(s.startswith("2") for s in statuses), f"{method} {path}: no success"
            if operation.get("requestBody"):
                assert "400" in statuses or "401" in statuses, f"{method} {path}: no 4xx"
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", ["/bc-authorize", "/token", "/device/decision", "/receipts"])
def test_endpoints_that_need_the_database_document_503_with_retry_after(path: str) -> None:
    response = openapi_document()["paths"][path]["post"]["responses"]["503"]
    assert response["$ref"] == "#/components/responses/TemporarilyUnavailable"
    unavailable = openapi_document()["components"]["responses"]["TemporarilyUnavailable"]
    assert "Retry-After" in unavailable["headers"]


async def test_openapi_json_serves_the_document_naming_the_issuer(http: httpx.AsyncClient) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    served = response.json()
    assert served["servers"] == [{"url": ISSUER}]
    assert {k: v for k, v in served.items() if k != "servers"} == openapi_document()
    assert served["openapi"].startswith("3.1.")
