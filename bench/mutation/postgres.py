"""One throwaway PostgreSQL for a whole mutation run, with the migrated template ready.

Every mutant starts its own pytest session; they all share this server (each test
still gets its own database cloned from the template), so no session starts a server
or migrates a template of its own. Prints the admin DSN, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import asyncpg

from backchannel.cli.embedded_postgres import EmbeddedPostgres
from tests.support.postgres import TestPostgres


async def _tune(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="backchannel-mutation-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata", cleanup="delete")
        try:
            dsn = server.dsn("postgres")
            asyncio.run(_tune(dsn))
            TestPostgres(dsn).prepare_template()
            print(dsn, flush=True)
            sys.stdin.read()  # until the run closes our stdin
        finally:
            server.stop()


if __name__ == "__main__":
    main()
