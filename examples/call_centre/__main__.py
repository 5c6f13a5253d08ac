"""``python -m examples.call_centre``: serve the panel (settings in ``config``), or
``python -m examples.call_centre hash-password`` to make an agent's password hash."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import sys

from examples.call_centre.agents import hash_password
from examples.call_centre.config import ConfigError, PanelConfig
from examples.call_centre.serve import serve_panel

USAGE = "usage: python -m examples.call_centre [serve | hash-password]"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command == "hash-password":
        password = getpass.getpass("Password: ")
        if len(password) < 12:
            print("use at least 12 characters", file=sys.stderr)
            return 2
        if getpass.getpass("Again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if command != "serve" or len(argv) > 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        config = PanelConfig.from_env()
    except ConfigError as exc:
        print(f"call-centre panel: {exc}", file=sys.stderr)
        return 2
    print(f"call-centre panel on {config.origin}/ for {config.issuer}", flush=True)
    asyncio.run(_serve_until_signalled(config))
    return 0


async def _serve_until_signalled(config: PanelConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await serve_panel(config, stop)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
