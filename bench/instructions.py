"""Server instructions per request under callgrind: a noise-free comparison of checkouts.

    .venv/bin/python bench/instructions.py --peer PEER_DIR [--mode poll|bc] [--seconds 40]
        --variant NAME=CHECKOUT[,loop=uvloop][,env:KEY=VALUE] ...

Each variant's ``backchannel dev`` (bench/serve_dev.py, bench/vs_peer.py's
setup) runs under ``valgrind --tool=callgrind`` with instrumentation off; after
a warm-up the bench turns it on, counts an idle stretch (the background
workers' rounds, taken off later), loads the server for ``--seconds`` with
PEER_DIR/load.py (closed loop, one connection by default, so that the count
does not depend on how many requests a loop turn happens to batch) and dumps
the counters. The figure is the server process's instructions (user space:
the interpreter, the libraries, the event loop) per answered request;
PostgreSQL runs natively and is not counted (bench/sql_cost.py measures it).
Instruction counts do not move with the machine's load, so a few percent
between variants are real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from vs_peer import LOAD_CPU, SERVER_CPU, Variant, add_users, log  # noqa: E402


def callgrind(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], capture_output=True, check=True)


def dump(v: Variant, out_dir: Path) -> int:
    """Instructions counted since the last zeroing (dumps the counters)."""
    assert v.proc is not None
    before = set(out_dir.glob(f"{v.name}.out*"))
    callgrind(v.proc.pid, "-d")
    for _ in range(100):
        new = set(out_dir.glob(f"{v.name}.out*")) - before
        if new:
            time.sleep(0.5)  # written whole
            text = new.pop().read_text(errors="replace")
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if match:
                return int(match.group(1))
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def load(args: argparse.Namespace, v: Variant, seconds: float) -> dict[str, object]:
    assert v.proc is not None
    extra = ["--pool", "300"] if args.mode == "poll" else []
    cmd = ["taskset", "-c", LOAD_CPU, sys.executable, str(Path(args.peer) / "load.py"),
           "--engine", "raw", "--base", v.base, "--mode", args.mode, "-c", str(args.concurrency),
           "-d", str(seconds), "-w", "0", "--timeout", "120", "--bc-path", "/bc-authorize",
           "--hint", "user{i}", "--client-id", "perf-client", f"--client-secret={v.secret}",
           *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", required=True, help="the folder of load.py")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--mode", choices=("poll", "bc"), default="poll")
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--concurrency", type=int, default=1,
                    help="connections; 1 keeps the count free of how requests batch")  # fmt: skip
    ap.add_argument("--idle", type=float, default=15, help="idle seconds measured first")
    args = ap.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="callgrind-"))
    figures = {}
    for i, spec in enumerate(args.variant or ["backchannel="]):
        v = Variant.parse(spec, 8200 + i)
        out = out_dir / f"{v.name}.out"
        v.wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={out}"]  # fmt: skip
        log(f"{v.name}: starting under callgrind on cpu {SERVER_CPU}")
        v.start()
        try:
            v.ready(timeout=600)
            asyncio.run(add_users(v.dsn, 2000))
            assert v.proc is not None
            load(args, v, 8)  # warm-up, uninstrumented
            callgrind(v.proc.pid, "-i", "on")
            # The background workers' rounds (sealer, outboxes, housekeeper) run by the
            # clock, and under callgrind a request takes ~100 times as long: their
            # instructions per idle second are measured and taken off the loaded figure.
            callgrind(v.proc.pid, "-z")
            started = time.monotonic()
            time.sleep(args.idle)
            idle = dump(v, out_dir) / (time.monotonic() - started)
            callgrind(v.proc.pid, "-z")
            started = time.monotonic()
            res = load(args, v, args.seconds)
            loaded = dump(v, out_dir)
            wall = time.monotonic() - started
            callgrind(v.proc.pid, "-i", "off")
            requests = int(res["requests"])  # type: ignore[call-overload]
            figures[v.name] = (loaded - idle * wall) / max(1, requests)
            log(f"{v.name}: {requests} requests in {wall:.0f} s,"
                f" {loaded / max(1, requests) / 1e6:.3f} M instructions per request,"
                f" {figures[v.name] / 1e6:.3f} M less the idle rate ({idle / 1e6:.1f} M/s);"
                f" answers {res['responses']}")  # fmt: skip
        finally:
            v.stop()
    first = next(iter(figures.values()))
    for name, value in figures.items():
        print(f"{args.mode} {name}: {value / 1e6:.3f} M instructions per request"
              f" ({value / first:.3f}× the first)")  # fmt: skip


if __name__ == "__main__":
    main()
