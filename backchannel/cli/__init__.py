"""The operator's command line: ``backchannel COMMAND`` (also ``python -m backchannel``).

Every command takes ``--json``. Exit codes: 0 success, 2 bad usage or
invalid input (settings, metadata, hints), 1 any other failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import asyncpg

from backchannel.cli import (
    audit,
    authorization_types,
    clients,
    devices,
    keys,
    migrate,
    policy,
    requests,
    revoke,
    serve,
    users,
    vapid,
)
from backchannel.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CommandError, Context, Output
from backchannel.oauth.provisioning import ProvisioningError
from backchannel.oauth.registration import RegistrationError
from backchannel.observability.logging import configure_logging
from backchannel.settings import Settings, SettingsError

__all__ = ["build_parser", "main"]

SERVER_COMMANDS = frozenset({"serve", "dev"})
# Options without a value that every command takes: accepted anywhere, even after "--".
ANYWHERE_FLAGS = ("--json", "--create-data-dir")
CREATE_DATA_DIR_HELP = (
    "without BACKCHANNEL_DATABASE_URL: start a new embedded database in BACKCHANNEL_DATA_DIR "
    "if there is none (dev always does)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backchannel",
        description="OpenID Connect CIBA authorization server. Configuration comes from "
        "BACKCHANNEL_* environment variables (see docs/configuration.md).",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--create-data-dir", action="store_true", help=CREATE_DATA_DIR_HELP)
    # Each command repeats them; SUPPRESS keeps a top-level one from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument(
        "--create-data-dir",
        action="store_true",
        default=argparse.SUPPRESS,
        help=CREATE_DATA_DIR_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands, common)
    migrate.add_parser(commands, common)
    clients.add_parser(commands, common)
    users.add_parser(commands, common)
    keys.add_parser(commands, common)
    vapid.add_parser(commands, common)
    requests.add_parser(commands, common)
    devices.add_parser(commands, common)
    revoke.add_parser(commands, common)
    audit.add_parser(commands, common)
    policy.add_parser(commands, common)
    authorization_types.add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = hoist_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        args, unknown = parser.parse_known_args(arguments)
        if unknown:  # reported with the usage of the command they were given to
            command_parser(parser, arguments).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(json=args.json)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        out.error("invalid configuration", exc.problems)
        return EXIT_USAGE
    _configure_logging(settings, command=args.command)
    try:
        args.run(Context(args, settings, out))
    except (RegistrationError, ProvisioningError) as exc:
        problems = getattr(exc, "problems", [])
        out.error("invalid input" if problems else str(exc), problems)
        return EXIT_USAGE
    except CommandError as exc:
        out.error(str(exc), exc.problems)
        return exc.exit_code
    except SettingsError as exc:
        out.error("invalid configuration", exc.problems)
        return EXIT_USAGE
    except (OSError, asyncpg.PostgresError) as exc:
        out.error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        logging.getLogger("backchannel.cli").debug("command failed", exc_info=True)
        out.error(f"{type(exc).__name__}: {exc} (set BACKCHANNEL_LOG_LEVEL=DEBUG for details)")
        return EXIT_FAILURE
    return EXIT_OK


def hoist_flags(argv: list[str]) -> list[str]:
    """Move ``--json`` and ``--create-data-dir`` from after ``--`` to before it.

    ``requests decide -- ID approve --json`` then means what it says. No
    positional value of this CLI (an auth_req_id, a device id) is spelled so.
    """
    if "--" not in argv:
        return argv
    split = argv.index("--")
    after = argv[split + 1 :]
    flags = [a for a in after if a in ANYWHERE_FLAGS]
    if not flags:
        return argv
    return [*argv[:split], *flags, "--", *(a for a in after if a not in ANYWHERE_FLAGS)]


def command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``argv`` names, for its usage line."""
    current = parser
    for token in argv:
        if token == "--":
            break
        choices = next(
            (
                action.choices
                for action in current._actions
                if isinstance(action, argparse._SubParsersAction)
            ),
            None,
        )
        if choices is None:
            break
        if token in choices:
            current = choices[token]
    return current


def _configure_logging(settings: Settings, *, command: str) -> None:
    server = command in SERVER_COMMANDS
    level = settings.log_level.upper() if server else "WARNING"
    if settings.log_level.upper() == "DEBUG":
        level = "DEBUG"
    root = logging.getLogger()
    if root.handlers:  # embedded (tests, another program): leave logging alone
        return
    # The server logs JSON (or text) with secrets masked; dev, unless told otherwise, and
    # other commands log text for people.
    log_format = settings.log_format
    if not server or (command == "dev" and not settings.is_given("log_format")):
        log_format = "text"
    configure_logging(level, log_format, sys.stderr)
    # pgserver narrates every pg_ctl call at INFO.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, root.level))
