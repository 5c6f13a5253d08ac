"""The provider's signing keys from its ``jwks_uri`` (RFC 7517 §5, OIDC Core §10.1.1).

Kept as long as the answer's ``Cache-Control`` allows. A token naming a
``kid`` the cached set lacks makes the client fetch the set again (the
provider rotated its keys), at most once per ``refetch_interval``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from backchannel.rp.algorithms import key_fits
from backchannel.rp.errors import ProtocolError
from backchannel.rp.http_cache import CachedResource


@dataclass(frozen=True)
class PublishedKey:
    """One key of the set, with the ``kid``, ``use`` and ``alg`` it was published with."""

    key: Key
    kid: str | None
    use: str | None
    alg: str | None

    def fits(self, kid: str | None, alg: str) -> bool:
        if kid is not None and self.kid != kid:
            return False
        if self.use not in (None, "sig") or self.alg not in (None, alg):
            return False
        return key_fits(self.key, alg)


def parse_jwks(document: Mapping[str, Any]) -> tuple[PublishedKey, ...]:
    """The public keys of a JWK Set; keys of an unknown type or with private parts are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ProtocolError("the JWK Set has no keys list")
    keys: list[PublishedKey] = []
    for entry in entries:
        if not isinstance(entry, dict) or "d" in entry:
            continue  # a private key has no business in a published set
        try:
            key = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError):
            continue  # RFC 7517 §5: ignore what cannot be understood
        kid, use, alg = entry.get("kid"), entry.get("use"), entry.get("alg")
        keys.append(
            PublishedKey(
                key,
                kid if isinstance(kid, str) else None,
                use if isinstance(use, str) else None,
                alg if isinstance(alg, str) else None,
            )
        )
    return tuple(keys)


class ProviderKeys:
    """Finds the keys that may have signed a token, refetching once for an unknown ``kid``."""

    def __init__(self, resource: CachedResource[tuple[PublishedKey, ...]]) -> None:
        self._resource = resource

    async def candidates(self, kid: str | None, alg: str) -> Sequence[Key]:
        found = self._matching(await self._resource.get(), kid, alg)
        if found or kid is None:
            return found
        refetched = await self._resource.refresh()
        return self._matching(refetched, kid, alg) if refetched is not None else ()

    @staticmethod
    def _matching(keys: Sequence[PublishedKey], kid: str | None, alg: str) -> list[Key]:
        return [k.key for k in keys if k.fits(kid, alg)]
