"""The ``signing_keys`` table: the server's own JWS keys, one active key per algorithm.

A key is ``active`` (signs), ``previous`` (superseded, still published so that
tokens it signed keep verifying) or ``retired`` (no longer published; its
private parameters are erased). The partial unique index
``signing_keys_one_active_per_alg`` makes "one active key per algorithm" a
database rule, so replicas creating keys at the same time cannot both win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable

# Serialises operator key changes across processes (a transaction-level advisory lock).
_CHANGE_LOCK = 0x6263_6B65_7973  # "bckeys"
# Private members of EC and RSA JWKs (RFC 7518 §6.2.2, §6.3.2) and the wrapped private
# JWK (backchannel/key_wrapping.py): erased on retirement.
_PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "wrapped"]


@dataclass(frozen=True)
class StoredSigningKey:
    kid: str
    alg: str
    private_jwk: dict[str, Any]
    status: str  # active | previous | retired
    created_at: datetime
    superseded_at: datetime | None
    retired_at: datetime | None


_COLUMNS = "kid, alg, private_jwk, status, created_at, superseded_at, retired_at"


def _key(row: asyncpg.Record) -> StoredSigningKey:
    return StoredSigningKey(**dict(row))


async def lock_signing_keys(conn: asyncpg.Connection) -> None:
    """Hold off other key changes until the current transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHANGE_LOCK)


async def select_active_algs(conn: Queryable) -> set[str]:
    rows = await conn.fetch("SELECT alg FROM signing_keys WHERE status = 'active'")
    return {r["alg"] for r in rows}


async def insert_active_key_unless_present(
    conn: asyncpg.Connection, kid: str, alg: str, private_jwk: dict[str, Any]
) -> bool:
    """Insert an active key for ``alg`` unless one exists; True if this call inserted it."""
    inserted = await conn.fetchval(
        """INSERT INTO signing_keys (kid, alg, private_jwk, status)
           VALUES ($1, $2, $3, 'active')
           ON CONFLICT (alg) WHERE status = 'active' DO NOTHING
           RETURNING kid""",
        kid,
        alg,
        private_jwk,
    )
    return inserted is not None


async def insert_active_key(
    conn: asyncpg.Connection, kid: str, alg: str, private_jwk: dict[str, Any]
) -> StoredSigningKey:
    """Insert an active key; fails with ``UniqueViolationError`` if ``alg`` has one."""
    row = await conn.fetchrow(
        f"""INSERT INTO signing_keys (kid, alg, private_jwk, status)
            VALUES ($1, $2, $3, 'active')
            RETURNING {_COLUMNS}""",
        kid,
        alg,
        private_jwk,
    )
    assert row is not None
    return _key(row)


async def supersede_active_key(conn: asyncpg.Connection, alg: str) -> StoredSigningKey | None:
    """Turn the active key of ``alg`` into a previous key; None if there was none."""
    row = await conn.fetchrow(
        f"""UPDATE signing_keys SET status = 'previous', superseded_at = now()
             WHERE alg = $1 AND status = 'active'
         RETURNING {_COLUMNS}""",
        alg,
    )
    return _key(row) if row else None


async def retire_previous_keys(
    conn: asyncpg.Connection, older_than_seconds: int
) -> list[StoredSigningKey]:
    """Stop publishing previous keys superseded more than ``older_than_seconds`` ago."""
    rows = await conn.fetch(
        f"""UPDATE signing_keys
               SET status = 'retired', retired_at = now(),
                   private_jwk = private_jwk - $2::text[]
             WHERE status = 'previous'
               AND superseded_at <= now() - make_interval(secs => $1)
         RETURNING {_COLUMNS}""",
        float(older_than_seconds),
        _PRIVATE_MEMBERS,
    )
    return [_key(r) for r in rows]


async def select_published_keys(
    conn: Queryable,
) -> list[StoredSigningKey]:
    """Active and previous keys, active first, then the most recently superseded."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM signing_keys
             WHERE status IN ('active', 'previous')
          ORDER BY status = 'active' DESC, superseded_at DESC NULLS FIRST, created_at DESC"""
    )
    return [_key(r) for r in rows]


async def select_signing_keys(
    conn: Queryable, algs: Sequence[str] | None = None
) -> list[StoredSigningKey]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM signing_keys
             WHERE $1::text[] IS NULL OR alg = ANY($1)
          ORDER BY alg, created_at, kid""",
        list(algs) if algs is not None else None,
    )
    return [_key(r) for r in rows]


async def update_private_jwk(
    conn: asyncpg.Connection, kid: str, private_jwk: dict[str, Any]
) -> None:
    """Store ``kid``'s private JWK anew (wrapped by ``backchannel keys wrap``)."""
    await conn.execute(
        "UPDATE signing_keys SET private_jwk = $2 WHERE kid = $1 AND status <> 'retired'",
        kid,
        private_jwk,
    )
