"""A database outage is a temporary condition: 503 with Retry-After, then recovery unaided.

The app runs on a private PostgreSQL server that the tests stop and restart
mid-flow. During the outage every answer that needs the database is
``503 temporarily_unavailable`` with ``Retry-After`` (nothing else, and no
traceback in the log); afterwards the same app instance serves again, and
nothing committed before the outage is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from backchannel.audit.chain import seal_pending, verify_chain
from backchannel.db.pool import connect
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient, RunningApp, start_app
from tests.support import factories
from tests.support.ciba import CIBA_GRANT, decide, poll, rewind, start_auth_req_id, start_request
from tests.support.faulty_postgres import FaultyPostgres, start_faulty_postgres
from tests.support.waiting import eventually

_names = itertools.count()


@pytest.fixture(scope="module")
def faulty_postgres() -> Iterator[FaultyPostgres]:
    yield from start_faulty_postgres()


@pytest.fixture
async def outage_settings(faulty_postgres: FaultyPostgres) -> Settings:
    dsn = await faulty_postgres.create_database(f"outage_{next(_names)}")
    return Settings(issuer=ISSUER, database_url=dsn, db_pool_min=1, db_pool_max=5)


@pytest.fixture
async def outage_db(outage_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    assert outage_settings.database_url is not None
    conn = await connect(outage_settings.database_url)
    yield conn
    if not conn.is_closed():
        await conn.close()


@pytest.fixture
async def outage_app(outage_settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(outage_settings):
        yield app


@pytest.fixture
async def outage_rp(outage_db: asyncpg.Connection) -> RegisteredClient:
    await factories.create_user(outage_db, subject="alice", email="alice@example.com")
    client, secret = await factories.create_client(outage_db)
    return RegisteredClient(client, secret)


def assert_temporarily_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "temporarily_unavailable"


async def outage_answers(app: RunningApp, rp: RegisteredClient, auth_req_id: str) -> None:
    """Every database-backed endpoint answers 503; discovery still answers."""
    assert_temporarily_unavailable(await start_request(app.http, rp.basic_auth()))
    assert_temporarily_unavailable(await poll(app.http, rp.basic_auth(), auth_req_id))
    introspect = await app.http.post("/introspect", data={"token": "x"}, headers=rp.basic_auth())
    assert_temporarily_unavailable(introspect)
    assert (await app.http.get("/.well-known/openid-configuration")).status_code == 200


async def test_a_stopped_database_answers_503_and_the_app_recovers_unaided(
    faulty_postgres: FaultyPostgres,
    outage_app: RunningApp,
    outage_rp: RegisteredClient,
    outage_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http, auth = outage_app.http, outage_rp.basic_auth()
    before = await start_auth_req_id(http, auth)

    await faulty_postgres.stop()
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                await outage_answers(outage_app, outage_rp, before)
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    finally:
        await faulty_postgres.start()

    # The same app instance serves again once its connections are replaced.
    async def serving() -> bool:
        response = await poll(http, auth, before)
        assert response.status_code in (400, 503), response.text
        return response.status_code == 400

    await eventually(serving, within=15)
    assert outage_settings.database_url is not None
    conn = await connect(outage_settings.database_url)
    try:
        await rewind(conn, before, 30)
        await decide(conn, before, "approved")
        tokens = await poll(http, auth, before)
        assert tokens.status_code == 200, tokens.text
        after = await start_auth_req_id(http, auth)
        assert after
        # Nothing committed before the outage is lost, and the audit chain holds.
        events = await conn.fetch("SELECT event FROM audit_events ORDER BY id")
        assert [e["event"] for e in events].count("auth_request_issued") == 2
        await seal_pending(conn)
        report = await verify_chain(conn)
        assert report.intact, report.problems
    finally:
        await conn.close()


async def test_a_long_poll_held_across_a_restart_gets_the_decision(
    faulty_postgres: FaultyPostgres,
    outage_app: RunningApp,
    outage_rp: RegisteredClient,
    outage_settings: Settings,
) -> None:
    http, auth = outage_app.http, outage_rp.basic_auth()
    auth_req_id = await start_auth_req_id(http, auth)
    held = asyncio.create_task(poll(http, auth, auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: _holds(outage_app))
    await faulty_postgres.stop()
    await faulty_postgres.start()
    assert outage_settings.database_url is not None
    conn = await connect(outage_settings.database_url)
    try:
        await decide(conn, auth_req_id, "approved")
    finally:
        await conn.close()
    response = await asyncio.wait_for(held, 30)
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:  # its re-read met the outage: a retry collects
        await eventually(lambda: _redeemed(http, auth, auth_req_id), within=15)


async def _holds(app: RunningApp) -> bool:
    return app.services.waiters.held > 0


async def _redeemed(http: httpx.AsyncClient, auth: dict[str, str], auth_req_id: str) -> bool:
    response = await http.post(
        "/token", data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}, headers=auth
    )
    return response.status_code == 200


FROZEN_TIMEOUT = 1.0  # seconds: the checkout wait and the statement timeout


@pytest.fixture
async def impatient_app(outage_settings: Settings) -> AsyncIterator[RunningApp]:
    settings = outage_settings.replace(
        db_acquire_timeout=FROZEN_TIMEOUT, db_statement_timeout=FROZEN_TIMEOUT
    )
    async for app in start_app(settings):
        yield app


async def test_a_frozen_database_answers_503_within_the_timeouts_and_loses_nothing(
    faulty_postgres: FaultyPostgres,
    impatient_app: RunningApp,
    outage_settings: Settings,
    outage_rp: RegisteredClient,
    outage_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http, auth = impatient_app.http, outage_rp.basic_auth()
    before = await start_auth_req_id(http, auth)
    await decide(outage_db, before, "approved")
    await outage_db.close()  # the test's own connection would hang in the freeze too

    faulty_postgres.freeze()
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            loop = asyncio.get_running_loop()
            started = loop.time()
            # A statement in flight (the poll) and checkouts beyond the pool: all
            # answered, none held until the database answers again.
            answers = await asyncio.wait_for(
                asyncio.gather(
                    poll(http, auth, before),
                    *(start_request(http, auth) for _ in range(outage_settings.db_pool_max + 2)),
                ),
                30,
            )
            took = loop.time() - started
        for answer in answers:
            assert_temporarily_unavailable(answer)
        # Each waited for a checkout and at most one statement, not for the database
        # (2 s here; the defaults, 5 s and 10 s, would take 15 s).
        assert took < 2 * FROZEN_TIMEOUT + 3, took
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    finally:
        faulty_postgres.thaw()

    # Recovery unaided: the approved request is redeemed once, its tokens issued.
    async def redeemed() -> bool:
        response = await poll(http, auth, before)
        assert response.status_code in (200, 503), response.text
        return response.status_code == 200

    await eventually(redeemed, within=20)
    assert outage_settings.database_url is not None
    conn = await connect(outage_settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM access_tokens") == 1
        await seal_pending(conn)
        report = await verify_chain(conn)
        assert report.intact, report.problems
    finally:
        await conn.close()
