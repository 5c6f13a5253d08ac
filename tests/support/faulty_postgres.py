"""A private PostgreSQL server that a test may stop, restart and freeze.

The session's shared server serves every other test; this one is started for
the fault suite alone, so that taking it down disturbs nothing else. It is the
same embedded build, controlled with its own ``pg_ctl`` (as the system user the
server runs as) and, for a freeze, SIGSTOP/SIGCONT on every server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil

from backchannel.cli.embedded_postgres import EmbeddedPostgres
from backchannel.db.migrate import migrate
from tests.support.postgres import with_database


class FaultyPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._embedded = EmbeddedPostgres(data_dir, cleanup="delete")
        self._server = self._embedded._server
        self.data_dir = self._embedded.data_dir
        self.admin_dsn = self._embedded.dsn("postgres")
        self._socket_dir = self._postmaster_lines()[4]

    def _postmaster_lines(self) -> list[str]:
        return (self.data_dir / "postmaster.pid").read_text().splitlines()

    def _pg_ctl(self, *args: str) -> None:
        from pgserver.postgres_server import pg_ctl

        pg_ctl(list(args), pgdata=self.data_dir, user=self._server.system_user, timeout=30)

    def _processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(int(self._postmaster_lines()[0]))
        return [postmaster, *postmaster.children(recursive=True)]

    async def create_database(self, name: str) -> str:
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        dsn = with_database(self.admin_dsn, name)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return dsn

    async def stop(self) -> None:
        """A fast shutdown: sessions are ended, new connections refused."""
        await asyncio.to_thread(self._pg_ctl, "-w", "-m", "fast", "stop")

    async def start(self) -> None:
        await asyncio.to_thread(
            self._pg_ctl,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.data_dir / "log"),
            "start",
        )

    def freeze(self) -> None:
        """Every server process stops dead: connections stay open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        for process in self._processes():
            # A backend may end between the listing and the signal (its client gave up).
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    def close(self) -> None:
        self._embedded.stop()


def start_faulty_postgres() -> Iterator[FaultyPostgres]:
    with tempfile.TemporaryDirectory(prefix="backchannel-fault-pg-") as tmp:
        server = FaultyPostgres(Path(tmp) / "pgdata")
        try:
            yield server
        finally:
            server.thaw()
            server.close()
