"""JOSE helpers for tests: client key pairs, client assertions, request objects, hint tokens,
and a local server publishing a client's JWKS."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def ec_key(curve: str = "P-256") -> ECKey:
    return ECKey.generate_key(curve, private=True, auto_kid=True)


def rsa_key(bits: int = 2048) -> RSAKey:
    return RSAKey.generate_key(bits, private=True, auto_kid=True)


def ed25519_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519", private=True, auto_kid=True)


def public_jwks(*keys: Key) -> dict[str, Any]:
    """The JWKS a client would register: public parts only."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def sign(
    claims: dict[str, Any],
    key: Key,
    alg: str = "ES256",
    *,
    header: dict[str, Any] | None = None,
    kid: bool = True,
) -> str:
    """A compact JWS of ``claims``; ``kid`` puts the key's kid in the header."""
    protected: dict[str, Any] = {"alg": alg}
    if kid and key.kid:
        protected["kid"] = key.kid
    protected.update(header or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is flagged by joserfc
        return jwt.encode(protected, claims, key, algorithms=[alg])


def sign_hs256(claims: dict[str, Any], secret: str) -> str:
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret), algorithms=["HS256"])


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg: none`` JWT."""

    def b64(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def client_assertion_claims(
    client_id: str, aud: str | list[str], *, lifetime: float = 60, **overrides: Any
) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def client_assertion(
    client_id: str, key: Key, aud: str | list[str], alg: str = "ES256", **overrides: Any
) -> str:
    """A private_key_jwt assertion (RFC 7523 §3); ``overrides`` (None removes) change claims."""
    return sign(client_assertion_claims(client_id, aud, **overrides), key, alg)


def assertion_form(assertion: str, **extra: str) -> dict[str, str]:
    return {"client_assertion_type": JWT_BEARER, "client_assertion": assertion, **extra}


def request_object_claims(
    client_id: str,
    aud: str | list[str],
    *,
    exp_in: float = 300,
    nbf_offset: float = 0,
    iat_offset: float = 0,
    **params: Any,
) -> dict[str, Any]:
    """Claims of a signed authentication request (CIBA §7.1.1); None removes a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "aud": aud,
        "iat": now + iat_offset,
        "nbf": now + nbf_offset,
        "exp": now + exp_in,
        "jti": secrets.token_urlsafe(16),
        "scope": "openid",
        "login_hint": "alice@example.com",
    }
    claims.update(params)
    return {k: v for k, v in claims.items() if v is not None}


def request_object(
    client_id: str, key: Key, aud: str | list[str], alg: str = "ES256", **params: Any
) -> str:
    return sign(request_object_claims(client_id, aud, **params), key, alg)


def login_hint_token(issuer: str, key: Key, alg: str = "ES256", **claims: Any) -> str:
    """A login_hint_token from ``issuer``; ``claims`` name the user (e.g. sub_id=...)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": issuer, "iat": now, "exp": now + 300, **claims}
    return sign({k: v for k, v in body.items() if v is not None}, key, alg)


@dataclasses.dataclass
class JwksServer:
    """A client's key server on 127.0.0.1: ``/jwks`` serves ``jwks`` and counts hits;
    ``/redirect`` redirects there; ``/huge`` answers 100 kB."""

    base_url: str = ""
    jwks: dict[str, Any] = dataclasses.field(default_factory=lambda: {"keys": []})
    hits: int = 0
    last_host: str | None = None

    @property
    def url(self) -> str:
        return self.base_url + "/jwks"


@contextlib.asynccontextmanager
async def serve_jwks() -> AsyncIterator[JwksServer]:
    state = JwksServer()

    async def jwks(request: web.Request) -> web.Response:
        state.hits += 1
        state.last_host = request.headers.get("Host")
        return web.json_response(state.jwks)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/jwks")

    async def huge(request: web.Request) -> web.Response:
        return web.json_response({"keys": [], "padding": "x" * 100_000})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/huge", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        state.base_url = f"http://{host}:{port}"
        yield state
    finally:
        await runner.cleanup()
