"""The hash chain over ``audit_events``: sealing rows and verifying the chain (docs/audit.md).

Each sealed row has a ``seq`` (1, 2, 3, … in seal order) and

    hash = SHA-256(prev_hash || canonical_event(row))

where ``prev_hash`` is the hash of the row at ``seq - 1`` (32 zero bytes for
seq 1). Changing, removing or reordering a sealed row changes a hash that a
later row, or the recorded chain head, depends on; :func:`verify_chain` finds
where.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from backchannel.db.audit_chain import (
    AuditRow,
    Seal,
    advance_chain_head,
    sealed_events,
    select_chain_head,
    select_unsealed_events,
    select_unsealed_summary,
    try_lock_sealer,
    update_seals,
)

GENESIS_HASH = bytes(32)
SEAL_BATCH = 1000
MAX_PROBLEMS = 100


class SealConflict(RuntimeError):
    """Rows or the head changed under the sealer: the batch is rolled back."""


def canonical_event(row: AuditRow, seq: int) -> bytes:
    """The bytes a row's hash covers: a JSON array, UTF-8, no whitespace, sorted keys.

    ``[seq, id, at, event, client_id, user_id, auth_request_id, device_id, detail]``
    with ``at`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six digits).
    """
    detail = json.loads(row.detail) if isinstance(row.detail, str) else row.detail
    record = [
        seq,
        row.id,
        format_timestamp(row.at),
        row.event,
        row.client_id,
        row.user_id,
        row.auth_request_id,
        row.device_id,
        detail,
    ]
    return _CANONICAL_JSON.encode(record).encode("utf-8")


# json.dumps with these options builds an encoder on every call; the sealer hashes
# thousands of rows a second.
_CANONICAL_JSON = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def format_timestamp(at: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC."""
    u = at if at.tzinfo is UTC else at.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - the fastest form
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond,
    )  # fmt: skip


def chain_hash(prev_hash: bytes, row: AuditRow, seq: int) -> bytes:
    return hashlib.sha256(prev_hash + canonical_event(row, seq)).digest()


# --- sealing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealResult:
    """``sealed`` rows now end at ``head_seq``; ``busy`` when another sealer held the lock."""

    sealed: int
    head_seq: int | None
    busy: bool = False


async def seal_batch(conn: asyncpg.Connection, *, limit: int = SEAL_BATCH) -> SealResult:
    """Seal up to ``limit`` committed, unsealed rows, in id order, in one transaction.

    Rows whose inserting transactions have not committed yet are invisible
    here; they are sealed by a later batch, after the rows sealed now.
    """
    async with conn.transaction():
        if not await try_lock_sealer(conn):
            return SealResult(0, None, busy=True)
        head = await select_chain_head(conn)
        rows = await select_unsealed_events(conn, limit)
        if not rows:
            return SealResult(0, head.seq)
        seals: list[Seal] = []
        seq, prev_hash = head.seq, head.hash
        for row in rows:
            seq += 1
            digest = chain_hash(prev_hash, row, seq)
            seals.append(Seal(row.id, seq, prev_hash, digest))
            prev_hash = digest
        if await update_seals(conn, seals) != len(seals):
            raise SealConflict("rows were sealed by someone else meanwhile")
        if not await advance_chain_head(conn, from_seq=head.seq, to_seq=seq, hash=prev_hash):
            raise SealConflict("the chain head moved meanwhile")
        return SealResult(len(seals), seq)


async def seal_pending(conn: asyncpg.Connection, *, batch_size: int = SEAL_BATCH) -> SealResult:
    """Seal batches until none is full (or another sealer holds the lock)."""
    total, head_seq = 0, None
    while True:
        result = await seal_batch(conn, limit=batch_size)
        if result.busy:
            return SealResult(total, head_seq, busy=total == 0)
        total += result.sealed
        head_seq = result.head_seq
        if result.sealed < batch_size:
            return SealResult(total, head_seq)


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    """Where the chain breaks. ``kind`` is one of:

    - ``hash_mismatch``: the row at ``seq`` no longer hashes to its stored hash
      (its content or seq was changed after sealing);
    - ``broken_link``: its ``prev_hash`` is not the hash of the row before it,
      ``after_seq`` (rows reordered, replaced, or re-chained);
    - ``gap``: seqs after ``after_seq`` up to ``seq`` are missing (rows deleted);
    - ``head_mismatch``: the last sealed row is not the recorded chain head
      (rows removed from the end, or the head edited);
    - ``anchor_mismatch``: the row at an externally recorded seq has another hash.
    """

    kind: str
    message: str
    seq: int | None = None
    id: int | None = None
    after_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seq": self.seq,
            "id": self.id,
            "after_seq": self.after_seq,
            "message": self.message,
        }


@dataclass
class ChainReport:
    """The outcome of :func:`verify_chain`; ``problems`` holds at most the first 100."""

    checked: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS_HASH
    head_seq: int = 0
    head_hash: bytes = GENESIS_HASH
    problems: list[ChainProblem] = field(default_factory=list)
    problem_count: int = 0
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: ChainProblem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "checked": self.checked,
            "last": {"seq": self.last_seq, "hash": self.last_hash.hex()},
            "recorded_head": {"seq": self.head_seq, "hash": self.head_hash.hex()},
            "problem_count": self.problem_count,
            "problems": [p.to_json() for p in self.problems],
            "unsealed": {
                "count": self.unsealed,
                "oldest_at": self.oldest_unsealed_at.isoformat()
                if self.oldest_unsealed_at
                else None,
            },
        }


async def verify_chain(
    conn: asyncpg.Connection,
    *,
    anchors: Mapping[int, bytes] | None = None,
    prefetch: int = 1000,
) -> ChainReport:
    """Walk the sealed rows in seq order, recompute every hash and check every link.

    One REPEATABLE READ snapshot, streamed through a server-side cursor: memory
    stays constant however long the chain. ``anchors`` maps seqs to hashes
    recorded elsewhere earlier (``audit verify`` prints the head to record).
    """
    report = ChainReport()
    expected_anchors = dict(anchors or {})
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await select_chain_head(conn)
        report.head_seq, report.head_hash = head.seq, head.hash
        prev_seq, prev_hash = 0, GENESIS_HASH
        async for row in sealed_events(conn, prefetch=prefetch):
            _check_row(report, row, prev_seq, prev_hash)
            assert row.seq is not None and row.hash is not None
            anchor = expected_anchors.pop(row.seq, None)
            if anchor is not None and not hmac.compare_digest(anchor, row.hash):
                report.add(
                    ChainProblem(
                        "anchor_mismatch",
                        f"seq {row.seq} (id {row.id}) has hash {row.hash.hex()}, "
                        f"but {anchor.hex()} was recorded for it",
                        seq=row.seq,
                        id=row.id,
                    )
                )
            report.checked += 1
            prev_seq, prev_hash = row.seq, row.hash
        report.last_seq, report.last_hash = prev_seq, prev_hash
        _check_head(report)
        for seq in sorted(expected_anchors):
            report.add(
                ChainProblem(
                    "anchor_mismatch",
                    f"seq {seq} was recorded, but the chain has no such row",
                    seq=seq,
                )
            )
        report.unsealed, report.oldest_unsealed_at = await select_unsealed_summary(conn)
    return report


def _check_row(report: ChainReport, row: AuditRow, prev_seq: int, prev_hash: bytes) -> None:
    assert row.seq is not None and row.prev_hash is not None and row.hash is not None
    if row.seq != prev_seq + 1:
        missing = (
            f"seq {prev_seq + 1}"
            if row.seq == prev_seq + 2
            else f"seqs {prev_seq + 1}..{row.seq - 1}"
        )
        report.add(
            ChainProblem(
                "gap",
                f"{missing} missing after seq {prev_seq}: rows were deleted "
                f"(the chain resumes at seq {row.seq}, id {row.id})",
                seq=row.seq,
                id=row.id,
                after_seq=prev_seq,
            )
        )
    elif not hmac.compare_digest(row.prev_hash, prev_hash):
        report.add(
            ChainProblem(
                "broken_link",
                f"seq {row.seq} (id {row.id}) does not follow seq {prev_seq}: its prev_hash "
                "is not that row's hash (rows reordered or replaced)",
                seq=row.seq,
                id=row.id,
                after_seq=prev_seq,
            )
        )
    if not hmac.compare_digest(chain_hash(row.prev_hash, row, row.seq), row.hash):
        report.add(
            ChainProblem(
                "hash_mismatch",
                f"seq {row.seq} (id {row.id}) does not match its hash: "
                "the row was changed after it was sealed",
                seq=row.seq,
                id=row.id,
            )
        )


def _check_head(report: ChainReport) -> None:
    if report.last_seq == report.head_seq and hmac.compare_digest(
        report.last_hash, report.head_hash
    ):
        return
    if report.last_seq < report.head_seq:
        message = (
            f"the chain ends at seq {report.last_seq} but the head records seq "
            f"{report.head_seq}: rows were deleted from the end"
        )
    elif report.last_seq > report.head_seq:
        message = (
            f"the chain runs to seq {report.last_seq} beyond the recorded head "
            f"(seq {report.head_seq}): the head was edited or rows were forged"
        )
    else:
        message = (
            f"seq {report.last_seq} is not the row the head records: "
            "the end of the chain was rewritten"
        )
    report.add(
        ChainProblem("head_mismatch", message, seq=report.head_seq, after_seq=report.last_seq)
    )
