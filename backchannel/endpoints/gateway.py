"""Everything between the HTTP server and an endpoint, as one pure ASGI layer.

:class:`RequestGateway` does for every HTTP request, in one place (a stack of
middlewares cost about a tenth of a token poll's CPU):

- **request ids and metrics** (``observability.requests``): the id is the
  caller's sane ``X-Request-ID`` or a fresh one, returned in ``X-Request-ID`` and
  set in :data:`REQUEST_ID` while the request is served; the request is counted
  by route, status class and outcome, and logged when the access log is on;
- **error answers**: an exception with a handler (``OAuthError``, a database
  outage, ...) is rendered by it; any other exception gets the unexpected-error
  handler's 500 and is raised on, for the server to log (what Starlette's
  ``ServerErrorMiddleware`` and ``ExceptionMiddleware`` did);
- **unread bodies** (``endpoints/unread_body.py``): before the first body
  message of an answer, what the client is still sending is read and dropped,
  within bounds; a body that did not end gets ``Connection: close``. Requests
  that declare no body skip this;
- **direct routes**: the hot endpoints (``/token``, ``/bc-authorize``) are
  called straight from here with one ``Request``; every other path goes to
  Starlette's router, which answers 404 and 405 and serves the mounts.

:class:`ServiceApp` is Starlette with this gateway as its whole middleware stack.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backchannel.endpoints.unread_body import DRAIN_BYTES, DRAIN_SECONDS
from backchannel.observability.logging import REQUEST_ID
from backchannel.observability.metrics import Metrics
from backchannel.observability.requests import (
    REQUEST_ID_HEADER,
    log_request,
    new_request_id,
    outcome_of,
    route_template,
    sane_request_id,
)

__all__ = ["RequestGateway", "ServiceApp"]

Handler = Callable[[Request, Exception], Any]
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_CLOSE = (b"connection", b"close")


class _Exchange:
    """One request's receive and send as the gateway wraps them."""

    __slots__ = ("_gateway", "_held_start", "_id_header", "_receive", "_send", "ended", "status")

    def __init__(
        self,
        gateway: RequestGateway,
        receive: Receive,
        send: Send,
        id_header: tuple[bytes, bytes],
        declares_body: bool,
    ) -> None:
        self._gateway = gateway
        self._receive = receive
        self._send = send
        self._id_header = id_header
        self._held_start: Message | None = None
        self.ended = not declares_body  # the body arrived to its end, or the client went away
        self.status = 0

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.ended = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), self._id_header]}
            if not self.ended:
                self._held_start = message  # sent with the first body message, once drained
                return
            await self._send(message)
            return
        if self._held_start is not None or not self.ended:
            await self._drain()
            start = self._held_start
            if start is not None:
                self._held_start = None
                if not self.ended:
                    start = {**start, "headers": [*start["headers"], _CLOSE]}
                await self._send(start)
        await self._send(message)

    async def _drain(self) -> None:
        left = self._gateway.drain_bytes
        try:
            async with asyncio.timeout(self._gateway.drain_seconds):
                while not self.ended and left >= 0:
                    left -= len((await self.receive()).get("body", b""))
        except TimeoutError:
            pass


class RequestGateway:
    """The one ASGI layer around the router (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        handlers: Mapping[Any, Handler] | None = None,
        direct_routes: Collection[Route] = (),
        log_requests: bool = False,
        quiet_paths: Collection[str] = (),
        drain_bytes: int = DRAIN_BYTES,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests
        self.quiet_paths = frozenset(quiet_paths)
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds
        self._unexpected: Handler | None = None
        self._by_class: dict[type[BaseException], Handler] = {HTTPException: _plain_http_error}
        self._by_status: dict[int, Handler] = {}
        for key, handler in (handlers or {}).items():
            if key in (500, Exception):
                self._unexpected = handler
            elif isinstance(key, int):
                self._by_status[key] = handler
            else:
                self._by_class[key] = handler
        # For the router's routes, whose own wrapper renders handled exceptions.
        self._scope_handlers = (self._by_class, self._by_status)
        self._direct: dict[str, Route] = {}
        for route in direct_routes:
            if route.param_convertors or not inspect.iscoroutinefunction(route.endpoint):
                raise ValueError(f"{route.path}: a direct route needs a fixed path and async def")
            self._direct[route.path] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: str | None = None
        seen_id = declares_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declares_body = declares_body or value.strip() != b"0"
            elif name == b"transfer-encoding":
                declares_body = True
            elif name == REQUEST_ID_HEADER and not seen_id:
                seen_id = True
                request_id = sane_request_id(value)
        if request_id is None:
            request_id = new_request_id()
        exchange = _Exchange(
            self, receive, send, (REQUEST_ID_HEADER, request_id.encode("ascii")), declares_body
        )
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        outcome: str | None = None
        try:
            await self._serve(scope, exchange.receive if declares_body else receive, exchange)
        except Exception:
            if not exchange.status:
                outcome = "server_error"
                exchange.status = 500
            raise
        except BaseException:  # cancelled: the client went away, or shutdown
            if not exchange.status:
                outcome = "cancelled"
            raise
        finally:
            seconds = time.perf_counter() - started
            status = exchange.status
            self.metrics.record_request(
                route_template(scope),
                _STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "none",
                outcome or outcome_of(status, scope),
                seconds,
            )
            if self.log_requests:
                log_request(scope, status, seconds, self.quiet_paths)
            REQUEST_ID.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        send = exchange.send
        scope["starlette.exception_handlers"] = self._scope_handlers
        route = None
        if self._direct:
            path = _route_path(scope)
            route = self._direct.get(path)
        try:
            if route is not None and scope["method"] in (route.methods or ()):
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                response: Response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is not None:
                if exchange.status:
                    raise RuntimeError(
                        "Caught handled exception, but response already started."
                    ) from exc
                response = await _call(handler, Request(scope, receive, send), exc)
                await response(scope, receive, send)
                exc.__traceback__ = None  # reused instances would pile up tracebacks
                return
            if not exchange.status:
                request = Request(scope, receive, send)
                if self._unexpected is None:
                    response = PlainTextResponse("Internal Server Error", status_code=500)
                else:
                    response = await _call(self._unexpected, request, exc)
                await response(scope, receive, send)
            raise  # the server logs it

    def _handler_for(self, exc: Exception) -> Handler | None:
        if isinstance(exc, HTTPException) and (found := self._by_status.get(exc.status_code)):
            return found
        for cls in type(exc).__mro__:
            handler = self._by_class.get(cls)
            if handler is not None:
                return handler
        return None


async def _plain_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answer to an ``HTTPException`` when the app sets no handler for it."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


async def _call(handler: Handler, request: Request, exc: Exception) -> Response:
    response = handler(request, exc)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, Response)
    return response


class ServiceApp(Starlette):
    """Starlette whose whole middleware stack is one :class:`RequestGateway`.

    ``direct_paths`` name the routes the gateway calls without the router.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        log_requests: bool = False,
        quiet_paths: Collection[str] = (),
        direct_paths: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("middleware"):
            raise ValueError("ServiceApp takes no middleware: RequestGateway does its work")
        self.metrics = metrics
        self.log_requests = log_requests
        self.quiet_paths = quiet_paths
        self.direct_paths = frozenset(direct_paths)
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        direct = [r for r in self.routes if isinstance(r, Route) and r.path in self.direct_paths]
        if len(direct) != len(self.direct_paths):
            raise ValueError(f"no route for some of {sorted(self.direct_paths)}")
        return RequestGateway(
            self.router,
            self.metrics,
            handlers=self.exception_handlers,
            direct_routes=direct,
            log_requests=self.log_requests,
            quiet_paths=self.quiet_paths,
        )


def _route_path(scope: Scope) -> str:
    """The path the routes see: without the mount point (``root_path``) it starts with."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path
