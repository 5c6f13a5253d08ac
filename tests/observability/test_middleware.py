"""Request ids and request counting (observability/requests.py, endpoints/gateway.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from backchannel.endpoints.gateway import RequestGateway, ServiceApp
from backchannel.errors import (
    InvalidGrant,
    OAuthError,
    render_oauth_error,
    render_unexpected_error,
)
from backchannel.observability.logging import REQUEST_ID
from backchannel.observability.metrics import Metrics

BASE = "http://127.0.0.1:8000"


async def echo_request_id(request: Request) -> Response:
    return JSONResponse({"request_id": REQUEST_ID.get(), "item": request.path_params.get("id")})


async def refuse(request: Request) -> Response:
    raise InvalidGrant("no such grant")


async def crash(request: Request) -> Response:
    raise RuntimeError("boom")


def observed_app(metrics: Metrics, direct_paths: tuple[str, ...] = ()) -> ServiceApp:
    return ServiceApp(
        metrics,
        direct_paths=direct_paths,
        routes=[
            Route("/items/{id}", echo_request_id, methods=["GET"]),
            Route("/refuse", refuse, methods=["POST"]),
            Route("/crash", crash, methods=["GET"]),
        ],
        exception_handlers={OAuthError: render_oauth_error, Exception: render_unexpected_error},
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(process=False)


# Every test runs twice: routes served by the router, and called directly by the gateway.
@pytest.fixture(params=[(), ("/refuse", "/crash")], ids=["routed", "direct"])
async def http(
    metrics: Metrics, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    app = observed_app(metrics, request.param)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def requests_counted(metrics: Metrics, route: str, status: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "backchannel_http_requests_total", {"route": route, "status": status, "outcome": outcome}
    )
    return value or 0.0


async def test_a_request_without_an_id_gets_a_fresh_one_in_the_response_and_the_context(
    http: httpx.AsyncClient,
) -> None:
    first = await http.get("/items/1")
    second = await http.get("/items/1")
    request_id = first.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)
    assert first.json()["request_id"] == request_id
    assert second.headers["x-request-id"] != request_id
    assert REQUEST_ID.get() is None


async def test_a_sane_incoming_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/items/1", headers={"X-Request-ID": "lb-7f3a.2_x"})
    assert response.headers["x-request-id"] == "lb-7f3a.2_x"
    assert response.json()["request_id"] == "lb-7f3a.2_x"


@pytest.mark.parametrize(
    "incoming", [b"a" * 65, b"has space", b"semi;colon", b"<script>", b"", "ünï".encode()]
)
async def test_an_unsafe_incoming_request_id_is_replaced(
    http: httpx.AsyncClient, incoming: bytes
) -> None:
    response = await http.get("/items/1", headers=[(b"X-Request-ID", incoming)])
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


async def test_requests_are_counted_by_route_template_not_raw_path(
    http: httpx.AsyncClient, metrics: Metrics
) -> None:
    for item in ("1", "2", "3"):
        await http.get(f"/items/{item}")
    await http.get("/nowhere/at/all")
    assert requests_counted(metrics, "/items/{id}", "2xx", "ok") == 3
    assert requests_counted(metrics, "unmatched", "4xx", "client_error") == 1
    duration = metrics.registry.get_sample_value(
        "backchannel_http_request_duration_seconds_count", {"route": "/items/{id}"}
    )
    assert duration == 3
    exposition = metrics.exposition().decode()
    assert "/items/1" not in exposition and "/nowhere" not in exposition


async def test_an_oauth_error_is_counted_by_its_error_code(
    http: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await http.post("/refuse")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "x-request-id" in response.headers
    assert requests_counted(metrics, "/refuse", "4xx", "invalid_grant") == 1


async def test_a_method_not_allowed_is_counted_under_the_route(
    http: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await http.get("/refuse")
    assert response.status_code == 405
    assert requests_counted(metrics, "/refuse", "4xx", "client_error") == 1


async def test_an_unexpected_error_answers_500_with_the_request_id_and_is_counted(
    http: httpx.AsyncClient, metrics: Metrics
) -> None:
    response = await http.get("/crash", headers={"X-Request-ID": "crash-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "server_error"}
    assert response.headers["x-request-id"] == "crash-1"
    assert requests_counted(metrics, "/crash", "5xx", "server_error") == 1


async def test_a_request_cancelled_before_its_answer_is_counted_as_cancelled() -> None:
    metrics = Metrics(process=False)

    async def never_answers(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyboardInterrupt  # any BaseException: the task was torn down

    middleware = RequestGateway(never_answers, metrics)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError("nothing may be sent")

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(KeyboardInterrupt):
        await middleware(scope, receive, send)
    assert requests_counted(metrics, "unmatched", "none", "cancelled") == 1
    assert REQUEST_ID.get() is None


async def test_lifespan_and_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    metrics = Metrics(process=False)
    middleware = RequestGateway(app, metrics)

    async def nothing() -> Message:
        return {"type": "lifespan.startup"}

    async def ignore(message: Message) -> None:
        return None

    await middleware({"type": "lifespan"}, nothing, ignore)
    assert seen == ["lifespan"]
    assert metrics.registry.get_sample_value("backchannel_http_requests_total", {}) is None


async def test_a_direct_route_is_called_without_the_router(metrics: Metrics) -> None:
    seen: list[bool] = []

    async def direct(request: Request) -> Response:
        seen.append("router" in request.scope)
        return JSONResponse({})

    app = ServiceApp(
        metrics,
        routes=[Route("/direct", direct, methods=["POST"]), Route("/routed", direct)],
        direct_paths=("/direct",),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.post("/direct")).status_code == 200
        assert (await client.get("/routed")).status_code == 200
        assert (await client.get("/direct")).status_code == 405  # the router answers it
    assert seen == [False, True]
    assert requests_counted(metrics, "/direct", "2xx", "ok") == 1
    assert requests_counted(metrics, "/direct", "4xx", "client_error") == 1


def test_a_direct_path_without_its_route_is_refused(metrics: Metrics) -> None:
    app = ServiceApp(metrics, routes=[Route("/items/{id}", echo_request_id)], direct_paths=("/x",))
    with pytest.raises(ValueError, match="no route"):
        app.build_middleware_stack()
