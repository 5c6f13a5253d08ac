"""The LISTEN connection: channels are known before it starts, notifications reach their
handlers, a lost connection is re-established (with back-off while the database refuses
it), and closing ends both the task and the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backchannel.db.listener import CONFIG_CHANNEL, DECISION_CHANNEL, PgListener, notify
from tests.support.postgres import with_database
from tests.support.waiting import eventually

LISTENER_TASK = "pg-listener"


def listener_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name() == LISTENER_TASK}


@contextlib.asynccontextmanager
async def refusing_connections(db: asyncpg.Connection, database_url: str) -> AsyncIterator[None]:
    """The test database takes no new connections while the block runs."""
    database = await db.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(with_database(database_url, "postgres"))
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_a_channel_subscribed_after_start_is_refused_not_silently_unheard(
    database_url: str,
) -> None:
    listener = PgListener(database_url)
    listener.subscribe("bc_known", lambda _payload: None)
    await listener.start()
    try:
        listener.subscribe("bc_known", lambda _payload: None)  # another handler: fine
        with pytest.raises(RuntimeError, match="before the listener starts"):
            listener.subscribe("bc_late", lambda _payload: None)
    finally:
        await listener.close()


async def test_each_handler_of_a_channel_gets_the_payload_even_after_one_fails(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    config: list[str] = []
    decisions: list[str] = []

    def broken(_payload: str) -> None:
        raise ValueError("a bad handler")

    listener = PgListener(database_url)
    listener.subscribe(CONFIG_CHANNEL, broken)
    listener.subscribe(CONFIG_CHANNEL, config.append)
    listener.subscribe(DECISION_CHANNEL, decisions.append)
    await listener.start()
    try:
        await notify(db, CONFIG_CHANNEL, "client:rp-1")
        await notify(db, DECISION_CHANNEL, "ab" * 32)
        await notify(db, CONFIG_CHANNEL, "keys")

        async def all_heard() -> bool:
            return len(config) == 2 and len(decisions) == 1

        await eventually(all_heard)
    finally:
        await listener.close()
    assert config == ["client:rp-1", "keys"]
    assert decisions == ["ab" * 32]
    failures = [r for r in caplog.records if r.name == "backchannel.db.listener"]
    assert [(r.levelname, r.getMessage()) for r in failures] == [
        ("ERROR", f"listener handler failed on {CONFIG_CHANNEL}")
    ] * 2
    assert all(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in failures)


async def test_closing_ends_the_task_and_the_connection(
    database_url: str, db: asyncpg.Connection
) -> None:
    before = listener_tasks()
    listener = PgListener(database_url)
    listener.subscribe(CONFIG_CHANNEL, lambda _payload: None)
    await listener.start()
    [task] = listener_tasks() - before
    pid = listener.server_pid
    assert listener.connected and pid is not None
    await listener.close()
    assert task.done()
    assert not listener.connected and listener.server_pid is None

    async def backend_gone() -> bool:
        return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

    await eventually(backend_gone)


async def test_a_listener_that_never_started_closes_cleanly(database_url: str) -> None:
    """The app registers close before start: a startup that fails in between closes it."""
    listener = PgListener(database_url)
    await listener.close()
    assert not listener.connected and listener.server_pid is None


async def test_a_lost_connection_is_retried_with_back_off_until_the_database_takes_it(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backchannel.db.listener")
    heard: list[str] = []
    reconnects: list[int | None] = []
    listener = PgListener(database_url)
    listener.subscribe(CONFIG_CHANNEL, heard.append)
    listener.on_reconnect(lambda: reconnects.append(listener.server_pid))
    await listener.start()

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "backchannel.db.listener"]

    def failed_attempts() -> list[logging.LogRecord]:
        return [r for r in warnings() if r.getMessage().startswith("LISTEN reconnect failed")]

    try:
        for outage in (1, 2):  # the back-off starts afresh after each recovery
            old_pid = listener.server_pid
            caplog.clear()
            async with refusing_connections(db, database_url):
                assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)

                async def three_refusals() -> bool:
                    return len(failed_attempts()) >= 3

                await eventually(three_refusals, within=15)
            await eventually(lambda o=outage: _equal(len(reconnects), o), within=15)
            assert listener.connected and reconnects[-1] not in (None, old_pid)
            messages = [r.getMessage() for r in warnings()]
            assert messages[0] == "LISTEN connection lost; reconnecting"
            refusal = failed_attempts()[0].getMessage()
            assert refusal.startswith("LISTEN reconnect failed: ") and "connections" in refusal
            # Each wait is at least twice the one before, from 0.1 s.
            at = [r.created for r in failed_attempts()[:3]]
            assert at[1] - at[0] >= 0.1 and at[2] - at[1] >= 0.2
            # Back on a new backend: notifications are heard again.
            await notify(db, CONFIG_CHANNEL, f"policy-{outage}")
            await eventually(lambda o=outage: _equal(heard[-1:], [f"policy-{o}"]))
    finally:
        await listener.close()


async def _equal(a: object, b: object) -> bool:
    return a == b


async def test_the_reconnect_back_off_doubles_from_a_tenth_of_a_second_up_to_five(
    database_url: str, db: asyncpg.Connection
) -> None:
    """The waits between refused attempts, exactly: 0.1 s doubling to at most 5 s, and
    again from 0.1 s after the connection has been re-established."""
    delays: list[float] = []

    async def recorded_sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    reconnects: list[int | None] = []
    listener = PgListener(database_url, sleep=recorded_sleep)
    listener.subscribe(CONFIG_CHANNEL, lambda _payload: None)
    listener.on_reconnect(lambda: reconnects.append(listener.server_pid))
    await listener.start()
    try:
        for outage, refusals in ((1, 9), (2, 3)):
            before = len(delays)
            async with refusing_connections(db, database_url):
                assert await db.fetchval("SELECT pg_terminate_backend($1)", listener.server_pid)

                async def refused_enough(n: int = before + refusals) -> bool:
                    return len(delays) >= n

                await eventually(refused_enough, within=15)

            async def reconnected(n: int = outage) -> bool:
                return len(reconnects) == n

            await eventually(reconnected, within=15)
            waits = delays[before:]
            if outage == 1:
                assert waits[:9] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
                assert set(waits[6:]) == {5.0}
            else:  # the back-off starts afresh after the recovery
                assert waits[:3] == pytest.approx([0.1, 0.2, 0.4])
    finally:
        await listener.close()
