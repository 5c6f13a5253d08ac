"""What the fuzzing sends besides schemathesis' own data: realistic values and signed bodies.

A quarter of the positive cases keep the body schemathesis made from the
document. In the others a form gets values a relying party would send (a
known scope, a login hint naming a seeded user, a grant type), so that
requests pass client authentication and validation and reach the database;
and a device body is a real JWS signed by the seeded phone over partly fuzzed
claims, so that the device API is explored past the signature check.
Negative cases stay as schemathesis made them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from hypothesis import strategies as st

from backchannel.db.clients import CIBA_GRANT
from tests.contract.fuzz_server import LOGIN_HINTS, FuzzServer

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
                "acr_values": mostly(st.sampled_from(("urn:acr:loa2", "loa1 loa2")), _text(30)),
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
)


def _from_now(seconds: int) -> int:
    return int(time.time()) + seconds


def realistic_claims(path: str) -> st.SearchStrategy[dict[str, Any]]:
    hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
    if path == "/device/decision":
        return st.fixed_dictionaries(
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


def signed_device_body(
    server: Callable[[], FuzzServer | None], path: str
) -> st.SearchStrategy[str | None]:
    """A JWS signed by the seeded phone, to ``path``, over realistic and fuzzed claims."""
    extra = st.dictionaries(
        st.sampled_from(DEVICE_CLAIMS) | st.text(max_size=8), JSON_VALUES, max_size=3
    )

    def sign(claims: dict[str, Any], fuzzed: dict[str, Any]) -> str | None:
        running = server()
        if running is None:  # no server yet: explicit examples are made while collecting
            return None
        payload = {**claims, **fuzzed}
        if path == "/device/remove" and payload.get("device_id") is None:
            payload["device_id"] = "another-device"
        return running.device_jws(path, payload)

    return st.builds(sign, realistic_claims(path), extra)
