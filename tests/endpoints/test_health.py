"""GET /healthz and GET /readyz: each readiness check, and readiness at shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from backchannel.app import create_app
from backchannel.cli.server import bind, hypercorn_config, serve
from backchannel.endpoints.health import DATABASE_TIMEOUT
from backchannel.oauth.keys import KeyStore
from backchannel.oauth.services import Services
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support import postgres as pg
from tests.support.ciba import CIBA_GRANT, start_auth_req_id
from tests.support.waiting import eventually

CHECKS = {"shutdown", "listener", "signing_keys", "database", "migrations"}


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    response = await http.get("/readyz")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == ("ready" if response.status_code == 200 else "unready")
    checks: dict[str, str] = body["checks"]
    return response.status_code, checks


async def eventually_ready(http: httpx.AsyncClient, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        status, checks = await readiness(http)
        if status == 200:
            return
        assert time.monotonic() < deadline, checks
        await asyncio.sleep(0.1)


async def test_healthz_answers_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


async def test_readyz_is_ready_and_names_every_check(http: httpx.AsyncClient) -> None:
    status, checks = await readiness(http)
    assert status == 200
    assert checks == dict.fromkeys(CHECKS, "ok")


async def test_health_endpoints_need_no_credentials_and_only_answer_get(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/healthz", "/readyz"):
        assert (await http.get(path)).status_code == 200
        refused = await http.post(path)
        assert refused.status_code == 405
        assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_a_database_refusing_connections_makes_readyz_unready_but_not_healthz(
    http: httpx.AsyncClient, database_url: str, test_postgres: pg.TestPostgres
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(test_postgres.admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

        async def unready() -> bool:
            # The pool and the listener learn of their closed connections independently.
            status, checks = await readiness(http)
            return status == 503 and checks["listener"] == "not connected"

        await eventually(unready)
        status, checks = await readiness(http)
        assert status == 503
        assert checks["database"].startswith("unreachable")
        assert checks["listener"] == "not connected"
        assert (await http.get("/healthz")).status_code == 200
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await eventually_ready(http)


async def test_a_database_that_does_not_answer_in_time_makes_readyz_unready(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    async with db.transaction():
        await db.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, checks = await readiness(http)
        took = time.monotonic() - started
    assert status == 503
    assert checks["database"] == f"no answer within {DATABASE_TIMEOUT:g} s"
    assert DATABASE_TIMEOUT <= took < DATABASE_TIMEOUT + 1
    await eventually_ready(http)


async def test_a_pending_migration_makes_readyz_unready(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    name = await db.fetchval(
        "DELETE FROM schema_migrations WHERE version = "
        "(SELECT max(version) FROM schema_migrations) RETURNING name"
    )
    status, checks = await readiness(http)
    assert status == 503
    assert checks["migrations"] == f"pending: {name}"
    assert checks["database"] == "ok"


async def test_a_database_ahead_of_this_version_is_still_ready(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """A newer release migrated the database during a rolling update: old replicas serve on."""
    await db.execute("INSERT INTO schema_migrations (version, name) VALUES (999, '999_next.sql')")
    status, checks = await readiness(http)
    assert status == 200, checks


async def test_a_closed_listen_connection_makes_readyz_unready(
    http: httpx.AsyncClient, services: Services
) -> None:
    await services.listener.close()
    status, checks = await readiness(http)
    assert status == 503
    assert checks["listener"] == "not connected"


async def test_a_lost_listen_connection_is_reestablished_and_ready_again(
    http: httpx.AsyncClient, services: Services, db: asyncpg.Connection
) -> None:
    listener = services.listener
    lost = listener.server_pid
    assert lost is not None
    await db.execute("SELECT pg_terminate_backend($1)", lost)
    # Ready again only once the listener is on a new backend (the old one may not
    # yet have been noticed gone when the kill returns).
    await eventually(lambda: _true(listener.server_pid not in (None, lost)), within=20)
    await eventually_ready(http, within=20)
    assert listener.connected


async def test_signing_keys_not_loaded_make_readyz_unready(
    http: httpx.AsyncClient, services: Services
) -> None:
    services.keys = KeyStore(services.pool, services.settings)  # created, never loaded
    status, checks = await readiness(http)
    assert status == 503
    assert checks["signing_keys"].startswith("none loaded for ES256")


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Any, asyncio.Event, str]]:
    """The app under real hypercorn, with a three-second delay between unready and draining."""
    listening = bind(settings.replace(port=0), hypercorn_config())
    app = create_app(settings.replace(issuer=listening.url, shutdown_delay=3))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, listening.config, stop=stop))
    async with httpx.AsyncClient(base_url=listening.url) as probe:
        for _ in range(200):
            try:
                await probe.get("/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    yield app, stop, listening.url
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.mark.usefixtures("alice")
async def test_readyz_turns_unready_at_shutdown_before_held_polls_are_answered(
    served: tuple[Any, asyncio.Event, str], rp: RegisteredClient
) -> None:
    app, stop, url = served
    async with httpx.AsyncClient(base_url=url, headers=rp.basic_auth(), timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
        auth_req_id = await start_auth_req_id(http, {})
        held = asyncio.create_task(
            http.post(
                "/token",
                data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                headers={"Prefer": "wait=25"},
            )
        )

        async def holding() -> bool:
            return bool(app.state.services.waiters.held)

        await eventually(holding)
        stop.set()

        async def unready() -> bool:
            return (await readiness(http))[0] == 503

        await eventually(unready)
        status, checks = await readiness(http)
        assert status == 503
        assert checks["shutdown"] == "draining"
        assert not held.done()  # still held: the load balancer gets time to stop routing here
        answered = await asyncio.wait_for(held, 10)
    assert answered.status_code == 400
    assert answered.json()["error"] == "authorization_pending"


async def _true(condition: bool) -> bool:
    return condition
