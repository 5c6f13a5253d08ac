"""``backchannel dev`` on a chosen event loop, for bench/vs_peer.py and bench/flow_bench.py.

    CHECKOUT/.venv/bin/python bench/serve_dev.py [--loop asyncio|uvloop]

Runs the checkout's own ``backchannel dev`` (whatever package the interpreter
imports), after installing uvloop's event loop policy when asked, so that the
loop can be compared without changing the server launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from backchannel.cli import main as cli_main

    return cli_main(["dev"])


if __name__ == "__main__":
    sys.exit(main())
