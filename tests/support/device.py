"""A Python stand-in for the authenticator app: a phone with a P-256 key.

It signs its calls exactly as the PWA does (docs/device-api.md): compact JWS,
ES256, ``typ`` ``bc-device+jwt`` with ``kid`` = device_id (or ``bc-enrol+jwt``
with the public ``jwk`` at enrolment), payload ``htm``/``htu``/``iat``/``jti``.
The ``shown`` digest is computed here independently of the server's code, the
way the browser does it with ``JSON.stringify``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from backchannel.authenticator.enrolment import issue_enrolment_code

ISSUER = "http://127.0.0.1:8000"
JOSE = {"Content-Type": "application/jose"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def shown(
    ref: str,
    client_name: str,
    binding_message: str | None,
    scope: list[str],
    authorization_details: list[dict[str, Any]] | None = None,
) -> str:
    """``base64url(SHA-256(JSON.stringify([ref, client_name, binding_message, scope])))``,
    with the details' sorted-key compact JSON as a fifth element when there are any."""
    elements = [ref, client_name, binding_message or "", " ".join(scope)]
    if authorization_details is not None:
        elements.append(
            json.dumps(
                authorization_details, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            )
        )
    text = json.dumps(elements, ensure_ascii=False, separators=(",", ":"))
    return b64url(hashlib.sha256(text.encode("utf-8")).digest())


def ref_of(auth_req_id: str) -> str:
    """What the phone knows a request by: the hex SHA-256 of its auth_req_id."""
    return hashlib.sha256(auth_req_id.encode()).hexdigest()


def new_subscription(host: str = "push.example.net") -> dict[str, Any]:
    """A ``PushSubscription.toJSON()`` with freshly generated keys."""
    key = ECKey.generate_key("P-256", private=True)
    public = key.as_dict(private=False)
    point = b"\x04" + _b64decode(public["x"]) + _b64decode(public["y"])
    return {
        "endpoint": f"https://{host}/push/{secrets.token_urlsafe(16)}",
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(secrets.token_bytes(16))},
    }


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def sign_jws(header: dict[str, Any], payload: dict[str, Any] | bytes, key: ECKey) -> str:
    """A compact JWS signed ES256 the way WebCrypto does (raw r‖s), whatever the header says."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(raw)}".encode("ascii")
    der = key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input.decode()}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass
class Phone:
    """One enrolled (or enrolling) authenticator app."""

    name: str = "Alice's phone"
    issuer: str = ISSUER
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", private=True))
    subscription: dict[str, Any] = field(default_factory=new_subscription)
    device_id: str | None = None

    def public_jwk(self) -> dict[str, Any]:
        """What WebCrypto's ``exportKey("jwk")`` gives for the public key."""
        return {**self.key.as_dict(private=False), "ext": True, "key_ops": ["verify"]}

    def claims(self, path: str, **payload: Any) -> dict[str, Any]:
        """``htm``/``htu``/``iat``/``jti`` plus ``payload``; a ``None`` value removes a claim."""
        body: dict[str, Any] = {
            "htm": "POST",
            "htu": self.issuer + path,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
            **payload,
        }
        return {k: v for k, v in body.items() if v is not None}

    def enrolment_jws(
        self, code: str | None, *, header: dict[str, Any] | None = None, **payload: Any
    ) -> str:
        claims = self.claims(
            "/device/enrol",
            **{"code": code, "name": self.name, "subscription": self.subscription, **payload},
        )
        protected = {
            "alg": "ES256",
            "typ": "bc-enrol+jwt",
            "jwk": self.public_jwk(),
            **(header or {}),
        }
        return sign_jws(protected, claims, self.key)

    def call_jws(self, path: str, *, header: dict[str, Any] | None = None, **payload: Any) -> str:
        assert self.device_id is not None, "enrol first"
        protected = {
            "alg": "ES256",
            "typ": "bc-device+jwt",
            "kid": self.device_id,
            **(header or {}),
        }
        return sign_jws(protected, self.claims(path, **payload), self.key)

    async def enrol(self, http: httpx.AsyncClient, code: str, **payload: Any) -> httpx.Response:
        response = await post_jose(http, "/device/enrol", self.enrolment_jws(code, **payload))
        if response.status_code == 201:
            self.device_id = response.json()["device_id"]
        return response

    async def call(self, http: httpx.AsyncClient, path: str, **payload: Any) -> httpx.Response:
        return await post_jose(http, path, self.call_jws(path, **payload))

    async def pending(self, http: httpx.AsyncClient) -> list[dict[str, Any]]:
        response = await self.call(http, "/device/requests")
        assert response.status_code == 200, response.text
        requests: list[dict[str, Any]] = response.json()["requests"]
        return requests

    def decision(self, entry: dict[str, Any], decision: str, **overrides: Any) -> dict[str, Any]:
        """The decision payload over what ``entry`` (from the pending list) shows."""
        payload = {
            "ref": entry["ref"],
            "decision": decision,
            "shown": shown(
                entry["ref"],
                entry["client_name"],
                entry["binding_message"],
                entry["scope"],
                entry.get("authorization_details"),
            ),
            "challenge": entry["challenge"],
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        }
        payload.update(overrides)
        return payload

    async def decide(
        self, http: httpx.AsyncClient, entry: dict[str, Any], decision: str, **overrides: Any
    ) -> httpx.Response:
        return await self.call(
            http, "/device/decision", **self.decision(entry, decision, **overrides)
        )


async def post_jose(http: httpx.AsyncClient, path: str, body: str | bytes) -> httpx.Response:
    return await http.post(path, content=body, headers=JOSE)


async def enrolment_code(db: asyncpg.Connection, user_id: int, ttl: int = 600) -> str:
    """A fresh code for ``user_id``, as ``backchannel user enrol`` issues it."""
    issued = await issue_enrolment_code(db, user_id, "cli", ttl, issuer=ISSUER)
    return issued.code


async def enrolled_phone(
    http: httpx.AsyncClient, db: asyncpg.Connection, user_id: int, name: str = "Alice's phone"
) -> Phone:
    phone = Phone(name=name)
    response = await phone.enrol(http, await enrolment_code(db, user_id))
    assert response.status_code == 201, response.text
    return phone
