"""``backchannel dev`` on a chosen event loop, for bench/vs_peer.py and bench/flow_bench.py.

    CHECKOUT/.venv/bin/python bench/serve_dev.py [--loop asyncio|uvloop]

Runs the checkout's own ``backchannel dev`` (whatever package the interpreter
imports) on the loop asked for: ``BACKCHANNEL_EVENT_LOOP`` is set to it (the
launcher's default, ``auto``, would take uvloop whenever it is installed), and
uvloop's event loop policy is installed too, for checkouts whose launcher
predates that setting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    os.environ["BACKCHANNEL_EVENT_LOOP"] = args.loop
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from backchannel.cli import main as cli_main

    return cli_main(["dev"])


if __name__ == "__main__":
    sys.exit(main())
