"""Device public keys parsed once: a device signs every call with the same P-256 key.

Keyed by the JWK's own members (canonical JSON), so a cached key is the key
those members describe and never needs invalidating; the cache only bounds
how many are kept. Whether the device may still call is the database's
answer on every call, not this cache's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from joserfc.jwk import ECKey

KEYS_KEPT = 4096


def import_ec_key(public_jwk: Mapping[str, Any]) -> ECKey:
    """``ECKey.import_key(public_jwk)``, parsed once per distinct JWK; raises as it does."""
    return _import(json.dumps(dict(public_jwk), sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=KEYS_KEPT)
def _import(canonical: str) -> ECKey:
    return ECKey.import_key(json.loads(canonical))


def cache_clear() -> None:
    """Forget every parsed key (tests)."""
    _import.cache_clear()
