"""The background sealer: started by the app, sharing the work safely with other replicas."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from backchannel.audit.chain import verify_chain
from backchannel.audit.sealer import AuditSealer
from backchannel.db.audit import insert_audit_event
from backchannel.db.pool import create_pool
from backchannel.db.users import User
from tests.conftest import RegisteredClient, RunningApp
from tests.support.ciba import poll, start_auth_req_id


async def wait_until_all_sealed(db: asyncpg.Connection, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while await db.fetchval("SELECT count(*) FROM audit_events WHERE seq IS NULL"):
        assert time.monotonic() < deadline, "audit rows were not sealed in time"
        await asyncio.sleep(0.05)


def sealer_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name() == AuditSealer.name}


async def test_the_running_app_seals_audit_rows_about_once_a_second(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    await poll(running.http, rp.basic_auth(), auth_req_id)
    await poll(running.http, rp.basic_auth(), auth_req_id)  # too fast: poll_slow_down
    started = time.monotonic()
    await wait_until_all_sealed(db)
    assert time.monotonic() - started < 3
    events = await db.fetch("SELECT event, seq FROM audit_events ORDER BY seq")
    assert [e["event"] for e in events] == ["auth_request_issued", "poll_slow_down"]
    report = await verify_chain(db)
    assert report.intact and report.checked == 2


async def test_sealers_on_two_replicas_seal_each_row_once(
    database_url: str, db: asyncpg.Connection
) -> None:
    pools = [await create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    sealers = [AuditSealer(pool, interval=0.01, batch_size=5) for pool in pools]
    try:
        for sealer in sealers:
            await sealer.start()
        for i in range(120):
            await insert_audit_event(db, "replicated", detail={"i": i})
            if i % 10 == 0:
                await asyncio.sleep(0.005)
        await wait_until_all_sealed(db)
    finally:
        for sealer in sealers:
            await sealer.stop()
        for pool in pools:
            await pool.close()
    seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM audit_events ORDER BY seq")]
    assert seqs == list(range(1, 121))
    assert (await verify_chain(db)).intact


async def test_a_stopped_sealer_seals_nothing_more(
    database_url: str, db: asyncpg.Connection
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    sealer = AuditSealer(pool, interval=0.01)
    try:
        before = sealer_tasks()
        await sealer.start()
        [task] = sealer_tasks() - before
        await insert_audit_event(db, "before_stop")
        await wait_until_all_sealed(db)
        started = time.monotonic()
        await sealer.stop()
        assert time.monotonic() - started < 1
        # Nothing of the sealer runs any more: no round can seal what comes next.
        assert task.done()
        await insert_audit_event(db, "after_stop")
        assert await db.fetchval("SELECT count(*) FROM audit_events WHERE seq IS NULL") == 1
        await sealer.stop()  # stopping twice is harmless
    finally:
        await pool.close()
