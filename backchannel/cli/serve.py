"""``backchannel serve`` (production) and ``backchannel dev`` (a ready-to-try local server)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from hypercorn.utils import LifespanFailureError

from backchannel.app import MigrationsPending, create_app
from backchannel.cli.database import Database, check_migrated, open_database
from backchannel.cli.demo import Demo, ensure_demo
from backchannel.cli.migrate import apply_migrations, report_migrations
from backchannel.cli.output import CommandError, Context, UsageError, fields
from backchannel.cli.server import (
    Listening,
    bind,
    event_loop_factory,
    hypercorn_config,
    run_on_event_loop,
    serve,
)
from backchannel.db.clients import CIBA_GRANT
from backchannel.db.migrate import migrate
from backchannel.db.pool import connect
from backchannel.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "serve",
        parents=[common],
        help="run the server (needs BACKCHANNEL_DATABASE_URL)",
        description="Run the server with hypercorn on BACKCHANNEL_HOST:BACKCHANNEL_PORT until "
        "SIGINT or SIGTERM; then held long polls are answered and in-flight requests finish.",
    )
    _server_options(run)
    run.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    run.set_defaults(run=run_serve)

    dev = commands.add_parser(
        "dev",
        parents=[common],
        help="run a local server with a demo client and user",
        description="Start a local server for trying backchannel out: without "
        "BACKCHANNEL_DATABASE_URL it runs a private PostgreSQL in BACKCHANNEL_DATA_DIR, "
        "migrates it, creates a demo client and user, and prints how to use them.",
    )
    _server_options(dev)
    dev.set_defaults(run=run_dev)


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hypercorn-config",
        type=Path,
        metavar="TOML",
        help="hypercorn settings (TLS, timeouts, logs); bind comes from BACKCHANNEL_HOST/PORT",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        metavar="SECONDS",
        help="how long in-flight requests may finish at shutdown (default 10)",
    )


def run_serve(ctx: Context) -> None:
    settings = ctx.settings
    if settings.database_url is None:
        raise UsageError(
            "serve needs BACKCHANNEL_DATABASE_URL (postgresql://user:password@host/db); "
            "to try backchannel locally without a database, run `backchannel dev`"
        )
    listening = listen(ctx, settings)
    database = Database(settings.database_url, embedded=False)
    if ctx.args.migrate:
        applied = asyncio.run(apply_migrations(database.dsn))
        if ctx.out.json:
            report_migrations(ctx, applied)
        else:
            for name in applied:
                ctx.out.note(f"applied {name}")
    else:
        asyncio.run(check_migrated(database))
    if ctx.out.json:
        ctx.out.result({"listening": listening.url, "issuer": settings.issuer}, "")
    run_server(settings, listening)


def run_dev(ctx: Context) -> None:
    listening = listen(ctx, ctx.settings)
    with open_database(ctx.settings, create=True) as database:
        settings = dev_settings(ctx.settings, listening).replace(database_url=database.dsn)
        demo = asyncio.run(_prepare(database, settings))
        data = dev_instructions(settings, database, demo)
        ctx.out.result(data, lambda: dev_banner(data))
        issuer = urlsplit(settings.issuer)
        if issuer.hostname in ("127.0.0.1", "localhost", "::1") and issuer.port != listening.port:
            ctx.out.note(
                f"note: BACKCHANNEL_ISSUER is {settings.issuer} but the server listens on "
                f"{listening.url}; set BACKCHANNEL_ISSUER to the URL clients use"
            )
        run_server(settings, listening)


def dev_settings(settings: Settings, listening: Listening) -> Settings:
    """``dev``'s defaults where the operator set nothing: the issuer follows the port it
    listens on (``BACKCHANNEL_PORT=8001 backchannel dev`` prints :8001 everywhere), and
    every request is logged."""
    changes: dict[str, Any] = {}
    if not settings.is_given("access_log"):
        changes["access_log"] = True
    if not settings.is_given("issuer"):
        host = "127.0.0.1" if listening.host in ("0.0.0.0", "::", "") else listening.host
        candidate = settings.replace(issuer=Listening(listening.config, host, listening.port).url)
        try:
            candidate.validate()
        except SettingsError:  # an http issuer on a non-loopback address: keep the default
            pass
        else:
            changes["issuer"] = candidate.issuer
    return settings.replace(**changes)


async def _prepare(database: Database, settings: Settings) -> Demo:
    try:
        conn = await connect(database.dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(f"cannot connect to the database: {exc}") from exc
    try:
        await migrate(conn)
        return await ensure_demo(conn, settings)
    finally:
        await conn.close()


def listen(ctx: Context, settings: Settings) -> Listening:
    """Bind the port first, so that a port in use fails before anything else starts."""
    args = ctx.args
    try:
        config = hypercorn_config(args.hypercorn_config, graceful_timeout=args.graceful_timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        return bind(settings, config)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                "; another program uses that port: set BACKCHANNEL_PORT to a free one (0 picks one)"
            )
        raise CommandError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}{hint}"
        ) from exc


def run_server(settings: Settings, listening: Listening) -> None:
    app = create_app(settings)
    try:
        loop, _factory = event_loop_factory(settings.event_loop)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    log.info("serving on %s (event loop: %s)", listening.url, loop)
    try:
        run_on_event_loop(settings.event_loop, serve(app, listening.config))
    except MigrationsPending as exc:
        raise CommandError(str(exc)) from None
    except LifespanFailureError as exc:
        # The message carries the app's traceback as text; its last line names the cause.
        detail = str(exc).strip().strip("'").strip()
        log.debug("startup failed: %s", detail)
        cause = detail.splitlines()[-1] if detail else repr(exc)
        raise CommandError(f"the server failed to start: {cause}") from None


def program() -> str:
    """How the operator started us, to print commands they can paste."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "backchannel":
        found = shutil.which("backchannel")
        if found and os.path.exists(argv0) and os.path.samefile(found, argv0):
            return "backchannel"
        return shlex.quote(_short_path(argv0))
    return f"{shlex.quote(_short_path(sys.executable))} -m backchannel"


def _short_path(path: str) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else os.path.abspath(path)


def dev_instructions(settings: Settings, database: Database, demo: Demo) -> dict[str, Any]:
    secret = demo.client_secret or "CLIENT_SECRET"
    user = shlex.quote(f"{demo.client_id}:{secret}")
    authorize = (
        f"curl -s -u {user} {settings.backchannel_endpoint} "
        f"-d scope=openid -d login_hint={demo.login_hint} "
        f"-d binding_message={shlex.quote('Sign in to Demo? Code 4711')}"
    )
    token = (
        f"curl -s -u {user} {settings.token_endpoint} -H 'Prefer: wait=25' "
        f"-d grant_type={CIBA_GRANT} -d auth_req_id=AUTH_REQ_ID"
    )
    return {
        "issuer": settings.issuer,
        "discovery": settings.issuer + "/.well-known/openid-configuration",
        "authenticator": settings.issuer + "/authenticator/",
        "database": database.describe(settings),
        **demo.to_json(),
        "bc_authorize_command": authorize,
        # "--": an auth_req_id may start with "-".
        "approve_command": f"{program()} requests decide -- AUTH_REQ_ID approve",
        "token_command": token,
    }


def dev_banner(data: dict[str, Any]) -> str:
    secret = data["client_secret"]
    if secret is None:
        secret = (
            f"(unknown: {data['client_secret_file']} is missing or stale; "
            "delete the data directory to start afresh)"
        )
    summary = fields(
        [
            ("issuer", data["issuer"]),
            ("discovery", data["discovery"]),
            ("database", data["database"]),
            ("client_id", data["client_id"]),
            ("client_secret", secret),
            ("demo user", f"{data['subject']} (login_hint {data['login_hint']} or demo)"),
        ]
    )
    enrol = ""
    if data.get("enrolment_url"):
        minutes = max(1, int(data["enrolment_expires_in"]) // 60)
        enrol = f"""
Enrol an authenticator for the demo user (one-time link, {minutes} min; a new one
each start; `{program()} user enrol {data["subject"]}` makes another):
   {data["enrolment_url"]}
   Open it in Chrome, Edge or Firefox on this machine, allow notifications, and
   requests for the demo user then arrive as push notifications to approve there.
"""
    return f"""backchannel dev server

{summary}
{enrol}
Try the CIBA poll flow:
1. Ask for authentication (returns auth_req_id):
   {data["bc_authorize_command"]}
2. Approve it in the enrolled authenticator, or as the user would in another
   terminal in this folder:
   {data["approve_command"]}
3. Redeem it for tokens. Prefer: wait=25 holds the request until the user
   decides (up to 25 s; run it before step 2 to watch it answer). Without it,
   poll no more often than every 5 s: an earlier poll answers slow_down and
   raises the interval.
   {data["token_command"]}
"""
