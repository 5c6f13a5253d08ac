"""The peer certificate of each TLS connection hypercorn terminates, handed to the app.

hypercorn (0.18) verifies client certificates when its TOML sets ``ca_certs``
and ``verify_mode``, but does not tell the application which certificate a
request's connection presented: its ASGI scope has no ``tls`` extension. This
module fills that gap without changing hypercorn's behaviour:

- :class:`RecordingTCPServer`, installed as the connection handler of
  hypercorn's asyncio worker, notes the DER certificate of every TLS
  connection when the connection starts, keyed by the connection's two
  addresses (exactly what the scope's ``server`` and ``client`` carry), and
  forgets it when the connection closes;
- :class:`TLSExtensionMiddleware` sets the standard ASGI TLS extension
  (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM) from that note,
  unless the server already set it, so a server that supports the extension
  natively works the same.

Each registry belongs to one hypercorn ``Config``: several servers in one
process (the tests run two) keep their own. ``tests/test_tls_peers.py``
fails if a hypercorn upgrade moves the class this hooks into.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config
from hypercorn.utils import parse_socket_addr

Address = tuple[str, int]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_REGISTRY = "_backchannel_tls_peers"


class PeerCertificates:
    """Connection (server address, client address) -> the client's DER certificate."""

    def __init__(self) -> None:
        self._by_connection: dict[tuple[Address, Address], tuple[object, bytes]] = {}

    def add(self, owner: object, server: Address, client: Address, der: bytes) -> None:
        self._by_connection[(server, client)] = (owner, der)

    def discard(self, owner: object, server: Address, client: Address) -> None:
        """Forget the connection, unless a newer one from the same address took its place."""
        entry = self._by_connection.get((server, client))
        if entry is not None and entry[0] is owner:
            del self._by_connection[(server, client)]

    def get(self, server: Address, client: Address) -> bytes | None:
        entry = self._by_connection.get((server, client))
        return entry[1] if entry is not None else None

    def __len__(self) -> int:
        return len(self._by_connection)


def peer_certificates(config: Config) -> PeerCertificates:
    """The registry of ``config``'s server (made on first use)."""
    registry: PeerCertificates | None = getattr(config, _REGISTRY, None)
    if registry is None:
        registry = PeerCertificates()
        setattr(config, _REGISTRY, registry)
    return registry


class RecordingTCPServer(TCPServer):
    """hypercorn's connection handler, noting the client certificate of TLS connections."""

    async def run(self) -> None:
        registry: PeerCertificates | None = getattr(self.config, _REGISTRY, None)
        ssl_object: ssl.SSLObject | None = self.writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if registry is None or der is None:
            await super().run()
            return
        sock = self.writer.get_extra_info("socket")
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
        except OSError:
            await super().run()
            return
        if client is None or server is None:
            await super().run()
            return
        registry.add(self, server, client, der)
        try:
            await super().run()
        finally:
            registry.discard(self, server, client)


def install() -> None:
    """Make hypercorn's asyncio worker hand connections to :class:`RecordingTCPServer`.

    Idempotent; it changes nothing for a server whose config has no registry.
    Raises RuntimeError if hypercorn no longer has the hook point.
    """
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is RecordingTCPServer:
        return
    if current is not TCPServer:
        raise RuntimeError(
            "hypercorn.asyncio.run.TCPServer is not hypercorn's TCPServer: "
            "cannot learn TLS client certificates (see backchannel/cli/tls_peers.py)"
        )
    setattr(hypercorn_run, "TCPServer", RecordingTCPServer)  # noqa: B010


class TLSExtensionMiddleware:
    """Sets ``scope["extensions"]["tls"]`` from the registry for TLS connections."""

    def __init__(self, app: ASGIApp, registry: PeerCertificates) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = scope.setdefault("extensions", {})
            server, client = scope.get("server"), scope.get("client")
            if "tls" not in extensions and server and client:
                der = self.registry.get((server[0], server[1]), (client[0], client[1]))
                if der is not None:
                    extensions["tls"] = {
                        "server_cert": None,
                        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
                        "client_cert_name": None,
                        "client_cert_error": None,
                        "tls_version": None,
                        "cipher_suite": None,
                    }
        await self.app(scope, receive, send)
