"""Real certificates made on the fly (trustme), and the app served over TLS by the
production launcher (``backchannel.cli.server.serve``) on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.config import Config
from joserfc.jwk import ECKey
from starlette.applications import Starlette

from backchannel.cli.server import serve
from tests.support.served import free_port


@dataclass(frozen=True)
class SelfSigned:
    """A self-signed client certificate and its key, as PEM, and the key's public JWK."""

    cert_pem: bytes
    key_pem: bytes
    jwk: dict[str, Any]

    def configure_cert(self, context: ssl.SSLContext, directory: Path) -> None:
        cert, key = directory / "self-signed.pem", directory / "self-signed.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        context.load_cert_chain(cert, key)


def self_signed(common_name: str = "acme-terminal") -> SelfSigned:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = ECKey.import_key(public_pem).as_dict(private=False)
    return SelfSigned(cert.public_bytes(serialization.Encoding.PEM), key_pem, jwk)


def subject_dn(cert: trustme.LeafCert) -> str:
    loaded = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
    return loaded.subject.rfc4514_string()


def cert_pem(cert: trustme.LeafCert) -> str:
    return cert.cert_chain_pems[0].bytes().decode()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client's TLS context trusting ``ca`` (the server's issuer), with no certificate."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@dataclass(frozen=True)
class TLSServer:
    url: str
    ca: trustme.CA

    def client(self, cert: trustme.LeafCert | SelfSigned | None, tmp: Path) -> httpx.AsyncClient:
        context = client_context(self.ca)
        if isinstance(cert, SelfSigned):
            cert.configure_cert(context, tmp)
        elif cert is not None:
            cert.configure_cert(context)
        return httpx.AsyncClient(base_url=self.url, verify=context)


def tls_config(
    ca: trustme.CA, directory: Path, port: int, *, extra_anchors: tuple[bytes, ...] = ()
) -> Config:
    """hypercorn's TOML settings for TLS with client certificates, as an operator sets them."""
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, anchors = (
        directory / "server.pem",
        directory / "server.key",
        directory / "client-cas.pem",
    )
    server_cert.cert_chain_pems[0].write_to_path(str(certfile))
    server_cert.private_key_pem.write_to_path(str(keyfile))
    anchors.write_bytes(ca.cert_pem.bytes() + b"".join(extra_anchors))
    toml = directory / "hypercorn.toml"
    toml.write_text(
        f'certfile = "{certfile}"\nkeyfile = "{keyfile}"\nca_certs = "{anchors}"\n'
        'verify_mode = "CERT_OPTIONAL"\n'
    )
    from backchannel.cli.server import hypercorn_config

    config = hypercorn_config(toml)
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    return config


@contextlib.asynccontextmanager
async def serve_tls(app: Starlette, config: Config, ca: trustme.CA) -> AsyncIterator[TLSServer]:
    """Serve ``app`` with ``config`` through the production launcher until the block ends."""
    host, port = config.bind[0].rsplit(":", 1)
    url = f"https://{host}:{port}"
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, stop=stop))
    context = client_context(ca)
    async with httpx.AsyncClient(verify=context) as probe:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                await probe.get(url + "/.well-known/openid-configuration")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    try:
        yield TLSServer(url, ca)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


__all__ = ["TLSServer", "free_port", "self_signed", "serve_tls", "tls_config"]
