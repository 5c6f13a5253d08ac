"""Private keys at rest, wrapped under the operator's key-encryption key (docs/operations.md).

With ``BACKCHANNEL_KEY_ENCRYPTION_KEY`` set (32 random bytes, base64url), every
private key the service stores (signing JWKs, VAPID keys) is written wrapped
with AES-256-GCM:

    bcwrap1.<KEK id>.<nonce>.<ciphertext>      (base64url parts, no padding)

The associated data names the row (``signing_keys:<kid>``), so a wrapped key
copied to another row does not unwrap. The KEK id (the first 48 bits of
SHA-256 of the KEK) says which KEK wrapped a value, so a wrong KEK is reported
as such rather than as corrupt data. Values stored before a KEK was set are
read as they are, and ``backchannel keys wrap`` rewrites them wrapped. Without
a KEK nothing is wrapped, and a wrapped value cannot be read: the service
refuses to start rather than run without its keys.

Changing the KEK: the new one becomes ``BACKCHANNEL_KEY_ENCRYPTION_KEY`` and
the old one goes to ``BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS``, which is only
read to unwrap; ``backchannel keys wrap`` then rewraps every key under the new
one, after which the old one can be dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "bcwrap1."
KEK_BYTES = 32
NONCE_BYTES = 12
# The member of a stored JWK that carries the wrapped private JWK; erased on retirement.
WRAPPED_MEMBER = "wrapped"
# Members a stored wrapped JWK keeps in clear: enough to publish the public key.
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use")


class KeySettings(Protocol):
    """The settings this module reads (``backchannel.settings.Settings`` has them)."""

    @property
    def key_encryption_key(self) -> str | None: ...

    @property
    def key_encryption_keys_previous(self) -> tuple[str, ...]: ...


class KeyWrapError(RuntimeError):
    """A stored private key cannot be read with the configured key-encryption key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_kek(text: str) -> bytes:
    """The KEK from its base64url text; ValueError unless it is exactly 32 bytes."""
    try:
        kek = _unb64(text.strip())
    except ValueError:
        raise ValueError("must be base64url") from None
    if len(kek) != KEK_BYTES:
        raise ValueError(f"must be {KEK_BYTES} bytes (base64url), got {len(kek)}")
    return kek


def new_kek() -> str:
    """A fresh KEK as the setting wants it."""
    return _b64(os.urandom(KEK_BYTES))


def is_wrapped(value: str) -> bool:
    return value.startswith(PREFIX)


def kek_id_of(kek: bytes) -> str:
    return _b64(hashlib.sha256(kek).digest()[:6])


class KeyWrapper:
    """Wraps under ``kek`` and unwraps under it or one of ``previous``; with no KEK,
    stores keys as they are."""

    def __init__(self, kek: bytes | None, previous: Sequence[bytes] = ()) -> None:
        self._aead = AESGCM(kek) if kek is not None else None
        self.kek_id = kek_id_of(kek) if kek is not None else None
        self._unwrappers = {kek_id_of(k): AESGCM(k) for k in previous}
        if kek is not None and self.kek_id is not None:
            self._unwrappers[self.kek_id] = AESGCM(kek)

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyWrapper:
        current = settings.key_encryption_key
        previous = [parse_kek(text) for text in settings.key_encryption_keys_previous]
        return cls(parse_kek(current) if current else None, previous)

    @property
    def wraps(self) -> bool:
        return self._aead is not None

    def wrap(self, plaintext: str, row: str) -> str:
        """``plaintext`` as stored for ``row`` (e.g. ``vapid_keys:<kid>``)."""
        if self._aead is None:
            return plaintext
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), row.encode("utf-8"))
        return f"{PREFIX}{self.kek_id}.{_b64(nonce)}.{_b64(sealed)}"

    def wrap_json(self, value: Any, row: str) -> str:
        """Any JSON value as stored for ``row``; its JSON text never looks wrapped, so
        without a KEK a value that happens to start with the prefix still reads back."""
        return self.wrap(json.dumps(value, separators=(",", ":")), row)

    def unwrap_json(self, stored: str, row: str) -> Any:
        return json.loads(self.unwrap(stored, row))

    def wrapped_by_current(self, stored: str) -> bool:
        """Whether ``stored`` is wrapped under the current KEK (nothing to rewrap)."""
        return is_wrapped(stored) and stored[len(PREFIX) :].split(".", 1)[0] == self.kek_id

    def unwrap(self, stored: str, row: str) -> str:
        """The plaintext of a stored value (returned as is when it was never wrapped)."""
        if not is_wrapped(stored):
            return stored
        try:
            kek_id, nonce, sealed = stored[len(PREFIX) :].split(".")
        except ValueError:
            raise KeyWrapError(f"{row}: malformed wrapped key") from None
        aead = self._unwrappers.get(kek_id)
        if aead is None:
            if self._aead is None:
                raise KeyWrapError(
                    f"{row} is stored wrapped; set BACKCHANNEL_KEY_ENCRYPTION_KEY to the key "
                    "that wrapped it"
                )
            raise KeyWrapError(
                f"{row} was wrapped by another key-encryption key (id {kek_id}, "
                f"configured {self.kek_id}); list it in BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS"
            )
        try:
            plain = aead.decrypt(_unb64(nonce), _unb64(sealed), row.encode("utf-8"))
        except (InvalidTag, ValueError):
            raise KeyWrapError(f"{row}: the wrapped key does not verify") from None
        return plain.decode("utf-8")

    # -- private JWKs (signing_keys.private_jwk)

    def wrap_jwk(self, private_jwk: dict[str, Any]) -> dict[str, Any]:
        """The JWK as stored: public members in clear, the whole private JWK wrapped."""
        if self._aead is None:
            return private_jwk
        row = f"signing_keys:{private_jwk['kid']}"
        stored = {k: private_jwk[k] for k in _PUBLIC_MEMBERS if k in private_jwk}
        stored[WRAPPED_MEMBER] = self.wrap(json.dumps(private_jwk, sort_keys=True), row)
        return stored

    def unwrap_jwk(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The private JWK of a stored one (as is when it was never wrapped)."""
        wrapped = stored.get(WRAPPED_MEMBER)
        if wrapped is None:
            return stored
        private: dict[str, Any] = json.loads(self.unwrap(wrapped, f"signing_keys:{stored['kid']}"))
        if private.get("kid") != stored.get("kid"):
            raise KeyWrapError(f"signing_keys:{stored.get('kid')}: wrapped key has another kid")
        return private


NO_WRAPPING = KeyWrapper(None)  # no key-encryption key configured: stored as they are
