"""``serve`` and ``dev``: real hypercorn on a loopback port, started and stopped for real."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
import uvloop

from backchannel.app import create_app
from backchannel.cli import main
from backchannel.cli.serve import dev_settings
from backchannel.cli.server import (
    Listening,
    bind,
    event_loop_factory,
    hypercorn_config,
    run_on_event_loop,
    serve,
)
from backchannel.settings import Settings
from tests.conftest import RegisteredClient
from tests.support.postgres import with_database
from tests.support.waiting import eventually

CIBA_GRANT = "urn:openid:params:grant-type:ciba"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(database_url: str | None, port: int, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env.update(
        BACKCHANNEL_PORT=str(port),
        BACKCHANNEL_ISSUER=f"http://127.0.0.1:{port}",
        BACKCHANNEL_DATA_DIR=str(data_dir),
        BACKCHANNEL_DB_POOL_MIN="1",
        PYTHONUNBUFFERED="1",
    )
    if database_url is not None:
        env["BACKCHANNEL_DATABASE_URL"] = database_url
    return env


class Server:
    """A ``python -m backchannel`` process and the URL it serves."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, *, derived_issuer: bool = False
    ) -> None:
        self.url = env["BACKCHANNEL_ISSUER"]
        if derived_issuer:  # the server derives it from the port (dev): the same URL
            env = {k: v for k, v in env.items() if k != "BACKCHANNEL_ISSUER"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backchannel", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def wait_ready(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited early:\n{self.stderr()}")
                try:
                    await probe.get(self.url + "/.well-known/openid-configuration")
                    return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        raise AssertionError(f"server not ready after {within}s:\n{self.stderr()}")

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    async def stop(self, within: float = 10) -> tuple[int, float]:
        """SIGTERM; return the exit code and the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.process.wait, within)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def assert_quiet_shutdown(log: str) -> None:
    """A clean stop logs no traceback, no cancelled callback and nothing at ERROR."""
    for sign in ("Traceback", "CancelledError", "Exception in callback", " ERROR "):
        assert sign not in log, log


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(
        args: list[str], database_url: str | None, port: int | None = None, *, issuer: bool = True
    ) -> Server:
        env = server_environment(database_url, port or free_port(), tmp_path / "data")
        server = Server(args, env, tmp_path, derived_issuer=not issuer)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


async def test_serve_answers_discovery_and_stops_cleanly_on_sigterm(
    spawn: Any, database_url: str
) -> None:
    server = spawn(["serve"], database_url)
    await server.wait_ready()
    async with httpx.AsyncClient() as http:
        response = await http.get(server.url + "/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.json()["issuer"] == server.url
    code, seconds = await server.stop()
    assert code == 0, server.stderr()
    assert seconds < 5
    assert "event loop: uvloop" in server.stderr()  # BACKCHANNEL_EVENT_LOOP=auto
    assert_quiet_shutdown(server.stderr())


def test_the_event_loop_is_uvloop_unless_asyncio_is_asked_for() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def record() -> None:
        seen.append(asyncio.get_running_loop())

    run_on_event_loop("auto", record())
    run_on_event_loop("uvloop", record())
    run_on_event_loop("asyncio", record())
    assert [type(loop) for loop in seen[:2]] == [uvloop.Loop, uvloop.Loop]
    assert not isinstance(seen[2], uvloop.Loop)
    assert event_loop_factory("asyncio") == ("asyncio", None)
    with pytest.raises(ValueError, match="one of auto, uvloop, asyncio"):
        event_loop_factory("trio")


async def test_sigterm_answers_a_held_long_poll_at_once(
    spawn: Any, database_url: str, db: asyncpg.Connection, rp: RegisteredClient, alice: Any
) -> None:
    server = spawn(["serve"], database_url)
    await server.wait_ready()
    async with httpx.AsyncClient(base_url=server.url, headers=rp.basic_auth()) as http:
        started = await http.post(
            "/bc-authorize", data={"scope": "openid", "login_hint": "alice@example.com"}
        )
        auth_req_id = started.json()["auth_req_id"]
        poll = asyncio.create_task(
            http.post(
                "/token",
                data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                headers={"Prefer": "wait=25"},
                timeout=30,
            )
        )

        async def held() -> bool:
            # Pending and polled once (the waiter is registered before the statement):
            # the server process now holds the poll for up to 25 s.
            return bool(await db.fetchval("SELECT poll_count FROM auth_requests") == 1)

        await eventually(held, within=15)
        assert not poll.done()
        code, seconds = await server.stop()
        response = await poll
    assert code == 0, server.stderr()
    assert seconds < 5
    assert response.status_code in (400, 503)
    assert response.json()["error"] in ("authorization_pending", "temporarily_unavailable")
    assert_quiet_shutdown(server.stderr())


async def test_serve_migrate_applies_migrations_before_serving(
    spawn: Any, test_postgres: Any
) -> None:
    admin = await asyncpg.connect(test_postgres.admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS bc_serve_fresh WITH (FORCE)")
        await admin.execute("CREATE DATABASE bc_serve_fresh")
        url = with_database(test_postgres.admin_dsn, "bc_serve_fresh")
        refused = spawn(["serve"], url)
        assert await asyncio.to_thread(refused.process.wait, 30) == 1
        assert "run `backchannel migrate` first" in refused.stderr()

        server = spawn(["serve", "--migrate"], url)
        await server.wait_ready()
        code, _ = await server.stop()
        assert code == 0
        assert "applied 001_core.sql" in server.stderr()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS bc_serve_fresh WITH (FORCE)")
        await admin.close()


def run_main(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> int:
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("BACKCHANNEL_"):
            monkeypatch.setenv(name, value)
    return main(list(argv))


def test_serve_without_a_database_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_main(monkeypatch, server_environment(None, free_port(), tmp_path), "serve")
    assert code == 2
    assert "serve needs BACKCHANNEL_DATABASE_URL" in capsys.readouterr().err


def test_serve_on_a_port_in_use_fails_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = server_environment("postgresql://nobody@127.0.0.1:1/x", port, tmp_path)
        assert run_main(monkeypatch, env, "serve") == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "set BACKCHANNEL_PORT to a free one" in err


def test_an_unreadable_hypercorn_config_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = server_environment("postgresql://nobody@127.0.0.1:1/x", free_port(), tmp_path)
    code = run_main(monkeypatch, env, "serve", "--hypercorn-config", str(tmp_path / "none.toml"))
    assert code == 2
    assert "hypercorn config" in capsys.readouterr().err


def test_the_hypercorn_config_file_tunes_hypercorn(tmp_path: Path) -> None:
    path = tmp_path / "hypercorn.toml"
    path.write_text('graceful_timeout = 7\nkeep_alive_timeout = 20\nbind = ["0.0.0.0:1"]\n')
    config = hypercorn_config(path)
    assert (config.graceful_timeout, config.keep_alive_timeout) == (7, 20)
    listening = bind(Settings(host="127.0.0.1", port=0), config)
    try:
        assert listening.port != 0
        assert listening.config.bind == [listening.config.bind[0]]
        assert listening.config.bind[0].startswith("fd://")
    finally:
        os.close(int(listening.config.bind[0].removeprefix("fd://")))


@pytest.fixture
async def in_process(settings: Settings) -> AsyncIterator[tuple[Any, asyncio.Event, str]]:
    listening = bind(settings.replace(port=0), hypercorn_config())
    url = listening.url
    app = create_app(settings.replace(issuer=url))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, listening.config, stop=stop))
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            try:
                await probe.get(url + "/.well-known/openid-configuration")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    yield app, stop, url
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_stopping_releases_held_polls_before_hypercorn_shuts_down(
    in_process: tuple[Any, asyncio.Event, str],
) -> None:
    app, stop, _url = in_process
    waiters = app.state.services.waiters
    with waiters.watch(b"held") as future:
        stop.set()
        assert await waiters.wait(future, 5)


async def test_dev_serves_the_demo_flow_it_prints_at_the_port_it_listens_on(
    spawn: Any, database_url: str
) -> None:
    server = spawn(["dev", "--json"], database_url, issuer=False)
    await server.wait_ready()
    instructions = read_json_object(server.process.stdout)
    assert instructions["issuer"] == server.url  # from BACKCHANNEL_PORT, not :8000
    assert f"{server.url}/bc-authorize" in instructions["bc_authorize_command"]
    assert instructions["client_id"] == "demo-client"
    assert instructions["enrolment_url"].startswith(server.url + "/authenticator/#enrol=")
    auth = (instructions["client_id"], instructions["client_secret"])
    async with httpx.AsyncClient(base_url=server.url, auth=auth) as http:
        discovery = await http.get(instructions["discovery"])
        assert discovery.status_code == 200
        started = await http.post(
            "/bc-authorize",
            data={"scope": "openid", "login_hint": instructions["login_hint"]},
        )
        assert started.status_code == 200, started.text
        auth_req_id = started.json()["auth_req_id"]
        # A long poll, held until the user decides.
        poll = asyncio.create_task(
            http.post(
                "/token",
                data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                headers={"Prefer": "wait=25"},
                timeout=30,
            )
        )
        approve = instructions["approve_command"].split()
        assert approve[-4:] == ["decide", "--", "AUTH_REQ_ID", "approve"]
        decide = ["requests", "decide", "--", auth_req_id, "approve"]
        decided = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "backchannel", *decide],
            env=server_environment(database_url, 1, Path(".")),
            capture_output=True,
            text=True,
            check=False,
        )
        assert decided.returncode == 0, decided.stderr
        tokens = await asyncio.wait_for(poll, 10)
        assert tokens.status_code == 200, tokens.text
        assert "access_token" in tokens.json()
        assert (await http.get("/healthz")).status_code == 200
    code, _ = await server.stop()
    assert code == 0
    log = server.stderr()
    # One text line per request in dev; health probes only at DEBUG.
    assert "INFO backchannel.access: 127.0.0.1 POST /bc-authorize 200 " in log
    assert "POST /token 200 " in log
    assert "/healthz" not in log
    assert "note: BACKCHANNEL_ISSUER" not in log


def test_dev_derives_its_issuer_from_the_port_unless_one_is_set() -> None:
    listening = Listening(hypercorn_config(), "127.0.0.1", 8001)
    derived = dev_settings(Settings.from_env({"BACKCHANNEL_PORT": "8001"}), listening)
    assert derived.issuer == "http://127.0.0.1:8001"
    assert derived.access_log is True
    everywhere = dev_settings(Settings(), Listening(hypercorn_config(), "0.0.0.0", 8002))
    assert everywhere.issuer == "http://127.0.0.1:8002"
    chosen = Settings.from_env(
        {"BACKCHANNEL_ISSUER": "https://login.example.com", "BACKCHANNEL_ACCESS_LOG": "false"}
    )
    kept = dev_settings(chosen, listening)
    assert kept.issuer == "https://login.example.com"
    assert kept.access_log is False


def read_json_object(stream: IO[str] | None) -> dict[str, Any]:
    """The first (indented, multi-line) JSON object a process printed."""
    assert stream is not None
    text = ""
    for line in stream:
        text += line
        if line.rstrip() == "}":
            parsed: dict[str, Any] = json.loads(text)
            return parsed
    raise AssertionError(f"no JSON object in {text!r}")


def test_the_shipped_hypercorn_config_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "deploy" / "hypercorn.toml"
    config = hypercorn_config(path)
    assert config.graceful_timeout == 10
    assert config.include_server_header is False
