"""The launcher tells the app which client certificate each TLS connection presented
(backchannel/cli/tls_peers.py): over a real TLS connection to hypercorn, the app finds
it in the ASGI TLS extension. A hypercorn upgrade that moves the hook point fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from backchannel.cli import tls_peers
from tests.support.served import free_port
from tests.support.tls import cert_pem, serve_tls, tls_config


def echo_app() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        tls = request.scope.get("extensions", {}).get("tls")
        return JSONResponse({"tls": tls, "client": list(request.client or ())})

    return Starlette(
        routes=[
            Route("/echo", echo),
            Route("/.well-known/openid-configuration", echo),
        ]
    )


async def test_the_app_sees_each_connections_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    alice, bob = ca.issue_cert("alice.example"), ca.issue_cert("bob.example")
    config = tls_config(ca, tmp_path, free_port())
    registry = tls_peers.peer_certificates(config)
    async with serve_tls(echo_app(), config, ca) as server:
        for cert in (alice, bob):
            async with server.client(cert, tmp_path) as http:
                body = (await http.get("/echo")).json()
                assert body["tls"]["client_cert_chain"] == [cert_pem(cert)]
                again = (await http.get("/echo")).json()  # the same kept-alive connection
                assert again["tls"]["client_cert_chain"] == [cert_pem(cert)]
        async with server.client(None, tmp_path) as http:
            assert (await http.get("/echo")).json()["tls"] is None
    assert len(registry) == 0  # every closed connection was forgotten


async def test_a_server_that_sets_the_extension_itself_is_left_alone() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope["extensions"])

    registry = tls_peers.PeerCertificates()
    registry.add(object(), ("127.0.0.1", 443), ("127.0.0.1", 5000), b"not used")
    native = {"client_cert_chain": ["-----BEGIN CERTIFICATE-----native"]}
    middleware = tls_peers.TLSExtensionMiddleware(app, registry)
    scope = {
        "type": "http",
        "server": ("127.0.0.1", 443),
        "client": ("127.0.0.1", 5000),
        "extensions": {"tls": native},
    }
    await middleware(scope, None, None)  # type: ignore[arg-type]
    assert seen["tls"] is native


def test_installing_refuses_a_hypercorn_without_the_hook_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hypercorn_run, "TCPServer", object)
    with pytest.raises(RuntimeError, match="cannot learn TLS client certificates"):
        tls_peers.install()


def test_hypercorn_still_hands_connections_to_the_class_the_hook_replaces() -> None:
    from hypercorn.asyncio.tcp_server import TCPServer

    assert hypercorn_run.TCPServer in (TCPServer, tls_peers.RecordingTCPServer)
    # RecordingTCPServer reads these; a hypercorn that renamed them would break it.
    assert {"writer", "config"} <= set(TCPServer.__init__.__code__.co_varnames)
