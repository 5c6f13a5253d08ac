"""The OpenAPI document describes exactly the routes the app serves, and is served itself."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from backchannel.endpoints.openapi import openapi_document
from backchannel.endpoints.routes import routes
from tests.conftest import ISSUER

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Described here, served once the branch that adds them is merged: they may be unserved.
NOT_YET_SERVED = frozenset({"/healthz", "/readyz"})


def described_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def undescribed_routes(app_routes: list[BaseRoute], document: dict[str, Any]) -> list[str]:
    """Every route method (HEAD aside, it follows GET) and mount the document lacks."""
    described = described_operations(document)
    missing = []
    for route in app_routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                if (route.path, method) not in described:
                    missing.append(f"{method} {route.path}")
        elif isinstance(route, Mount):
            if not any(path.startswith(route.path + "/") for path, _ in described):
                missing.append(f"mount {route.path}")
        else:
            missing.append(f"unknown kind of route {route!r}")
    return missing


def _sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "index.html", path)


def unserved_operations(app_routes: list[BaseRoute], document: dict[str, Any]) -> list[str]:
    """Every described operation no route answers."""
    unserved = []
    for path, method in sorted(described_operations(document)):
        concrete = _sample(path)
        served = False
        for route in app_routes:
            if isinstance(route, Route) and route.path_regex.fullmatch(concrete):
                served = method in (route.methods or set())
            elif isinstance(route, Mount) and concrete.startswith(route.path + "/"):
                served = method in ("GET", "HEAD")
            else:
                continue
            break
        if not served:
            unserved.append(f"{method} {path}")
    return unserved


def test_every_route_the_app_serves_is_described() -> None:
    assert undescribed_routes(routes(), openapi_document()) == []


def test_every_described_operation_is_served() -> None:
    unserved = unserved_operations(routes(), openapi_document())
    pending = {f"GET {path}" for path in NOT_YET_SERVED}
    assert [op for op in unserved if op not in pending] == []


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
