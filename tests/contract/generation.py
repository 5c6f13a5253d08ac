"""What the fuzzing sends besides schemathesis' own data: realistic values and signed bodies.

A quarter of the positive cases keep the body schemathesis made from the
document. In the others a form gets values a relying party would send (a
known scope, a login hint naming a seeded user, a supported acr, a payment
as authorization details, a grant type), so that requests pass client
authentication and validation and reach the database; and a device body is
a real JWS signed by the seeded phone over partly fuzzed claims, so that the
device API is explored past the signature check: a WebAuthn registration
carries a credential a software authenticator made over options the server
just gave (so its challenge is live), with one part broken or fuzzed; half
the decisions decide a request made for alice a moment before, over what her
phone shows, approvals with an assertion (right, for another transaction, or
with a part fuzzed) or none. A token request carries a DPoP proof of the
relying party's key, no DPoP header, or the one generated, a third each.
Negative cases stay as schemathesis made them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cbor2
from hypothesis import strategies as st

from backchannel.db.clients import CIBA_GRANT
from tests.contract.fuzz_server import LOGIN_HINTS, FuzzServer
from tests.support.webauthn import SoftAuthenticator, b64url, uv_challenge

Server = Callable[[], FuzzServer | None]
# Claims that can only be made when the request is sent (they call the server).
ClaimsMaker = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Deferred:
    """A body made just before the request is sent rather than when it is drawn: making
    it calls the server, whose thread uses the random module, which hypothesis forbids
    during a draw."""

    make: Callable[[], str]


def made(body: Any) -> Any:
    """The body to send: a :class:`Deferred` one made now, any other as it is."""
    return body.make() if isinstance(body, Deferred) else body


CLIENT_AUTH_FIELDS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
HINT_FIELDS = ("login_hint", "id_token_hint", "login_hint_token", "request")
SCOPES = ("openid", "openid email", "openid profile phone", "openid offline_access", "email")

# Any JSON value, small.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), min_size=1, max_size=max_size)


REALISTIC_FORMS = frozenset(
    {"/bc-authorize", "/token", "/admin/enrolments", "/introspect", "/revoke", "/receipts"}
)
BINDING_MESSAGES = ("Order 4711", "Pay 80 EUR at Acme Coffee? 🙂", "注文 42 を確認", "a" * 128)
ACR_VALUES = (
    "urn:backchannel:acr:device",
    "urn:backchannel:acr:sca",
    "loa1 urn:backchannel:acr:sca urn:backchannel:acr:device",
)
# RFC 9396 details of the built-in payment_initiation type (the IBAN's check digits hold).
PAYMENTS = (
    [
        {
            "type": "payment_initiation",
            "instructedAmount": {"currency": "EUR", "amount": "80.00"},
            "creditorName": "Acme Coffee",
            "creditorAccount": {"iban": "DE89370400440532013000"},
        }
    ],
    [
        {
            "type": "payment_initiation",
            "actions": ["initiate"],
            "instructedAmount": {"currency": "GBP", "amount": "1250"},
            "creditorName": "Zoë's Bakery",
            "creditorAccount": {"sortCode": "123456", "accountNumber": "12345678"},
            "remittanceInformationUnstructured": "Invoice 42",
        }
    ],
)


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, ``odd`` otherwise."""
    return st.integers(0, 3).flatmap(partial(_pick, good, odd))


def _pick(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], n: int) -> Any:
    return odd if n == 0 else good


def realistic_form(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Fields a relying party would send to ``path`` (a link may add the rest)."""
    if path == "/bc-authorize":
        return st.fixed_dictionaries(
            {"scope": st.sampled_from(SCOPES), "login_hint": st.sampled_from(LOGIN_HINTS)},
            optional={
                "binding_message": mostly(st.sampled_from(BINDING_MESSAGES), _text(140)),
                "requested_expiry": mostly(st.integers(1, 3600).map(str), _text(12)),
                "acr_values": mostly(st.sampled_from(ACR_VALUES), _text(30)),
                "authorization_details": mostly(
                    st.sampled_from(PAYMENTS), JSON_VALUES | st.lists(JSON_VALUES, max_size=2)
                ).map(json.dumps),
            },
        )
    if path == "/token":
        return st.fixed_dictionaries(
            {"grant_type": mostly(st.sampled_from((CIBA_GRANT, "refresh_token")), _text(30))},
            optional={"scope": mostly(st.sampled_from(SCOPES), _text(20))},
        )
    if path == "/admin/enrolments":
        return st.fixed_dictionaries({"login_hint": st.sampled_from(LOGIN_HINTS)})
    if path in ("/introspect", "/revoke"):
        hint = st.sampled_from(("access_token", "refresh_token")) | _text(15)
        return st.fixed_dictionaries({}, optional={"token_type_hint": hint})
    return st.just({})


def realistic_body(path: str, body: Any) -> st.SearchStrategy[Any]:
    """A relying party's fields alone, or laid over the generated body."""
    fields = realistic_form(path)
    return fields | fields.map(partial(overlay, body))


def overlay(body: Any, fields: dict[str, Any]) -> Any:
    """``body`` with a relying party's ``fields`` laid over it (and what would clash removed)."""
    if not isinstance(body, dict):
        return fields
    kept = {k: v for k, v in body.items() if k not in CLIENT_AUTH_FIELDS}
    if "login_hint" in fields:
        kept = {k: v for k, v in kept.items() if k not in HINT_FIELDS}
    return {**kept, **fields}


DEVICE_CLAIMS = (
    "ref",
    "decision",
    "shown",
    "challenge",
    "exp",
    "number",
    "subscription",
    "device_id",
    "iat",
    "jti",
    "htu",
    "htm",
    "webauthn",
    "credential",
)


def _from_now(seconds: int) -> int:
    return int(time.time()) + seconds


def realistic_claims(path: str, server: Server) -> st.SearchStrategy[dict[str, Any] | ClaimsMaker]:
    hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
    if path == "/device/webauthn/register":
        return registration_claims(server)
    if path == "/device/decision":
        return decision_claims(server) | st.fixed_dictionaries(
            {
                "ref": hex64 | _text(70),
                "decision": st.sampled_from(("approve", "deny", "not_me")) | _text(8),
                "shown": st.binary(min_size=32, max_size=32).map(
                    lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")
                ),
                "challenge": _text(30),
                "exp": mostly(st.integers(5, 120).map(_from_now), st.integers(0, 2**40)),
            }
        )
    if path == "/device/subscription":
        return st.fixed_dictionaries(
            {
                "subscription": st.fixed_dictionaries(
                    {
                        "endpoint": st.sampled_from(
                            ("https://push.example.net/x", "http://127.0.0.1:1/push/x")
                        )
                        | _text(40),
                        "keys": st.fixed_dictionaries({"p256dh": _text(90), "auth": _text(24)})
                        | JSON_VALUES,
                    }
                )
                | JSON_VALUES
            }
        )
    if path == "/device/remove":
        # Always some device_id: without one the phone would remove itself.
        return st.fixed_dictionaries({"device_id": JSON_VALUES.filter(lambda v: v is not None)})
    return st.just({})


# How a generated WebAuthn registration differs from what a browser would send.
REGISTRATION_FLAWS = (
    "none",
    "origin",
    "rp_id",
    "no_uv",
    "self_attestation",
    "attestation_bytes",
    "attestation_statement",
    "client_data",
    "member",
)


ATTESTATION_FORMATS = (
    "none",
    "packed",
    "fido-u2f",
    "tpm",
    "android-key",
    "android-safetynet",
    "apple",
)
# The members attestation statements of those formats carry, with fuzzed values.
ATTESTATION_STATEMENTS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from((-7, -8, -257, -65535)) | JSON_VALUES,
        "sig": st.binary(max_size=80) | JSON_VALUES,
        "x5c": st.lists(st.binary(max_size=120), max_size=2) | JSON_VALUES,
        "ver": st.just("2.0") | JSON_VALUES,
        "certInfo": st.binary(max_size=120),
        "pubArea": st.binary(max_size=120),
        "response": st.binary(max_size=120),
    },
)


def registration_claims(server: Server) -> st.SearchStrategy[ClaimsMaker]:
    """``credential``: made by a software authenticator over fresh options, with a flaw."""

    def build(
        flaw: str, junk: Any, raw: bytes, key: str, fmt: Any, statement: Any
    ) -> dict[str, Any]:
        running = server()
        options = running.registration_options() if running is not None else None
        if running is None or options is None:
            return {"credential": junk}
        authenticator = SoftAuthenticator(origin=running.issuer)
        made: dict[str, dict[str, Any]] = {
            "origin": {"origin": "https://elsewhere.example"},
            "rp_id": {"rp_id": "elsewhere.example"},
            "no_uv": {"uv": False},
            "self_attestation": {"attestation": "self"},
        }
        credential = authenticator.create(options, **made.get(flaw, {}))
        response = credential["response"]
        if flaw == "attestation_bytes":
            response["attestationObject"] = b64url(raw)
        elif flaw == "attestation_statement":
            # Well-formed authenticator data; the statement of some format, fuzzed.
            attestation = {
                "fmt": fmt,
                "attStmt": statement,
                "authData": authenticator.authenticator_data(attested=True),
            }
            response["attestationObject"] = b64url(cbor2.dumps(attestation))
        elif flaw == "client_data":
            client_data = json.loads(base64.urlsafe_b64decode(response["clientDataJSON"] + "=="))
            client_data[key or "type"] = junk
            response["clientDataJSON"] = b64url(json.dumps(client_data).encode())
        elif flaw == "member":
            credential[key or "rawId"] = junk
        return {"credential": credential}

    members = st.sampled_from(("id", "rawId", "type", "transports", "challenge", "origin", ""))
    return st.builds(
        partial,
        st.just(build),
        st.sampled_from(REGISTRATION_FLAWS),
        JSON_VALUES,
        st.binary(max_size=300),
        members,
        st.sampled_from(ATTESTATION_FORMATS) | JSON_VALUES,
        ATTESTATION_STATEMENTS | JSON_VALUES,
    )


# What a generated approval carries as its WebAuthn assertion.
ASSERTIONS = ("right", "none", "other_transaction", "authenticator_data", "signature", "junk")


def decision_claims(server: Server) -> st.SearchStrategy[ClaimsMaker]:
    """A decision over what alice's phone shows of a request made for it just now."""

    def build(
        form: dict[str, str], decision: str, assertion: str, junk: Any, raw: bytes
    ) -> dict[str, Any]:
        running = server()
        entry = running.fresh_prompt(form) if running is not None else None
        if running is None or entry is None or running.phone is None:
            return {"decision": decision, "webauthn": junk}
        claims = running.phone.decision(entry, decision)
        if assertion == "none":
            return claims
        if assertion == "junk":
            return {**claims, "webauthn": junk}
        details = entry.get("authorization_details")
        if assertion == "other_transaction":
            challenge = uv_challenge(entry, authorization_details=details, nonce="another")
        else:
            challenge = uv_challenge(entry, authorization_details=details)
        made = running.phone.authenticator.get(challenge)
        if assertion == "authenticator_data":
            made["response"]["authenticatorData"] = b64url(raw)
        elif assertion == "signature":
            made["response"]["signature"] = b64url(raw)
        return {**claims, "webauthn": made}

    form = st.fixed_dictionaries(
        {},
        optional={
            "binding_message": st.sampled_from(BINDING_MESSAGES),
            "acr_values": st.sampled_from(ACR_VALUES),
            "authorization_details": st.sampled_from(PAYMENTS).map(json.dumps),
        },
    )
    return st.builds(
        partial,
        st.just(build),
        form,
        st.sampled_from(("approve", "approve", "deny", "not_me")),
        st.sampled_from(ASSERTIONS),
        JSON_VALUES,
        st.binary(max_size=80),
    )


def signed_device_body(server: Server, path: str) -> st.SearchStrategy[str | Deferred | None]:
    """A JWS signed by the seeded phone, to ``path``, over realistic and fuzzed claims."""
    extra = st.dictionaries(
        st.sampled_from(DEVICE_CLAIMS) | st.text(max_size=8), JSON_VALUES, max_size=3
    )

    def sign(claims: dict[str, Any] | ClaimsMaker, fuzzed: dict[str, Any]) -> str | Deferred | None:
        running = server()
        if running is None:  # no server yet: explicit examples are made while collecting
            return None
        if callable(claims):
            return Deferred(lambda: signed(running, claims(), fuzzed))
        return signed(running, claims, fuzzed)

    def signed(running: FuzzServer, claims: dict[str, Any], fuzzed: dict[str, Any]) -> str:
        payload = {**claims, **fuzzed}
        if path == "/device/remove" and payload.get("device_id") is None:
            payload["device_id"] = "another-device"
        return running.device_jws(path, payload)

    return st.builds(sign, realistic_claims(path, server), extra)


# The DPoP header a token request keeps as schemathesis generated it.
AS_GENERATED = "as generated"


def dpop_header(server: Server) -> st.SearchStrategy[str | None]:
    """A DPoP proof for /token by the relying party's key, None (no DPoP header), or
    :data:`AS_GENERATED`, a third each. The proof is made when drawn, so its iat is fresh."""

    def proof(_: object) -> str | None:
        running = server()
        return running.dpop_proof("/token") if running is not None else None

    return st.just(AS_GENERATED) | st.none() | st.just(None).map(proof)
