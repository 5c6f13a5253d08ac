"""A stand-in provider on 127.0.0.1 for what the real server will not do on request:
serve discovery and keys with chosen ``Cache-Control``, rotate its key, sign ID tokens with
wrong claims, and answer ``/token`` with a crafted body.

Its discovery document and JWK Set are real HTTP answers, so the client under
test fetches, caches and verifies exactly as it would against a real provider.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from joserfc.jwk import Key

from tests.support.jose import ec_key, sign

AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
RT_HASH_CLAIM = "urn:openid:params:jwt:claim:rt_hash"


def left_half_sha256(value: str) -> str:
    """``at_hash`` / ``rt_hash`` for an ES256/RS256/PS256-signed token, computed here."""
    digest = hashlib.sha256(value.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class StandInIssuer:
    client_id: str = "rp-1"
    url: str = ""
    key: Key = field(default_factory=ec_key)
    published: list[Key] = field(default_factory=list)
    discovery_cache_control: str | None = "max-age=300"
    jwks_cache_control: str | None = "max-age=60"
    issuer_in_document: str | None = None  # None: its own URL
    token_answer: tuple[int, dict[str, Any]] = (400, {"error": "authorization_pending"})
    hits: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.published.append(self.key)

    def rotate(self) -> Key:
        """Sign with a new key, published next to the old one."""
        self.key = ec_key()
        self.published.append(self.key)
        return self.key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid ID token claims for ``client_id``; a None override removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "alice",
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def id_token(
        self,
        *,
        key: Key | None = None,
        alg: str = "ES256",
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        return sign(self.claims(**claims), key or self.key, alg, header=header)

    def token_response(
        self, auth_req_id: str, access_token: str = "at-1", **claims: Any
    ) -> dict[str, Any]:
        """A CIBA token response whose ID token carries the right hashes unless overridden."""
        id_claims = {
            AUTH_REQ_ID_CLAIM: auth_req_id,
            "at_hash": left_half_sha256(access_token),
            **claims,
        }
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(**id_claims),
        }

    def _answer(self, body: dict[str, Any], cache_control: str | None) -> web.Response:
        headers = {"Cache-Control": cache_control} if cache_control is not None else {}
        return web.json_response(body, headers=headers)

    async def discovery(self, request: web.Request) -> web.Response:
        self.hits["discovery"] += 1
        document = {
            "issuer": self.issuer_in_document or self.url,
            "token_endpoint": self.url + "/token",
            "backchannel_authentication_endpoint": self.url + "/bc-authorize",
            "jwks_uri": self.url + "/jwks",
            "userinfo_endpoint": self.url + "/userinfo",
            "id_token_signing_alg_values_supported": ["ES256", "PS256", "RS256"],
        }
        return self._answer(document, self.discovery_cache_control)

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        keys = {"keys": [k.as_dict(private=False) for k in self.published]}
        return self._answer(keys, self.jwks_cache_control)

    async def token(self, request: web.Request) -> web.Response:
        self.hits["token"] += 1
        status, body = self.token_answer
        return web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def userinfo(self, request: web.Request) -> web.Response:
        """Refuses every token the way RFC 6750 §3 allows: in the challenge only, no body."""
        self.hits["userinfo"] += 1
        challenge = 'Bearer error="invalid_token", error_description="the token expired"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})


@contextlib.asynccontextmanager
async def run_stand_in_issuer(client_id: str = "rp-1") -> AsyncIterator[StandInIssuer]:
    issuer = StandInIssuer(client_id=client_id)
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", issuer.discovery)
    app.router.add_get("/jwks", issuer.jwks)
    app.router.add_post("/token", issuer.token)
    app.router.add_get("/userinfo", issuer.userinfo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    issuer.url = f"http://{host}:{port}"
    try:
        yield issuer
    finally:
        await runner.cleanup()
