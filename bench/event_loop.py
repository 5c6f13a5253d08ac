"""uvloop against asyncio for `backchannel serve`, measured in one run.

Two `backchannel serve` processes, identical but for BACKCHANNEL_EVENT_LOOP
(asyncio, uvloop), share one embedded PostgreSQL. Both are pinned to core 0 and
loaded one at a time; wrk (-t1 -c32) and PostgreSQL run on core 1. Workloads:
POST /healthz (answered 405 without a database call: the HTTP stack alone),
token polls on pending requests (one statement each) and /bc-authorize. The
rounds alternate the two servers, so drifting load on the machine touches both
alike. Reported: req/s, p50/p99, the server's CPU µs per request, and the
uvloop/asyncio ratio of each.

    .venv/bin/python bench/event_loop.py            # 5 rounds of 4 s per workload and loop
    .venv/bin/python bench/event_loop.py --quick    # 2 rounds of 2 s

Writes bench/results/event-loop.md and event-loop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    PYTHON,
    ROOT,
    Database,
    Fixture,
    LoadResult,
    bc_bodies,
    combine,
    create_users,
    free_port,
    insert_pending_requests,
    log,
    place_postgres,
    poll_bodies,
    prioritise_session,
    priority_prefix,
    process_cpu_seconds,
    provision,
    run_wrk,
    start_database,
    with_query,
)

from backchannel.db.pool import connect

LOOPS = ("asyncio", "uvloop")
# "http": POST /healthz, answered 405 without touching the database: the HTTP stack alone.
WORKLOADS = ("http", "poll", "bc-authorize")
PATHS = {"http": "/healthz", "poll": "/token", "bc-authorize": "/bc-authorize"}


class ServeProcess:
    """`python -m backchannel serve` on one core; what harness.run_wrk needs of a server."""

    def __init__(self, loop: str, dsn: str, cpus: str, log_dir: Path, nice: int = 0) -> None:
        self.loop = loop
        self.nice = nice
        self.port = free_port()
        self.cpus = cpus
        self.log_path = log_dir / f"serve-{loop}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")},
            "BACKCHANNEL_DATABASE_URL": with_query(dsn, application_name=f"bench_{loop}"),
            "BACKCHANNEL_ISSUER": "http://127.0.0.1",
            "BACKCHANNEL_PORT": str(self.port),
            "BACKCHANNEL_EVENT_LOOP": loop,
            "BACKCHANNEL_LOG_LEVEL": "WARNING",
            "BACKCHANNEL_POLL_INTERVAL": "5",
            "BACKCHANNEL_MAX_REQUEST_EXPIRY": "1800",
            # Each /bc-authorize names a user of its own; the caps would refuse nothing.
            "BACKCHANNEL_FATIGUE_MAX_PENDING": "0",
            "BACKCHANNEL_FATIGUE_MAX_PROMPTS": "0",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        cmd = [
            *priority_prefix(self.nice),
            "taskset", "-c", self.cpus, PYTHON, "-m", "backchannel", "serve",
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        prioritise_session(self.proc.pid, self.nice)  # its own session
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve ({self.loop}) exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2):
                    return
            except (OSError, urllib.error.HTTPError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve ({self.loop}) did not start") from None
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def bodies_for(
    workload: str, conn: Any, fixture: Fixture, count: int, work_dir: Path, name: str
) -> Path:
    """``count`` request bodies never sent before: fresh pending ids, or new users."""
    if workload == "http":
        lines = ["x=1"]
    elif workload == "poll":
        lines = poll_bodies(await insert_pending_requests(conn, fixture, count))
    else:
        lines = bc_bodies(await create_users(conn, fixture, count))
    return write_lines(work_dir / f"{name}.txt", lines)


async def main(args: argparse.Namespace) -> int:
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(c) for c in args.load_cpu.split(",")})
    if args.nice:  # this script and wrk, its child
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        prioritise_session(os.getpid(), args.nice)
    out_dir = BENCH / "results"
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="backchannel-loop-bench-"))
    db: Database = await start_database(args.database_url, work_dir)
    servers: dict[str, ServeProcess] = {}
    runs: dict[tuple[str, str], list[LoadResult]] = {}
    try:
        place_postgres(db, args.load_cpu, args.nice)
        conn = await connect(db.dsn)
        fixture = await provision(conn)
        for loop in LOOPS:
            servers[loop] = ServeProcess(loop, db.dsn, args.server_cpu, log_dir, args.nice)
            log(f"starting serve with {loop} on cpu {args.server_cpu}")
            servers[loop].start()
        # Enough fresh bodies per run that none is sent twice (an early re-poll
        # would answer slow_down and measure something else).
        per_run = int(args.max_rate * (args.seconds + 1))

        async def one(workload: str, loop: str, name: str, seconds: float) -> LoadResult:
            path = PATHS[workload]
            bodies = await bodies_for(workload, conn, fixture, per_run, work_dir, name)
            return await run_wrk(
                name, servers[loop], path, bodies, duration=seconds,  # type: ignore[arg-type]
                concurrency=args.concurrency, load_cpu=args.load_cpu, work_dir=work_dir,
                auth=fixture.auth, postmaster_pid=db.postmaster_pid, tail=0.5, nice=args.nice,
            )  # fmt: skip

        for workload in WORKLOADS:
            for loop in LOOPS:
                await one(workload, loop, f"{workload}-{loop}-warmup", args.warmup)
        for r in range(args.rounds):
            order = LOOPS if r % 2 == 0 else tuple(reversed(LOOPS))
            for workload in WORKLOADS:
                for loop in order:
                    result = await one(workload, loop, f"{workload}-{loop}-{r}", args.seconds)
                    runs.setdefault((workload, loop), []).append(result)
                    log(f"round {r} {workload} {loop}: {result.rps:.0f} req/s, "
                        f"server CPU {result.server_cpu_pct:.0f}%")  # fmt: skip
        await conn.close()
    finally:
        for server in servers.values():
            server.stop()
        db.stop()
        shutil.rmtree(work_dir, ignore_errors=True)

    results = summarise(runs, args)
    text = render(results)
    print(text)
    (out_dir / "event-loop.md").write_text(text + "\n")
    (out_dir / "event-loop.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def summarise(runs: dict[tuple[str, str], list[LoadResult]], args: argparse.Namespace) -> dict:
    results: dict[str, Any] = {
        "config": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "concurrency": args.concurrency,
            "server_cpu": args.server_cpu,
            "load_and_postgres_cpu": args.load_cpu,
            "nice": args.nice,
        },
        "python": sys.version.split()[0],
        "versions": {p: version_of(p) for p in ("uvloop", "hypercorn", "starlette", "asyncpg")},
        "workloads": {},
    }
    for workload in WORKLOADS:
        entry: dict[str, Any] = {}
        for loop in LOOPS:
            combined = combine(f"{workload}-{loop}", runs[(workload, loop)])
            entry[loop] = {
                "req_per_s": round(combined.rps, 1),
                "p50_ms": round(combined.p50_ms, 2),
                "p99_ms": round(combined.p99_ms, 2),
                "server_cpu_pct": round(combined.server_cpu_pct, 1),
                "cpu_us_per_req": round(1e6 * combined.server_cpu_s / max(1, combined.requests)),
                "answers": combined.answers,
                "per_round_req_per_s": [round(r.rps, 1) for r in runs[(workload, loop)]],
            }
        entry["ratio_req_per_s"] = round(
            entry["uvloop"]["req_per_s"] / entry["asyncio"]["req_per_s"], 3
        )
        entry["ratio_cpu_per_req"] = round(
            entry["uvloop"]["cpu_us_per_req"] / entry["asyncio"]["cpu_us_per_req"], 3
        )
        entry["round_ratios"] = [
            round(u.rps / a.rps, 3)
            for u, a in zip(runs[(workload, "uvloop")], runs[(workload, "asyncio")], strict=True)
        ]
        results["workloads"][workload] = entry
    return results


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def render(results: dict[str, Any]) -> str:
    lines = [
        "# backchannel serve: uvloop against asyncio",
        "",
        f"Python {results['python']}, "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + f"; {results['config']['rounds']} rounds of {results['config']['seconds']} s, "
        f"wrk -c{results['config']['concurrency']}.",
        "",
        "| workload | loop | req/s | p50 ms | p99 ms | server CPU | CPU µs/req |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, entry in results["workloads"].items():
        for loop in LOOPS:
            e = entry[loop]
            lines.append(
                f"| {workload} | {loop} | {e['req_per_s']:.0f} | {e['p50_ms']:.2f} | "
                f"{e['p99_ms']:.2f} | {e['server_cpu_pct']:.0f} % | {e['cpu_us_per_req']} |"
            )
    lines += [
        "",
        "| workload | uvloop/asyncio req/s | per round | CPU per request |",
        "|---|---|---|---|",
    ]
    for workload, entry in results["workloads"].items():
        lines.append(
            f"| {workload} | {entry['ratio_req_per_s']:.2f} | "
            f"{' '.join(f'{r:.2f}' for r in entry['round_ratios'])} | "
            f"{entry['ratio_cpu_per_req']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="per workload, loop and round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--load-cpu", default="1", help="wrk, PostgreSQL and this script")
    parser.add_argument("--max-rate", type=float, default=6000, help="req/s bodies are made for")
    parser.add_argument("--database-url", default=os.environ.get("BACKCHANNEL_DATABASE_URL"))
    parser.add_argument(
        "--nice", type=int, default=0,
        help="niceness of servers, wrk, PostgreSQL and their sessions (negative: needs root)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup = 2, 2.0, 1.0
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
