"""Mutual TLS (RFC 8705) over real connections: hypercorn terminating TLS with client
certificates (through the production launcher), and a proxy forwarding the certificate
in a header, believed only from the configured proxy addresses."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import trustme

from backchannel.app import create_app
from backchannel.db.users import User
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.ciba import CIBA_GRANT, audit_events, decide
from tests.support.served import free_port, serve_over_hypercorn
from tests.support.tls import (
    SelfSigned,
    TLSServer,
    cert_pem,
    self_signed,
    serve_tls,
    subject_dn,
    tls_config,
)


def peek(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def x5t_s256(pem: str | bytes) -> str:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = pem.encode() if isinstance(pem, str) else pem
    der = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


async def tokens_for(http: httpx.AsyncClient, db: asyncpg.Connection, client_id: str) -> Any:
    """A CIBA round trip authenticated by the connection's certificate alone."""
    started = await http.post(
        "/bc-authorize",
        data={"client_id": client_id, "scope": "openid email", "login_hint": "alice@example.com"},
    )
    assert started.status_code == 200, started.text
    await decide(db, started.json()["auth_req_id"])
    return await http.post(
        "/token",
        data={
            "client_id": client_id,
            "grant_type": CIBA_GRANT,
            "auth_req_id": started.json()["auth_req_id"],
        },
    )


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def terminal() -> SelfSigned:
    return self_signed()


@pytest.fixture
async def tls_server(
    settings: Settings, ca: trustme.CA, terminal: SelfSigned, tmp_path: Path
) -> AsyncIterator[TLSServer]:
    """The app behind hypercorn's own TLS, asking for client certificates: the CA's, and the
    self-signed one (a self-signed certificate is its own trust anchor)."""
    port = free_port()
    config = tls_config(ca, tmp_path, port, extra_anchors=(terminal.cert_pem,))
    ca_file = tmp_path / "tls-client-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    app = create_app(
        settings.replace(
            issuer=f"https://127.0.0.1:{port}", port=port, tls_client_ca_file=str(ca_file)
        )
    )
    async with serve_tls(app, config, ca) as server:
        yield server


async def test_tls_client_auth_binds_tokens_to_the_certificate_and_refuses_another(
    tls_server: TLSServer,
    ca: trustme.CA,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
    tmp_path: Path,
) -> None:
    cert_a, cert_b = ca.issue_cert("a.acme.example"), ca.issue_cert("b.acme.example")
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="tls_client_auth",
        secret_hash=None,
        tls_client_auth_subject_dn=subject_dn(cert_a),
        tls_client_certificate_bound_access_tokens=True,
    )
    async with tls_server.client(cert_a, tmp_path) as http_a:
        response = await tokens_for(http_a, db, rp.client_id)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert peek(token)["cnf"] == {"x5t#S256": x5t_s256(cert_pem(cert_a))}
        introspected = await http_a.post(
            "/introspect", data={"client_id": rp.client_id, "token": token}
        )
        assert introspected.json()["cnf"] == {"x5t#S256": x5t_s256(cert_pem(cert_a))}
        mine = await http_a.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert mine.status_code == 200, mine.text
    async with tls_server.client(cert_b, tmp_path) as http_b:
        stolen = await http_b.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert stolen.status_code == 401
        assert "another TLS client certificate" in stolen.json()["error_description"]
        assert stolen.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        # Certificate B has another subject: it cannot authenticate as the client either.
        refused = await http_b.post(
            "/token", data={"client_id": rp.client_id, "grant_type": CIBA_GRANT, "auth_req_id": "x"}
        )
        assert refused.status_code == 401
        assert "registered subject" in refused.json()["error_description"]
    async with tls_server.client(None, tmp_path) as bare:
        without = await bare.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert without.status_code == 401


async def test_tls_client_auth_needs_a_certificate_from_the_trusted_ca(
    tls_server: TLSServer,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
    terminal: SelfSigned,
    tmp_path: Path,
) -> None:
    """Same subject, but self-signed: the TLS layer let it through (it is an anchor there
    for self_signed_tls_client_auth), and the server's own chain check refuses it."""
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="tls_client_auth",
        secret_hash=None,
        tls_client_auth_subject_dn="CN=acme-terminal",
    )
    async with tls_server.client(terminal, tmp_path) as http:
        response = await http.post(
            "/bc-authorize",
            data={"client_id": rp.client_id, "scope": "openid", "login_hint": "alice@example.com"},
        )
    assert response.status_code == 401
    assert "not trusted" in response.json()["error_description"]


async def test_self_signed_tls_client_auth_matches_the_registered_key(
    tls_server: TLSServer,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
    terminal: SelfSigned,
    tmp_path: Path,
) -> None:
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="self_signed_tls_client_auth",
        secret_hash=None,
        jwks={"keys": [terminal.jwk]},
        tls_client_certificate_bound_access_tokens=True,
    )
    async with tls_server.client(terminal, tmp_path) as http:
        response = await tokens_for(http, db, rp.client_id)
    assert response.status_code == 200, response.text
    assert peek(response.json()["access_token"])["cnf"] == {"x5t#S256": x5t_s256(terminal.cert_pem)}
    other = self_signed()
    impostor: RegisteredClient = await make_client(
        token_endpoint_auth_method="self_signed_tls_client_auth",
        secret_hash=None,
        jwks={"keys": [other.jwk]},
    )
    async with tls_server.client(terminal, tmp_path) as http:
        refused = await http.post(
            "/bc-authorize",
            data={
                "client_id": impostor.client_id,
                "scope": "openid",
                "login_hint": "alice@example.com",
            },
        )
    assert refused.status_code == 401
    assert "not one of the client's keys" in refused.json()["error_description"]


async def test_a_proxy_forwards_the_certificate_from_a_trusted_address(
    settings: Settings,
    ca: trustme.CA,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
    tmp_path: Path,
) -> None:
    cert = ca.issue_cert("acme.example")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="tls_client_auth",
        secret_hash=None,
        tls_client_auth_san_dns="acme.example",
        tls_client_certificate_bound_access_tokens=True,
    )
    forwarded = {"X-Client-Cert": quote(cert_pem(cert))}  # as nginx's $ssl_client_escaped_cert
    proxied = settings.replace(trusted_proxies=("127.0.0.0/8",), tls_client_ca_file=str(ca_file))
    async with (
        serve_over_hypercorn(proxied) as served,
        httpx.AsyncClient(base_url=served.url, headers=forwarded) as http,
    ):
        response = await tokens_for(http, db, rp.client_id)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert peek(token)["cnf"] == {"x5t#S256": x5t_s256(cert_pem(cert))}
        answer = await http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
    assert await audit_events(db, "client_certificate_header_ignored") == []


async def test_a_forged_certificate_header_from_an_untrusted_address_is_ignored_and_audited(
    settings: Settings,
    ca: trustme.CA,
    make_client: Any,
    db: asyncpg.Connection,
    alice: User,
    tmp_path: Path,
) -> None:
    cert = ca.issue_cert("acme.example")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="tls_client_auth",
        secret_hash=None,
        tls_client_auth_san_dns="acme.example",
    )
    forged = {"X-Client-Cert": quote(cert_pem(cert))}
    elsewhere = settings.replace(trusted_proxies=("10.0.0.0/8",), tls_client_ca_file=str(ca_file))
    async with (
        serve_over_hypercorn(elsewhere) as served,
        httpx.AsyncClient(base_url=served.url, headers=forged) as http,
    ):
        for _ in range(3):
            refused = await http.post(
                "/bc-authorize",
                data={
                    "client_id": rp.client_id,
                    "scope": "openid",
                    "login_hint": "alice@example.com",
                },
            )
            assert refused.status_code == 401
            assert "TLS client certificate" in refused.json()["error_description"]
    events = await audit_events(db, "client_certificate_header_ignored")
    assert len(events) == 1  # once a minute per address, however often it is sent
    assert events[0]["detail"]["peer"] == "127.0.0.1"
    assert events[0]["detail"]["header"] == "X-Client-Cert"
    assert events[0]["detail"]["path"] == "/bc-authorize"
