"""The PostgreSQL server the tests use.

``BACKCHANNEL_TEST_DATABASE_URL`` names a server (its user must be allowed to
create databases); without it, a throwaway embedded server is started in a
temporary directory. Each test gets its own database, cloned from a migrated
template, so tests are isolated yet use real concurrent connections.
``BACKCHANNEL_TEST_TEMPLATE_READY=1`` says the named server already holds the
migrated template: runs that start many test sessions against one server (such as
bench/mutation/run) prepare it once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from backchannel.cli.embedded_postgres import EmbeddedPostgres
from backchannel.db.migrate import migrate

TEMPLATE = "backchannel_test_template"
_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


class TestPostgres:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = f"bc_test_{os.getpid()}_"

    def prepare_template(self) -> None:
        async def run() -> None:
            admin = await asyncpg.connect(self.admin_dsn)
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
                await admin.execute(f"CREATE DATABASE {TEMPLATE}")
            finally:
                await admin.close()
            conn = await asyncpg.connect(with_database(self.admin_dsn, TEMPLATE))
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(run())

    async def create_database(self) -> str:
        name = f"{self.prefix}{next(_counter)}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        finally:
            await admin.close()
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


def start_test_postgres() -> Iterator[TestPostgres]:
    url = os.environ.get("BACKCHANNEL_TEST_DATABASE_URL")
    if url:
        server = TestPostgres(url)
        if os.environ.get("BACKCHANNEL_TEST_TEMPLATE_READY") != "1":
            server.prepare_template()
        yield server
        return
    with tempfile.TemporaryDirectory(prefix="backchannel-test-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pgdata", cleanup="delete")
        admin_dsn = embedded.dsn("postgres")

        async def tune() -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                # Durability is irrelevant for a throwaway test server; speed is not.
                await conn.execute("ALTER SYSTEM SET fsync = off")
                await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
                await conn.execute("ALTER SYSTEM SET full_page_writes = off")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        asyncio.run(tune())
        server = TestPostgres(admin_dsn)
        server.prepare_template()
        try:
            yield server
        finally:
            embedded.stop()
