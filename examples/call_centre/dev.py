"""``./scripts/dev``: the local backchannel server and, next to it, the call-centre panel.

It runs ``backchannel dev`` (whose banner passes through unchanged), waits
until the issuer the banner names answers, and then, like an operator would,
registers the panel with the ``backchannel`` command line: client
``call-centre``, ``private_key_jwt``, scopes ``openid profile``, its key kept
in ``<data dir>/call-centre/`` and re-registered on every start. It makes a
demo agent (``agent42``, a random password kept there too, so it can be shown
each time), serves the panel on ``CALL_CENTRE_PORT`` (8100) and prints where
and how to log in. Ctrl+C (or SIGTERM) stops both.

Arguments go to ``backchannel dev``; ``CALL_CENTRE_*`` variables (``config``)
override what this sets up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from joserfc import jwk

from examples.call_centre.agents import hash_password
from examples.call_centre.config import DEFAULT_PORT, ConfigError, PanelConfig
from examples.call_centre.serve import serve_panel

CLIENT_ID = "call-centre"
CLIENT_NAME = "Example Bank support"  # what the caller's phone says is asking
DEMO_AGENT, DEMO_AGENT_NAME = "agent42", "Agent 42"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
# The issuer line of `backchannel dev`'s banner (or of its --json output).
_ISSUER = re.compile(r'^(?:issuer:\s+|\s*"issuer":\s*")(https?://[^\s"]+)')


class DevError(Exception):
    """Setting the panel up failed; the message says why."""


def main(argv: list[str]) -> int:
    try:
        return asyncio.run(run(argv))
    except DevError as exc:
        print(f"call-centre panel: {exc}", file=sys.stderr)
        return 1


async def run(args: list[str]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    data_dir = Path(env.get("BACKCHANNEL_DATA_DIR") or ".backchannel") / "call-centre"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backchannel", "dev", *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    relay = _Relay(server.stdout)
    relaying = asyncio.create_task(relay.run())
    exited = asyncio.create_task(server.wait())
    stop_panel = asyncio.Event()
    panel: asyncio.Task[None] | None = None
    try:
        issuer = await _first(relay.issuer, exited, stopping)
        if issuer is None:
            return server.returncode or 0
        await _until_answering(issuer + "/.well-known/openid-configuration", exited)
        config = PanelConfig.from_env(await _set_up(issuer, data_dir, env))
        panel = asyncio.create_task(serve_panel(config, stop_panel))
        await _until_answering(config.origin + "/login", panel)
        await relay.quiet()
        print(_banner(config, data_dir), flush=True)
        await _first(exited, panel, stopping)
        if panel.done():
            panel.result()  # its failure, if it failed
        return 0 if stopping.is_set() else (server.returncode or 0)
    except ConfigError as exc:
        raise DevError(str(exc)) from None
    except OSError as exc:
        raise DevError(f"cannot serve the panel: {exc} (set CALL_CENTRE_PORT)") from None
    finally:
        stop_panel.set()
        if panel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(panel, 10)
        if server.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                server.send_signal(signal.SIGTERM)
            await server.wait()
        await relaying


async def _first(*waits: asyncio.Future[Any] | asyncio.Event) -> Any:
    """The result of whichever finishes first; None for an event, a failure or a cancel."""
    tasks = [asyncio.ensure_future(w.wait() if isinstance(w, asyncio.Event) else w) for w in waits]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task, wait in zip(tasks, waits, strict=True):
        if isinstance(wait, asyncio.Event) and not task.done():
            task.cancel()  # only the event waits made here; the others are the caller's
    first = next(task for task in tasks if task in done)
    if isinstance(waits[tasks.index(first)], asyncio.Event) or first.cancelled():
        return None
    return None if first.exception() is not None else first.result()


class _Relay:
    """Passes the server's output through, noting the issuer its banner names."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        self.stream = stream
        self.issuer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._line = asyncio.Event()

    async def run(self) -> None:
        async for raw in self.stream:
            line = raw.decode(errors="replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            self._line.set()
            found = _ISSUER.match(line)
            if found and not self.issuer.done():
                self.issuer.set_result(found[1].rstrip("/"))
        if not self.issuer.done():
            self.issuer.cancel()

    async def quiet(self, idle: float = 0.2, within: float = 2.0) -> None:
        """Until the banner has passed through (no line for ``idle`` seconds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    self._line.clear()
                    try:
                        await asyncio.wait_for(self._line.wait(), idle)
                    except TimeoutError:
                        return


async def _until_answering(url: str, gone: asyncio.Future[Any]) -> None:
    async with aiohttp.ClientSession() as probe:
        for _ in range(600):
            if gone.done():
                raise DevError(f"stopped before {url} answered")
            try:
                async with probe.get(url, allow_redirects=False) as answer:
                    await answer.read()
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise DevError(f"{url} did not answer within a minute")


async def _set_up(issuer: str, data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """Register the panel's client and its demo agent; the panel's settings."""
    key_file, jwks_file, agents_file = await asyncio.to_thread(_make_files, data_dir)
    if await _cli(env, "client", "show", CLIENT_ID, check=False):
        await _cli(env, "client", "update", CLIENT_ID, "--jwks-file", str(jwks_file))
    else:
        await _cli(
            env,
            "client",
            "create",
            "--client-id",
            CLIENT_ID,
            "--name",
            CLIENT_NAME,
            "--auth-method",
            "private_key_jwt",
            "--jwks-file",
            str(jwks_file),
            "--scope",
            "openid profile",
            "--grant-type",
            CIBA_GRANT,
        )
    settings = {
        "CALL_CENTRE_ISSUER": issuer,
        "CALL_CENTRE_CLIENT_ID": CLIENT_ID,
        "CALL_CENTRE_CLIENT_KEY_FILE": str(key_file),
        "CALL_CENTRE_AGENTS_FILE": str(agents_file),
        "CALL_CENTRE_PORT": str(DEFAULT_PORT),
    }
    return {**settings, **{k: v for k, v in env.items() if k.startswith("CALL_CENTRE_")}}


def _make_files(data_dir: Path) -> tuple[Path, Path, Path]:
    """The client's key (private, and its public JWKS) and the agents file, made if absent."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file, jwks_file = data_dir / "client-key.json", data_dir / "client-jwks.json"
    if not key_file.exists():
        made = jwk.ECKey.generate_key("P-256", private=True, auto_kid=True)
        _write_private(key_file, json.dumps(made.as_dict(private=True)))
    key = jwk.import_key(json.loads(key_file.read_text()))
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    agents_file, password_file = data_dir / "agents.toml", data_dir / "demo-agent-password"
    if not (agents_file.exists() and password_file.exists()):
        password = secrets.token_urlsafe(12)
        _write_private(password_file, password + "\n")
        agents_file.write_text(
            f'[agents.{DEMO_AGENT}]\nname = "{DEMO_AGENT_NAME}"\n'
            f'password_hash = "{hash_password(password)}"\n'
        )
    return key_file, jwks_file, agents_file


async def _cli(env: dict[str, str], *args: str, check: bool = True) -> bool:
    """Run a ``backchannel`` command; whether it succeeded (with ``check``, fail unless)."""
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backchannel",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await command.communicate()
    if command.returncode != 0 and check:
        raise DevError(f"`backchannel {' '.join(args[:2])}` failed: {err.decode().strip()}")
    return command.returncode == 0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _banner(config: PanelConfig, data_dir: Path) -> str:
    password_file = data_dir / "demo-agent-password"
    password = password_file.read_text().strip() if password_file.exists() else "(see agents.toml)"
    return f"""
Call-centre panel (examples/call_centre; docs/call-centre.md)
   panel:        {config.origin}/
   agent login:  {DEMO_AGENT}   password: {password}   ({DEMO_AGENT_NAME})
   its client:   {CLIENT_ID}, private_key_jwt (key in {data_dir / "client-key.json"})
   Try it: open the enrolment link above in one tab (the demo user's authenticator),
   the panel in another; log in, verify demo@example.com for a password reset, and
   approve, deny or answer "This wasn't me" in the authenticator.
"""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
