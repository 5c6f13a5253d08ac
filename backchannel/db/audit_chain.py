"""The sealed audit chain (``audit_events.seq/prev_hash/hash``, ``audit_chain_head``),
the audit listing, and the ``approval_receipts`` table.

One statement per function; the hashing itself lives in :mod:`backchannel.audit.chain`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from backchannel.db.pool import Queryable

# Sealers on every replica and `backchannel audit seal` take turns on this
# transaction-level advisory lock ("bcaudt").
SEALER_LOCK = 0x6263_6175_6474

_EVENT_COLUMNS = (
    "id, at, event, client_id, user_id, auth_request_id, device_id, detail, seq, prev_hash, hash"
)


class AuditRow(NamedTuple):
    """One ``audit_events`` row; ``seq``, ``prev_hash`` and ``hash`` are None until sealed.

    A named tuple built straight from the record: the sealer reads thousands at a time.
    """

    id: int
    at: datetime
    event: str
    client_id: str | None
    user_id: int | None
    auth_request_id: int | None
    device_id: str | None
    detail: Any
    seq: int | None
    prev_hash: bytes | None
    hash: bytes | None


@dataclass(frozen=True)
class ChainHead:
    """The newest seal recorded (seq 0 and 32 zero bytes before the first)."""

    seq: int
    hash: bytes
    sealed_at: datetime | None


@dataclass(frozen=True)
class Seal:
    id: int
    seq: int
    prev_hash: bytes
    hash: bytes


def _row(record: asyncpg.Record) -> AuditRow:
    return AuditRow(*record)  # the columns of _EVENT_COLUMNS, in the fields' order


async def try_lock_sealer(conn: asyncpg.Connection) -> bool:
    """Become the only sealer until the current transaction ends, unless another one is."""
    locked: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SEALER_LOCK)
    return locked


async def select_chain_head(conn: asyncpg.Connection) -> ChainHead:
    row = await conn.fetchrow("SELECT seq, hash, sealed_at FROM audit_chain_head")
    if row is None:
        raise RuntimeError("audit_chain_head is empty: the table was tampered with")
    return ChainHead(row["seq"], bytes(row["hash"]), row["sealed_at"])


async def select_unsealed_events(conn: asyncpg.Connection, limit: int) -> list[AuditRow]:
    """The oldest unsealed rows whose transactions have committed, in id order."""
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT $1",
        limit,
    )
    return [_row(r) for r in rows]


async def update_seals(conn: asyncpg.Connection, seals: Sequence[Seal]) -> int:
    """Seal the rows named in ``seals`` that are still unsealed; how many were sealed."""
    result: str = await conn.execute(
        """UPDATE audit_events a
              SET seq = s.seq, prev_hash = s.prev_hash, hash = s.hash
             FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])
                  AS s (id, seq, prev_hash, hash)
            WHERE a.id = s.id AND a.seq IS NULL""",
        [s.id for s in seals],
        [s.seq for s in seals],
        [s.prev_hash for s in seals],
        [s.hash for s in seals],
    )
    return int(result.rsplit(" ", 1)[1])


async def advance_chain_head(
    conn: asyncpg.Connection, *, from_seq: int, to_seq: int, hash: bytes
) -> bool:
    """Move the head from ``from_seq`` to ``to_seq``; False if it was not at ``from_seq``."""
    moved = await conn.fetchval(
        """UPDATE audit_chain_head SET seq = $2, hash = $3, sealed_at = now()
            WHERE seq = $1 RETURNING true""",
        from_seq,
        to_seq,
        hash,
    )
    return moved is True


async def sealed_events(conn: asyncpg.Connection, *, prefetch: int) -> AsyncIterator[AuditRow]:
    """Every sealed row in seq order, streamed through a server-side cursor.

    Must run inside a transaction (ideally REPEATABLE READ, for one snapshot).
    """
    cursor = conn.cursor(
        f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE seq IS NOT NULL ORDER BY seq",
        prefetch=prefetch,
    )
    async for record in cursor:
        yield _row(record)


async def select_sealed_row(conn: asyncpg.Connection, seq: int) -> AuditRow | None:
    row = await conn.fetchrow(f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE seq = $1", seq)
    return _row(row) if row is not None else None


async def select_unsealed_summary(conn: asyncpg.Connection) -> tuple[int, datetime | None]:
    """How many rows await sealing, and the time of the oldest."""
    row = await conn.fetchrow("SELECT count(*), min(at) FROM audit_events WHERE seq IS NULL")
    assert row is not None
    return int(row[0]), row[1]


# --- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedEvent:
    row: AuditRow
    subject: str | None


async def select_events_filtered(
    conn: asyncpg.Connection,
    *,
    user_id: int | None = None,
    client_id: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[ListedEvent]:
    """The newest ``limit`` events matching every filter given, newest first.

    ``since`` is inclusive, ``until`` exclusive.
    """
    columns = ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
    rows = await conn.fetch(
        f"""SELECT {columns}, u.subject
              FROM audit_events e LEFT JOIN users u ON u.user_id = e.user_id
             WHERE ($1::bigint IS NULL OR e.user_id = $1)
               AND ($2::text IS NULL OR e.client_id = $2)
               AND ($3::text IS NULL OR e.event = $3)
               AND ($4::timestamptz IS NULL OR e.at >= $4)
               AND ($5::timestamptz IS NULL OR e.at < $5)
          ORDER BY e.id DESC
             LIMIT $6""",
        user_id,
        client_id,
        event,
        since,
        until,
        limit,
    )
    listed = []
    for r in rows:
        data = dict(r)
        subject = data.pop("subject")
        listed.append(ListedEvent(AuditRow(**data), subject))
    return listed


# --- approval receipts -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredReceipt:
    """An approval receipt with what it is about: the request, its client and user."""

    auth_request_id: int
    id_hash: bytes
    client_id: str
    subject: str
    device_id: str
    device_name: str
    decision: str
    decided_at: datetime
    shown: dict[str, Any]
    device_jws: str
    device_public_jwk: dict[str, Any]
    created_at: datetime
    # The WebAuthn assertion of an approval with user verification (docs/audit.md).
    user_verification: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReceiptSubject:
    """The request a stored receipt is about."""

    id_hash: bytes
    client_id: str
    user_id: int


async def insert_approval_receipt(
    conn: asyncpg.Connection,
    *,
    auth_request_id: int,
    device_id: str,
    decision: str,
    shown: Mapping[str, Any],
    device_jws: str,
    device_public_jwk: Mapping[str, Any],
    user_verification: Mapping[str, Any] | None = None,
    audit_detail: Mapping[str, Any] | None = None,
    id_hash: bytes | None = None,
    client_id: str | None = None,
) -> ReceiptSubject | None:
    """Store a receipt, timed by the request's decision; None if there is no such request
    (or, when ``id_hash`` or ``client_id`` are given, none with those).

    With ``audit_detail``, the ``approval_receipt_stored`` audit row is written by
    the same statement.
    """
    row = await conn.fetchrow(
        """WITH ar AS (
               SELECT id, id_hash, client_id, user_id, decided_at
                 FROM auth_requests
                WHERE id = $1 AND ($9::bytea IS NULL OR id_hash = $9)
                  AND ($10::text IS NULL OR client_id = $10)
           ), ins AS (
               INSERT INTO approval_receipts
                      (auth_request_id, device_id, device_name, decision, decided_at, shown,
                       device_jws, device_public_jwk, user_verification)
               SELECT ar.id, $2, coalesce(d.name, ''), $3, coalesce(ar.decided_at, now()),
                      $4, $5, $6, $7
                 FROM ar LEFT JOIN devices d ON d.device_id = $2
            RETURNING auth_request_id
           ), audit AS (
               INSERT INTO audit_events (event, client_id, user_id, auth_request_id, device_id,
                                         detail)
               SELECT 'approval_receipt_stored', ar.client_id, ar.user_id, ar.id, $2, $8::jsonb
                 FROM ar JOIN ins ON ins.auth_request_id = ar.id
                WHERE $8::jsonb IS NOT NULL
           )
           SELECT ar.id_hash, ar.client_id, ar.user_id
             FROM ar JOIN ins ON ins.auth_request_id = ar.id""",
        auth_request_id,
        device_id,
        decision,
        dict(shown),
        device_jws,
        dict(device_public_jwk),
        dict(user_verification) if user_verification is not None else None,
        dict(audit_detail) if audit_detail is not None else None,
        id_hash,
        client_id,
    )
    return ReceiptSubject(bytes(row["id_hash"]), row["client_id"], row["user_id"]) if row else None


_RECEIPT_SELECT = """
SELECT r.auth_request_id, ar.id_hash, ar.client_id, u.subject, r.device_id, r.device_name,
       r.decision, r.decided_at, r.shown, r.device_jws, r.device_public_jwk, r.created_at,
       r.user_verification
  FROM approval_receipts r
  JOIN auth_requests ar ON ar.id = r.auth_request_id
  JOIN users u ON u.user_id = ar.user_id
"""


async def select_receipt_for_client(
    conn: Queryable, id_hash: bytes, client_id: str
) -> StoredReceipt | None:
    """The receipt of the request ``id_hash`` names, only if ``client_id`` made it."""
    row = await conn.fetchrow(
        _RECEIPT_SELECT + " WHERE ar.id_hash = $1 AND ar.client_id = $2", id_hash, client_id
    )
    return StoredReceipt(**dict(row)) if row is not None else None


async def select_receipt(
    conn: asyncpg.Connection,
    *,
    auth_request_id: int | None = None,
    id_hash: bytes | None = None,
) -> StoredReceipt | None:
    """The receipt of a request named by its row id or its id_hash (exactly one)."""
    if (auth_request_id is None) == (id_hash is None):
        raise ValueError("name the request by auth_request_id or by id_hash")
    row = await conn.fetchrow(
        _RECEIPT_SELECT
        + " WHERE ($1::bigint IS NULL OR r.auth_request_id = $1)"
        + " AND ($2::bytea IS NULL OR ar.id_hash = $2)",
        auth_request_id,
        id_hash,
    )
    return StoredReceipt(**dict(row)) if row is not None else None
