"""The built wheel, installed (not editable) where the source tree cannot be seen, serves.

The wheel is built from a copy of the repository, as ``pip wheel .`` in the
container build does, and installed into a fresh virtual environment with its
dependencies (without the ``dev`` extra, so without pgserver). Its commands
then run from a temporary folder against the test PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support import postgres as pg
from tests.test_server import free_port

REPO = Path(__file__).resolve().parents[1]
# What a fresh clone has besides the sources: never copied into the build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".backchannel", "test-artifacts", "results", "node_modules",
)  # fmt: skip

pytestmark = pytest.mark.timeout(300)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    home: Path  # an empty working directory, away from the repository

    def command(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def environment(self, **settings: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BACKCHANNEL_", "PYTHON", "VIRTUAL_ENV"))
        }
        # As in the image (deploy/Dockerfile), which runs on a read-only root file system.
        env.update(settings, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        return env

    def files(self) -> set[Path]:
        """Every file under the environment and the working directory."""
        return {p for root in (self.venv, self.home) for p in root.rglob("*")}

    def run(self, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command("backchannel"), *argv],
            cwd=self.home,
            env=self.environment(**settings),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCES)
    quiet = {"stdout": subprocess.DEVNULL, "check": True, "timeout": 240}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work / "dist"), str(source)], **quiet)
    (wheel,) = (work / "dist").glob("backchannel-*.whl")
    shutil.rmtree(source)  # nothing of the sources is left to be found
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], **quiet)
    venv_pip = [str(work / "venv" / "bin" / "python"), *pip[1:]]
    subprocess.run([*venv_pip, "install", str(wheel)], **quiet)
    home = work / "home"
    home.mkdir()
    yield Installed(wheel, work / "venv", home)


def test_the_wheel_carries_the_migrations_and_the_app_and_imports_from_its_environment(
    installed: Installed,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = {
        f"backchannel/resources/migrations/{p.name}" for p in (REPO / "migrations").glob("*.sql")
    } | {
        f"backchannel/resources/authenticator_app/{p.relative_to(REPO / 'authenticator_app')}"
        for p in (REPO / "authenticator_app").rglob("*")
        if p.is_file() and "tools" not in p.parts
    }
    assert shipped <= names, sorted(shipped - names)
    assert not any("/tools/" in name for name in names)  # build helpers stay out
    where = subprocess.run(
        [installed.command("python"), "-c", "import backchannel; print(backchannel.__file__)"],
        cwd=installed.home,
        env=installed.environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.venv)), where
    pgserver = subprocess.run(
        [installed.command("python"), "-c", "import pgserver"],
        cwd=installed.home,
        env=installed.environment(),
        capture_output=True,
        check=False,
    )
    assert pgserver.returncode != 0  # the production install leaves the embedded server out


async def test_the_installed_wheel_migrates_and_serves_discovery_and_the_app_writing_no_files(
    installed: Installed, test_postgres: pg.TestPostgres
) -> None:
    admin = await asyncpg.connect(test_postgres.admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS bc_wheel WITH (FORCE)")
        await admin.execute("CREATE DATABASE bc_wheel")
        url = pg.with_database(test_postgres.admin_dsn, "bc_wheel")
        before = installed.files()
        migrated = await asyncio.to_thread(
            installed.run, "migrate", "--json", BACKCHANNEL_DATABASE_URL=url
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "001_core.sql" in migrated.stdout

        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        server = start_serve(installed, url, port, issuer)
        try:
            async with httpx.AsyncClient(base_url=issuer) as http:
                await wait_until_ready(http, server)
                discovery = await http.get("/.well-known/openid-configuration")
                assert discovery.status_code == 200
                assert discovery.json()["issuer"] == issuer
                page = await http.get("/authenticator/")
                assert page.status_code == 200
                assert "<html" in page.text
                worker = await http.get("/authenticator/sw.js")
                assert worker.status_code == 200
            server.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.wait, 15) == 0
            # Nothing written beside the code or in the working directory: the image's
            # read-only root file system would refuse it.
            assert installed.files() == before
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            assert server.stderr is not None
            server.stderr.close()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS bc_wheel WITH (FORCE)")
        await admin.close()


def start_serve(installed: Installed, url: str, port: int, issuer: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [installed.command("backchannel"), "serve"],
        cwd=installed.home,
        env=installed.environment(
            BACKCHANNEL_DATABASE_URL=url,
            BACKCHANNEL_PORT=str(port),
            BACKCHANNEL_ISSUER=issuer,
            BACKCHANNEL_DB_POOL_MIN="1",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_until_ready(http: httpx.AsyncClient, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            assert server.stderr is not None
            raise AssertionError(f"serve exited early:\n{server.stderr.read()}")
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not become ready within 30 s")


def test_dev_without_the_dev_extra_says_how_to_install_it(installed: Installed) -> None:
    result = installed.run("dev", BACKCHANNEL_PORT="0")
    assert result.returncode == 1
    assert "pip install 'backchannel[dev]'" in result.stderr
