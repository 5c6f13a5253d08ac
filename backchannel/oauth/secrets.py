"""Random identifiers and their stored form.

Every one-time identifier and secret handed out (auth_req_id, refresh token,
client secret, enrolment code) is 256 bits from ``secrets`` in the
``[A-Za-z0-9_-]`` alphabet; only its SHA-256 is stored. A plain hash is enough
because the values are uniformly random and far too long to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random value with ``8 * nbytes`` bits of entropy."""
    return secrets.token_urlsafe(nbytes)


def new_identifier(nbytes: int = 16) -> str:
    """A random URL-safe identifier that never starts with ``-``, so that an operator
    can pass it to the command line as it is (``device remove ID``)."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def hash_secret(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def secret_matches(value: str, stored_hash: bytes | None) -> bool:
    """Constant-time check of ``value`` against a stored SHA-256."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(value), stored_hash)
