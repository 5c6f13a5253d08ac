"""The audit hash chain against a real PostgreSQL: sealing, concurrency, tamper detection."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from backchannel.audit.chain import (
    GENESIS_HASH,
    MAX_PROBLEMS,
    SEAL_BATCH,
    ChainProblem,
    ChainReport,
    SealResult,
    canonical_event,
    chain_hash,
    seal_batch,
    seal_pending,
    verify_chain,
)
from backchannel.db.audit import insert_audit_event
from backchannel.db.audit_chain import SEALER_LOCK, AuditRow
from backchannel.db.pool import connect
from tests.support.waiting import eventually

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("auth_request_issued", {"scope": ["openid"], "binding_message": "Order 42 ☕"}),
    ("poll_slow_down", {"strikes": 1, "interval": 10, "locked_until": None}),
    ("auth_request_decided", {"decision": "approved", "reason": None, "via": "device"}),
    ("token_issued", {"grant": "urn:openid:params:grant-type:ciba", "jti": "abc"}),
    ("device_removed", {"by": "cli", "nested": {"b": [1, 2.5, True], "a": "x"}}),
]


async def insert_events(conn: asyncpg.Connection, count: int = len(EVENTS)) -> None:
    for i in range(count):
        event, detail = EVENTS[i % len(EVENTS)]
        await insert_audit_event(
            conn,
            event,
            client_id="acme",
            user_id=i,
            auth_request_id=1000 + i,
            device_id="dev-1" if i % 2 else None,
            detail=detail,
        )


async def sealed_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, seq, prev_hash, hash FROM audit_events WHERE seq IS NOT NULL ORDER BY seq"
    )


def kinds(report: ChainReport) -> list[tuple[str, int | None, int | None]]:
    return [(p.kind, p.seq, p.id) for p in report.problems]


@pytest.fixture
async def tamper(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The test database as a superuser attacker sees it: triggers disabled."""
    await db.execute("ALTER TABLE audit_events DISABLE TRIGGER ALL")
    yield db
    await db.execute("ALTER TABLE audit_events ENABLE TRIGGER ALL")


# --- the format ------------------------------------------------------------------------------


def test_canonical_bytes_and_hash_follow_the_documented_format() -> None:
    row = AuditRow(
        id=7,
        at=datetime(2025, 3, 4, 5, 6, 7, 890, tzinfo=UTC),
        event="auth_request_decided",
        client_id="acme",
        user_id=3,
        auth_request_id=11,
        device_id=None,
        detail={"via": "device", "decision": "approved", "note": "Ünïcode"},
        seq=None,
        prev_hash=None,
        hash=None,
    )
    expected = (
        '[5,7,"2025-03-04T05:06:07.000890Z","auth_request_decided","acme",3,11,null,'
        '{"decision":"approved","note":"Ünïcode","via":"device"}]'
    ).encode()
    assert canonical_event(row, 5) == expected
    assert chain_hash(GENESIS_HASH, row, 5) == hashlib.sha256(bytes(32) + expected).digest()


# --- sealing ---------------------------------------------------------------------------------


async def test_sealing_gives_rows_consecutive_seqs_linked_from_the_genesis(
    db: asyncpg.Connection,
) -> None:
    await insert_events(db, 12)
    result = await seal_pending(db, batch_size=5)
    assert (result.sealed, result.head_seq, result.busy) == (12, 12, False)

    rows = await sealed_rows(db)
    assert [r["seq"] for r in rows] == list(range(1, 13))
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    head = await db.fetchrow("SELECT seq, hash FROM audit_chain_head")
    assert head is not None
    assert (head["seq"], head["hash"]) == (12, rows[-1]["hash"])

    report = await verify_chain(db)
    assert report.intact, report.problems
    assert (report.checked, report.last_seq, report.unsealed) == (12, 12, 0)

    await insert_events(db, 3)
    assert (await seal_pending(db)).sealed == 3
    assert (await verify_chain(db)).checked == 15


async def test_an_empty_chain_verifies(db: asyncpg.Connection) -> None:
    report = await verify_chain(db)
    assert report.intact and report.checked == 0 and report.last_hash == GENESIS_HASH
    assert (await seal_pending(db)).sealed == 0


async def test_verify_counts_unsealed_rows_and_the_oldest_one(db: asyncpg.Connection) -> None:
    await insert_events(db, 2)
    await seal_pending(db)
    await insert_events(db, 3)
    oldest = await db.fetchval("SELECT min(at) FROM audit_events WHERE seq IS NULL")
    report = await verify_chain(db)
    assert report.intact
    assert (report.checked, report.unsealed, report.oldest_unsealed_at) == (2, 3, oldest)
    assert report.to_json()["unsealed"] == {"count": 3, "oldest_at": oldest.isoformat()}


async def test_a_row_committed_late_is_sealed_after_the_rows_committed_before_it(
    db: asyncpg.Connection, database_url: str
) -> None:
    slow = await connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await insert_audit_event(slow, "slow_event")  # lower id, not yet committed
        await insert_audit_event(db, "fast_event")
        assert (await seal_pending(db)).sealed == 1
        await transaction.commit()
    finally:
        await slow.close()
    assert (await seal_pending(db)).sealed == 1
    rows = await db.fetch("SELECT id, seq, event FROM audit_events ORDER BY seq")
    assert [r["event"] for r in rows] == ["fast_event", "slow_event"]
    assert rows[0]["id"] > rows[1]["id"]
    assert (await verify_chain(db)).intact


async def test_concurrent_inserts_while_sealing_seal_every_row_exactly_once(
    db: asyncpg.Connection, database_url: str
) -> None:
    writers, per_writer = 8, 40
    done = asyncio.Event()

    async def writer(n: int) -> None:
        conn = await connect(database_url)
        try:
            rng = random.Random(n)
            written = 0
            while written < per_writer:
                batch = min(rng.randint(1, 4), per_writer - written)
                async with conn.transaction():
                    for _ in range(batch):
                        await insert_audit_event(conn, "concurrent", detail={"writer": n})
                    # Keep some transactions open while others commit and get sealed.
                    await asyncio.sleep(rng.random() * 0.01)
                written += batch
        finally:
            await conn.close()

    async def sealer() -> None:
        conn = await connect(database_url)
        try:
            while not done.is_set():
                await seal_pending(conn, batch_size=7)
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    sealers = [asyncio.create_task(sealer()) for _ in range(3)]
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    await asyncio.gather(*sealers)
    await seal_pending(db)

    total = writers * per_writer
    rows = await sealed_rows(db)
    assert len(rows) == total
    assert [r["seq"] for r in rows] == list(range(1, total + 1))
    assert len({r["id"] for r in rows}) == total
    assert await db.fetchval("SELECT count(*) FROM audit_events WHERE seq IS NULL") == 0
    report = await verify_chain(db)
    assert report.intact, report.problems
    assert report.checked == total


async def test_two_sealers_at_once_never_seal_a_row_twice(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_events(db, 300)
    conns = [await connect(database_url) for _ in range(6)]

    async def seal_three_batches(conn: asyncpg.Connection) -> list[SealResult]:
        return [await seal_batch(conn, limit=50) for _ in range(3)]

    try:
        rounds = await asyncio.gather(*(seal_three_batches(c) for c in conns))
        assert sum(r.sealed for results in rounds for r in results) > 0
        while (await seal_pending(db, batch_size=50)).sealed:
            pass
    finally:
        for conn in conns:
            await conn.close()
    rows = await sealed_rows(db)
    assert [r["seq"] for r in rows] == list(range(1, 301))
    assert len({r["id"] for r in rows}) == 300
    assert (await verify_chain(db)).intact


async def test_a_sealer_steps_aside_while_another_holds_the_lock(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_events(db, 3)
    other = await connect(database_url)
    try:
        async with other.transaction():
            assert (await seal_batch(other, limit=1)).sealed == 1
            result = await seal_pending(db)
            assert result.busy and result.sealed == 0
    finally:
        await other.close()
    assert (await seal_pending(db)).sealed == 2
    assert (await verify_chain(db)).intact


async def test_a_batch_larger_than_the_default_is_sealed_whole(db: asyncpg.Connection) -> None:
    rows = SEAL_BATCH + 1
    await db.execute(
        "INSERT INTO audit_events (event, detail)"
        " SELECT 'bulk', '{}'::jsonb FROM generate_series(1, $1)",
        rows,
    )
    result = await seal_pending(db, batch_size=rows)
    assert (result.sealed, result.head_seq, result.busy) == (rows, rows, False)
    assert (await verify_chain(db)).unsealed == 0


async def test_a_sealer_that_loses_the_lock_between_batches_reports_the_head_it_reached(
    db: asyncpg.Connection, database_url: str
) -> None:
    await insert_events(db, 2)
    # The first batch, about to commit, waits until another session is queued for the
    # sealer's lock: that session gets the lock at the commit, before the next batch.
    await db.execute(
        """CREATE FUNCTION wait_for_another_sealer() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               WHILE NOT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d
                                      ON d.oid = l.database
                                  WHERE d.datname = current_database()
                                    AND l.locktype = 'advisory' AND NOT l.granted) LOOP
                   PERFORM pg_sleep(0.01);
               END LOOP;
               RETURN NULL;
           END $$;
           CREATE TRIGGER wait_for_another_sealer AFTER UPDATE ON audit_chain_head
               FOR EACH STATEMENT EXECUTE FUNCTION wait_for_another_sealer();"""
    )
    sealer = await connect(database_url)
    other = await connect(database_url)
    try:
        sealing = asyncio.create_task(seal_pending(sealer, batch_size=1))
        sealer_pid = sealer.get_server_pid()

        async def sealer_holds_the_lock() -> bool:
            held: bool = await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND pid = $1)",
                sealer_pid,
            )
            return held

        await eventually(sealer_holds_the_lock)
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", SEALER_LOCK)
            result = await sealing
        assert (result.sealed, result.head_seq, result.busy) == (1, 1, False)
    finally:
        await other.close()
        await sealer.close()
    await db.execute("DROP TRIGGER wait_for_another_sealer ON audit_chain_head")
    assert (await seal_pending(db)).sealed == 1
    assert (await verify_chain(db)).intact


async def test_sealing_and_verifying_refuse_a_deleted_chain_head(db: asyncpg.Connection) -> None:
    await insert_events(db, 1)
    await db.execute("ALTER TABLE audit_chain_head DISABLE TRIGGER ALL")
    try:
        await db.execute("DELETE FROM audit_chain_head")
    finally:
        await db.execute("ALTER TABLE audit_chain_head ENABLE TRIGGER ALL")

    with pytest.raises(RuntimeError) as sealing:
        await seal_pending(db)
    with pytest.raises(RuntimeError) as verifying:
        await verify_chain(db)
    for refused in (sealing, verifying):
        assert str(refused.value) == "audit_chain_head is empty: the table was tampered with"


# --- append-only -----------------------------------------------------------------------------


async def test_updates_deletes_and_truncation_are_refused_while_triggers_are_on(
    db: asyncpg.Connection,
) -> None:
    await insert_events(db, 2)
    await seal_pending(db)
    await insert_events(db, 1)
    statements = [
        "UPDATE audit_events SET detail = '{}' WHERE seq = 1",
        "UPDATE audit_events SET event = 'other' WHERE seq IS NULL",
        "UPDATE audit_events SET seq = 99 WHERE seq = 2",
        "UPDATE audit_events SET seq = NULL, prev_hash = NULL, hash = NULL WHERE seq = 2",
        # A "sealing" update that also changes the row.
        """UPDATE audit_events SET seq = 3, prev_hash = decode(repeat('00', 32), 'hex'),
                  hash = decode(repeat('00', 32), 'hex'), detail = '{"x": 1}'
            WHERE seq IS NULL""",
        # ... that fills in a column left empty, or empties one.
        """UPDATE audit_events SET seq = 3, prev_hash = decode(repeat('00', 32), 'hex'),
                  hash = decode(repeat('00', 32), 'hex'), device_id = 'dev-x'
            WHERE seq IS NULL""",
        """UPDATE audit_events SET seq = 3, prev_hash = decode(repeat('00', 32), 'hex'),
                  hash = decode(repeat('00', 32), 'hex'), client_id = NULL
            WHERE seq IS NULL""",
        "DELETE FROM audit_events WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq IS NULL",
        "TRUNCATE audit_events",
        "UPDATE audit_chain_head SET seq = 1",
        "DELETE FROM audit_chain_head",
    ]
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="refused"):
            await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 3
    assert (await seal_pending(db)).sealed == 1
    assert (await verify_chain(db)).intact


# --- tamper detection ------------------------------------------------------------------------


async def test_verify_finds_a_row_edited_after_sealing(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    row_id = await db.fetchval("SELECT id FROM audit_events WHERE seq = 3")
    await tamper.execute(
        """UPDATE audit_events SET detail = detail || '{"decision": "denied"}' WHERE seq = 3"""
    )
    report = await verify_chain(db)
    assert not report.intact
    assert kinds(report) == [("hash_mismatch", 3, row_id)]
    assert report.problems[0].message == (
        f"seq 3 (id {row_id}) does not match its hash: the row was changed after it was sealed"
    )


async def test_verify_reads_one_snapshot_while_the_sealer_goes_on(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Rows sealed after verification began are not seen, neither in the chain nor in the
    head it is checked against, even when they commit between its statements."""
    await insert_events(db, 4)
    await seal_pending(db)
    verifier = await connect(database_url)
    try:
        async with db.transaction():
            # The chain head is read first; the walk over the rows waits for this lock.
            await db.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
            verifying = asyncio.create_task(verify_chain(verifier))

            async def walk_waits() -> bool:
                waiting = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
                    " AND wait_event_type = 'Lock'",
                    verifier.get_server_pid(),
                )
                return bool(waiting)

            await eventually(walk_waits)
            await insert_events(db, 2)
            assert (await seal_pending(db)).sealed == 2
        report = await asyncio.wait_for(verifying, 10)
    finally:
        await verifier.close()
    assert report.intact, report.problems
    assert (report.checked, report.last_seq, report.head_seq) == (4, 4, 4)
    assert (await verify_chain(db)).checked == 6


async def test_verify_finds_a_deleted_row(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    after_id = await db.fetchval("SELECT id FROM audit_events WHERE seq = 5")
    await tamper.execute("DELETE FROM audit_events WHERE seq = 4")
    report = await verify_chain(db)
    assert kinds(report) == [("gap", 5, after_id)]
    assert report.problems[0].after_seq == 3
    assert report.problems[0].message == (
        f"seq 4 missing after seq 3: rows were deleted (the chain resumes at seq 5, id {after_id})"
    )


async def test_verify_names_the_range_of_several_deleted_rows(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    after_id = await db.fetchval("SELECT id FROM audit_events WHERE seq = 6")
    await tamper.execute("DELETE FROM audit_events WHERE seq IN (3, 4, 5)")
    report = await verify_chain(db)
    assert [(p.kind, p.seq, p.id, p.after_seq) for p in report.problems] == [
        ("gap", 6, after_id, 2)
    ]
    assert report.problems[0].message == (
        "seqs 3..5 missing after seq 2: rows were deleted"
        f" (the chain resumes at seq 6, id {after_id})"
    )


async def test_verify_finds_rows_deleted_from_the_end(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    await tamper.execute("DELETE FROM audit_events WHERE seq >= 5")
    report = await verify_chain(db)
    assert [(p.kind, p.seq, p.after_seq) for p in report.problems] == [("head_mismatch", 6, 4)]
    assert report.problems[0].message == (
        "the chain ends at seq 4 but the head records seq 6: rows were deleted from the end"
    )
    # Sealing goes on from the recorded head: the hole stays visible.
    await insert_events(db, 1)
    await seal_pending(db)
    assert [p.kind for p in (await verify_chain(db)).problems] == ["gap"]


async def test_verify_finds_a_head_that_records_another_last_row(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 3)
    await seal_pending(db)
    await tamper.execute("ALTER TABLE audit_chain_head DISABLE TRIGGER ALL")
    await tamper.execute("UPDATE audit_chain_head SET hash = $1", bytes(32))
    await tamper.execute("ALTER TABLE audit_chain_head ENABLE TRIGGER ALL")
    report = await verify_chain(db)
    assert [(p.kind, p.seq, p.after_seq) for p in report.problems] == [("head_mismatch", 3, 3)]
    assert report.problems[0].message == (
        "seq 3 is not the row the head records: the end of the chain was rewritten"
    )
    await tamper.execute("ALTER TABLE audit_chain_head DISABLE TRIGGER ALL")
    await tamper.execute("UPDATE audit_chain_head SET seq = 2")
    await tamper.execute("ALTER TABLE audit_chain_head ENABLE TRIGGER ALL")
    report = await verify_chain(db)
    assert [(p.kind, p.seq, p.after_seq) for p in report.problems] == [("head_mismatch", 2, 3)]
    assert report.problems[0].message == (
        "the chain runs to seq 3 beyond the recorded head (seq 2):"
        " the head was edited or rows were forged"
    )


async def test_verify_finds_two_rows_whose_seqs_were_swapped(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    id3 = await db.fetchval("SELECT id FROM audit_events WHERE seq = 3")
    id4 = await db.fetchval("SELECT id FROM audit_events WHERE seq = 4")
    id5 = await db.fetchval("SELECT id FROM audit_events WHERE seq = 5")
    await tamper.execute("UPDATE audit_events SET seq = 1000 WHERE seq = 3")
    await tamper.execute("UPDATE audit_events SET seq = 3 WHERE seq = 4")
    await tamper.execute("UPDATE audit_events SET seq = 4 WHERE seq = 1000")
    report = await verify_chain(db)
    assert kinds(report) == [
        ("broken_link", 3, id4),
        ("hash_mismatch", 3, id4),
        ("broken_link", 4, id3),
        ("hash_mismatch", 4, id3),
        ("broken_link", 5, id5),  # it follows what was seq 4
    ]
    assert report.problems[0].after_seq == 2
    assert report.problems[0].message == (
        f"seq 3 (id {id4}) does not follow seq 2: its prev_hash is not that row's hash"
        " (rows reordered or replaced)"
    )


async def test_verify_finds_two_rows_whose_contents_were_swapped(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 6)
    await seal_pending(db)
    await tamper.execute(
        """UPDATE audit_events a
              SET event = b.event, detail = b.detail, device_id = b.device_id
             FROM audit_events b
            WHERE (a.seq, b.seq) IN ((2, 5), (5, 2))"""
    )
    ids = {s: await db.fetchval("SELECT id FROM audit_events WHERE seq = $1", s) for s in (2, 5)}
    report = await verify_chain(db)
    assert kinds(report) == [("hash_mismatch", 2, ids[2]), ("hash_mismatch", 5, ids[5])]


async def test_a_consistently_rewritten_chain_is_caught_by_a_recorded_anchor(
    db: asyncpg.Connection, tamper: asyncpg.Connection
) -> None:
    await insert_events(db, 4)
    await seal_pending(db)
    anchor = await verify_chain(db)
    recorded = {anchor.last_seq: anchor.last_hash}

    # The attacker edits seq 2 and recomputes every later hash and the head.
    await tamper.execute("ALTER TABLE audit_chain_head DISABLE TRIGGER ALL")
    await tamper.execute("""UPDATE audit_events SET detail = '{"forged": true}' WHERE seq = 2""")
    rows = await tamper.fetch("SELECT * FROM audit_events ORDER BY seq")
    prev = GENESIS_HASH
    for record in rows:
        row = AuditRow(**dict(record))
        assert row.seq is not None
        digest = chain_hash(prev, row, row.seq)
        await tamper.execute(
            "UPDATE audit_events SET prev_hash = $2, hash = $3 WHERE id = $1", row.id, prev, digest
        )
        prev = digest
    await tamper.execute("UPDATE audit_chain_head SET hash = $1", prev)
    await tamper.execute("ALTER TABLE audit_chain_head ENABLE TRIGGER ALL")

    assert (await verify_chain(db)).intact  # without outside evidence, nothing to see
    report = await verify_chain(db, anchors=recorded)
    assert [(p.kind, p.seq) for p in report.problems] == [("anchor_mismatch", 4)]
    row_id = await db.fetchval("SELECT id FROM audit_events WHERE seq = 4")
    assert report.problems[0].id == row_id
    assert report.problems[0].message == (
        f"seq 4 (id {row_id}) has hash {prev.hex()},"
        f" but {anchor.last_hash.hex()} was recorded for it"
    )
    missing = await verify_chain(db, anchors={9: bytes(32)})
    assert [(p.kind, p.seq) for p in missing.problems] == [("anchor_mismatch", 9)]
    assert missing.problems[0].message == "seq 9 was recorded, but the chain has no such row"


def test_a_report_counts_every_problem_and_keeps_the_first_hundred() -> None:
    report = ChainReport()
    for seq in range(1, MAX_PROBLEMS + 3):
        report.add(ChainProblem("gap", f"seqs missing before {seq}", seq=seq, after_seq=seq - 1))
    assert not report.intact
    assert report.problem_count == MAX_PROBLEMS + 2
    assert [p.seq for p in report.problems] == list(range(1, MAX_PROBLEMS + 1))
    shown = report.to_json()
    assert shown["intact"] is False and shown["problem_count"] == MAX_PROBLEMS + 2
    assert len(shown["problems"]) == MAX_PROBLEMS
    assert shown["problems"][0] == {
        "kind": "gap",
        "seq": 1,
        "id": None,
        "after_seq": 0,
        "message": "seqs missing before 1",
    }
