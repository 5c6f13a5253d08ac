"""``./scripts/dev`` starts the panel next to the server, registered and ready to log in to."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg
import httpx

from backchannel.oauth.decision_recording import record_decision
from tests.support.call_centre import Desk, binding_message_on, request_hash
from tests.support.served import free_port

REPO = Path(__file__).resolve().parents[2]
_AGENT_LOGIN = re.compile(r"agent login:\s+(\S+)\s+password:\s+(\S+)")
_PANEL = re.compile(r"panel:\s+(http://\S+)/")


def test_scripts_dev_runs_the_launcher_with_its_arguments() -> None:
    script = (REPO / "scripts" / "dev").read_text()
    assert 'exec .venv/bin/python -m examples.call_centre.dev "$@"' in script


async def _lines_until(stream: asyncio.StreamReader, pattern: re.Pattern[str]) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(60):
        while True:
            line = (await stream.readline()).decode()
            assert line, "the launcher's output ended:\n" + "".join(seen)
            seen.append(line)
            if pattern.search(line):
                return seen


async def test_the_launcher_serves_the_panel_as_a_registered_client_of_the_dev_server(
    database_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKCHANNEL_", "CALL_"))}
    server_port, panel_port = free_port(), free_port()
    env.update(
        BACKCHANNEL_DATABASE_URL=database_url,
        BACKCHANNEL_PORT=str(server_port),
        BACKCHANNEL_DATA_DIR=str(tmp_path / "data"),
        BACKCHANNEL_DB_POOL_MIN="1",
        CALL_CENTRE_PORT=str(panel_port),
        PYTHONUNBUFFERED="1",
    )
    errors = (tmp_path / "stderr").open("w")
    launcher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.call_centre.dev",
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=errors,
    )
    try:
        assert launcher.stdout is not None
        banner = "".join(await _lines_until(launcher.stdout, _AGENT_LOGIN))
        assert f"issuer:        http://127.0.0.1:{server_port}" in banner  # the server's, as ever
        panel = _PANEL.search(banner)
        login = _AGENT_LOGIN.search(banner)
        assert panel is not None and login is not None
        assert panel[1] == f"http://127.0.0.1:{panel_port}"
        assert (
            await db.fetchval(
                "SELECT token_endpoint_auth_method FROM clients WHERE client_id = 'call-centre'"
            )
            == "private_key_jwt"
        )

        async with httpx.AsyncClient(base_url=panel[1], timeout=20) as http:
            desk = Desk(http)
            assert (await desk.log_in(login[1], login[2])).status_code == 303
            attempt = await desk.start("demo@example.com")
            page = (await http.get(attempt)).text
            await record_decision(db, await request_hash(db, binding_message_on(page)), "approved")
            verified = await desk.until_status(attempt, "verified")
            assert '<dd data-field="subject">demo-user</dd>' in verified
            assert '<dd data-field="name">Demo User</dd>' in verified

        launcher.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(launcher.wait(), 30) == 0
    finally:
        if launcher.returncode is None:
            launcher.kill()
            await launcher.wait()
        errors.close()
    log = (tmp_path / "stderr").read_text()
    assert "POST /bc-authorize 200" in log  # the panel's request, in the server's access log
