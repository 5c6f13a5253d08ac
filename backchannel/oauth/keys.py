"""The server's signing keys: one active key per algorithm, previous keys still published.

``KeyStore`` is the per-replica, in-memory view used to sign and verify. It is
loaded at start (creating any missing key) and reloaded when a ``keys`` event
arrives on the ``bc_config`` channel, which every key change below sends in
the transaction that makes it. Key ids are RFC 7638 thumbprints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from joserfc import jwk

from backchannel.db.audit import insert_audit_event
from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.db.pool import ConnectionPool
from backchannel.db.signing_keys import (
    StoredSigningKey,
    insert_active_key,
    insert_active_key_unless_present,
    lock_signing_keys,
    retire_previous_keys,
    select_active_algs,
    select_published_keys,
    select_signing_keys,
    supersede_active_key,
)
from backchannel.key_wrapping import WRAPPED_MEMBER, KeyWrapper
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.settings import Settings

log = logging.getLogger(__name__)

KEYS_EVENT = "keys"


@dataclass(frozen=True)
class SigningKeyInfo:
    """What an operator may see of a signing key: never its private parameters."""

    kid: str
    alg: str
    status: str
    created_at: datetime
    superseded_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def of(cls, stored: StoredSigningKey) -> SigningKeyInfo:
        return cls(
            kid=stored.kid,
            alg=stored.alg,
            status=stored.status,
            created_at=stored.created_at,
            superseded_at=stored.superseded_at,
            retired_at=stored.retired_at,
        )

    def to_json(self) -> dict[str, Any]:
        def iso(at: datetime | None) -> str | None:
            return at.isoformat() if at else None

        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status,
            "created_at": iso(self.created_at),
            "superseded_at": iso(self.superseded_at),
            "retired_at": iso(self.retired_at),
        }


def new_private_jwk(alg: str) -> dict[str, Any]:
    """A fresh private JWK for ``alg`` with kid (RFC 7638 thumbprint), alg and use."""
    key: jwk.Key
    if alg == "ES256":
        key = jwk.ECKey.generate_key("P-256", private=True)
    elif alg in ("PS256", "RS256"):
        key = jwk.RSAKey.generate_key(2048, private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    data: dict[str, Any] = dict(key.as_dict(private=True))
    data.update(kid=key.thumbprint(), alg=alg, use="sig")
    return data


class KeyStore:
    """This replica's signing keys; swapped as a whole on reload."""

    def __init__(self, pool: ConnectionPool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._wrapper = KeyWrapper.from_settings(settings)
        self._active: dict[str, jwk.Key] = {}
        self._published: list[jwk.Key] = []
        self._keyset = jwk.KeySet([])
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_wanted = False

    @classmethod
    async def load(cls, pool: ConnectionPool, settings: Settings) -> KeyStore:
        store = cls(pool, settings)
        await store.reload()
        return store

    async def reload(self) -> None:
        """Create any missing active key, then read active and previous keys."""
        async with self._pool.acquire() as conn:
            await ensure_active_keys(conn, SIGNING_ALGS, self._wrapper)
            stored = await select_published_keys(conn)
        self._install(stored)

    def _install(self, stored: list[StoredSigningKey]) -> None:
        active: dict[str, jwk.Key] = {}
        published: list[jwk.Key] = []
        unwrapped = [r.kid for r in stored if WRAPPED_MEMBER not in r.private_jwk]
        if self._wrapper.wraps and unwrapped:
            log.warning(
                "signing keys %s are stored unwrapped; run `backchannel keys wrap`",
                ", ".join(unwrapped),
            )
        for row in stored:
            key = jwk.import_key(self._wrapper.unwrap_jwk(row.private_jwk))
            if row.status == "active":
                active[row.alg] = key
            published.append(key)
        missing = set(SIGNING_ALGS) - set(active)
        if missing:  # impossible after ensure_active_keys unless the table was edited by hand
            raise RuntimeError(f"no active signing key for {', '.join(sorted(missing))}")
        public = [jwk.import_key(key.as_dict(private=False)) for key in published]
        self._active, self._published, self._keyset = active, published, jwk.KeySet(public)

    def signing_key(self, alg: str) -> jwk.Key:
        """The active private key for ``alg`` (its ``kid`` set)."""
        try:
            return self._active[alg]
        except KeyError:
            raise ValueError(f"no signing key for algorithm {alg!r}") from None

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set to publish (RFC 7517 §5): active and previous public keys."""
        return {"keys": [dict(key.as_dict(private=False)) for key in self._published]}

    def public_keyset(self) -> jwk.KeySet:
        """Public keys for verifying tokens this server signed, previous keys included."""
        return self._keyset

    def on_config_event(self, payload: str) -> None:
        """``bc_config`` handler: a ``keys`` event schedules a reload."""
        if payload == KEYS_EVENT:
            self.schedule_reload()

    def schedule_reload(self) -> None:
        """Reload in the background (also after a LISTEN reconnect: events may be lost)."""
        self._reload_wanted = True
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.get_running_loop().create_task(
                self._reload_while_wanted(), name="keystore-reload"
            )

    async def _reload_while_wanted(self) -> None:
        # An event arriving during a reload may describe a change that reload missed.
        while self._reload_wanted:
            self._reload_wanted = False
            try:
                await self.reload()
            except Exception:  # a failed reload must not kill the replica
                log.exception("reloading signing keys failed; keeping the current keys")

    async def wait_reloaded(self) -> None:
        """Wait for a scheduled reload to finish (tests)."""
        if self._reload_task is not None:
            await asyncio.shield(self._reload_task)

    async def close(self) -> None:
        """Cancel a reload in flight (at shutdown, before the pool closes)."""
        self._reload_wanted = False
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload_task


async def ensure_active_keys(
    conn: asyncpg.Connection, algs: Sequence[str], wrapper: KeyWrapper
) -> list[str]:
    """Create an active key for each of ``algs`` lacking one; return the algs created here.

    Safe against other replicas doing the same: the insert yields to the partial
    unique index, so the first committed key wins and the others are discarded.
    """
    present = await select_active_algs(conn)
    missing = [alg for alg in dict.fromkeys(algs) if alg not in present]
    created: list[str] = []
    for alg in missing:
        data = await asyncio.to_thread(new_private_jwk, alg)
        async with conn.transaction():
            stored = wrapper.wrap_jwk(data)
            if await insert_active_key_unless_present(conn, data["kid"], alg, stored):
                await notify(conn, CONFIG_CHANNEL, KEYS_EVENT)
                created.append(alg)
    if created:
        log.info("created signing keys for %s", ", ".join(created))
    return created


async def generate_signing_key(
    conn: asyncpg.Connection, alg: str, wrapper: KeyWrapper, *, actor: str = "operator"
) -> SigningKeyInfo:
    """Make a new active key for ``alg``; the former active key becomes previous.
    Audited ``signing_key_created``."""
    if alg not in SIGNING_ALGS:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    data = await asyncio.to_thread(new_private_jwk, alg)
    async with conn.transaction():
        await lock_signing_keys(conn)
        await supersede_active_key(conn, alg)
        stored = await insert_active_key(conn, data["kid"], alg, wrapper.wrap_jwk(data))
        await notify(conn, CONFIG_CHANNEL, KEYS_EVENT)
        await insert_audit_event(
            conn, "signing_key_created", detail={"actor": actor, "kid": stored.kid, "alg": alg}
        )
    return SigningKeyInfo.of(stored)


async def rotate_signing_keys(
    conn: asyncpg.Connection,
    wrapper: KeyWrapper,
    algs: Sequence[str] | None = None,
    *,
    actor: str = "operator",
) -> list[SigningKeyInfo]:
    """Replace the active key of each of ``algs`` (default: all), in one transaction."""
    chosen = list(SIGNING_ALGS if algs is None else algs)
    unknown = [alg for alg in chosen if alg not in SIGNING_ALGS]
    if unknown:
        raise ValueError(f"unsupported signing algorithm(s): {', '.join(unknown)}")
    async with conn.transaction():
        return [
            await generate_signing_key(conn, alg, wrapper, actor=actor)
            for alg in dict.fromkeys(chosen)
        ]


async def retire_signing_keys(
    conn: asyncpg.Connection, older_than_seconds: int, *, actor: str = "operator"
) -> list[SigningKeyInfo]:
    """Stop publishing previous keys superseded more than ``older_than_seconds`` ago.
    Audited ``signing_keys_retired``."""
    if older_than_seconds < 0:
        raise ValueError("older_than_seconds must not be negative")
    async with conn.transaction():
        await lock_signing_keys(conn)
        retired = await retire_previous_keys(conn, older_than_seconds)
        if retired:
            await notify(conn, CONFIG_CHANNEL, KEYS_EVENT)
            await insert_audit_event(
                conn,
                "signing_keys_retired",
                detail={"actor": actor, "kids": [k.kid for k in retired]},
            )
    return [SigningKeyInfo.of(k) for k in retired]


async def list_signing_keys(conn: asyncpg.Connection) -> list[SigningKeyInfo]:
    return [SigningKeyInfo.of(k) for k in await select_signing_keys(conn)]
