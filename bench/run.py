"""backchannel benchmark: throughput as ratios against a baseline measured in the same run.

    .venv/bin/python bench/run.py [--duration 10] [--concurrency 32] [--quick]
                                  [--profile] [--what-if] [--nice -20]

Starts a private PostgreSQL (or uses BACKCHANNEL_DATABASE_URL, which must name a
scratch database), migrates it, provisions one client_secret_basic client and
users (a fresh one for every /bc-authorize request, so the push-fatigue caps
never refuse), then runs each server alone under the same hypercorn setup
(bench/hypercorn.toml, 1 worker process) pinned to one core with taskset:

  baseline      bench/baseline_app.py: read form, one UPDATE ... RETURNING, JSON
  /bc-authorize client_secret_basic, login_hint of an existing user
  /token        CIBA normal polls of pending requests, each id at most once per interval
  long polling  held polls (Prefer: wait=25): decision COMMIT -> token response latency

wrk (1 thread, bench/wrk/rotate.lua) drives the load from the other core.
Results go to stdout, bench/results/latest.md and bench/results/latest.json;
bench/README.md explains them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import asyncpg
from harness import (
    BENCH,
    COUNTER_ROWS,
    POLL_INTERVAL,
    POLL_LABEL,
    REQUESTED_EXPIRY,
    RESET_LABEL,
    ROOT,
    Census,
    Database,
    Fixture,
    LoadResult,
    Server,
    bc_bodies,
    create_users,
    insert_pending_requests,
    log,
    place_postgres,
    poll_bodies,
    prioritise_session,
    profiled,
    provision,
    run_wrk,
    start_database,
    statement_census,
    with_query,
)
from longpoll import long_poll_phase

from backchannel.db.migrate import migrate
from backchannel.db.pool import connect

TARGET_BC_RATIO = 0.60
TARGET_POLL_RATIO = 0.85
TARGET_POLL_ROUND_TRIPS = 1
TARGET_LONG_POLL_P99_MS = 100.0
BUSY_ENOUGH_PCT = 90.0  # below this the server was held back by something else


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        db: Database,
        conn: asyncpg.Connection,
        fixture: Fixture,
        work_dir: Path,
    ) -> None:
        self.args, self.db, self.conn, self.fixture, self.work_dir = (
            args, db, conn, fixture, work_dir,
        )  # fmt: skip
        self.log_dir = BENCH / "results" / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.servers: list[Server] = []
        self.counter_file = write_lines(
            work_dir / "counter.txt", [f"id={i}" for i in range(1, COUNTER_ROWS + 1)]
        )
        self.rate_bound = 5000.0  # req/s no phase will reach; lowered after baseline-1
        self.profiles: dict[str, Any] = {}
        self.censuses: dict[str, Census] = {}

    # -- servers

    async def start(self, kind: str, *, reset_off: bool = False) -> Server:
        env = {"BACKCHANNEL_LOG_LEVEL": "WARNING", "PYTHONDONTWRITEBYTECODE": "1"}
        if reset_off:
            env["BENCH_POOL_RESET"] = "off"
        if kind == "baseline":
            env["BENCH_DATABASE_URL"] = with_query(self.db.dsn, application_name="bench_baseline")
            target = "bench/baseline_app.py:app"
        else:
            env |= {
                "BACKCHANNEL_DATABASE_URL": with_query(
                    self.db.dsn, application_name="bench_server"
                ),
                "BACKCHANNEL_ISSUER": "http://127.0.0.1",
                "BACKCHANNEL_POLL_INTERVAL": str(POLL_INTERVAL),
                "BACKCHANNEL_MAX_REQUEST_EXPIRY": str(REQUESTED_EXPIRY),
            }
            target = "bench/backchannel_server.py:app"
        a = self.args
        if kind == "backchannel":
            await migrate(self.conn)  # the tree may have gained a migration since provisioning
        server = Server(kind, target, env, a.server_cpu, self.log_dir, a.nice)
        self.servers.append(server)
        log(f"{kind}: starting hypercorn on cpu {a.server_cpu}")
        server.start()
        return server

    # -- load

    def wrk(
        self,
        name: str,
        server: Server,
        path: str,
        bodies: Path,
        duration: float,
        *,
        auth: str | None = None,
        ids_out: Path | None = None,
    ) -> Any:
        a = self.args
        return run_wrk(
            name, server, path, bodies, duration=duration, concurrency=a.concurrency,
            load_cpu=a.load_cpu, work_dir=self.work_dir, nice=a.nice, auth=auth, ids_out=ids_out,
        )  # fmt: skip

    async def measure(
        self,
        name: str,
        server: Server,
        path: str,
        bodies: Path,
        warm_bodies: Path | None = None,
        *,
        auth: str | None = None,
        ids_out: Path | None = None,
        profile: bool = False,
        warmup: bool = True,
    ) -> LoadResult:
        a = self.args
        if warmup:
            await self.wrk(f"{name}-warmup", server, path, warm_bodies or bodies, a.warmup,
                           auth=auth, ids_out=ids_out)  # fmt: skip
        log(f"{name}: {a.duration:g} s at concurrency {a.concurrency}")
        load = self.wrk(name, server, path, bodies, a.duration, auth=auth, ids_out=ids_out)
        if profile:
            assert server.worker_pid is not None
            out = BENCH / "results" / f"profile-{name}.txt"
            result, summary = await profiled(load, server.worker_pid, a.duration, out, a.load_cpu)
            self.profiles[name] = {"raw_stacks": str(out.relative_to(ROOT)), **summary}
        else:
            result = await load
        log(
            f"{name}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
            f"{result.p99_ms:.1f} ms, server CPU {result.server_cpu_pct:.0f}%"
        )
        return result

    async def census(
        self, name: str, server: Server, app_name: str, path: str, bodies: Path,
        count_sql: str, auth: str | None = None,
    ) -> None:  # fmt: skip
        load = self.wrk(f"{name}-census", server, path, bodies, self.args.census, auth=auth)
        self.censuses[name] = await statement_census(self.db, self.conn, app_name, count_sql, load)
        c = self.censuses[name]
        log(f"{name}: {c.per_request():.2f} statements per request over {c.requests} requests")

    async def pending(self, count: int, created: list[str]) -> tuple[list[str], int]:
        """``count`` never-polled pending ids: from ``created`` first, the rest inserted."""
        ids = created[:count]
        missing = max(0, count - len(ids))
        if missing:
            ids += await insert_pending_requests(self.conn, self.fixture, missing)
        return ids, missing

    # -- phases

    async def baseline(
        self, name: str, *, reset_off: bool = False, census: bool = False
    ) -> LoadResult:
        server = await self.start("baseline", reset_off=reset_off)
        try:
            result = await self.measure(name, server, "/bump", self.counter_file)
            if census:
                await self.census(name, server, "bench_baseline", "/bump", self.counter_file,
                                  "SELECT sum(n) FROM bench_counter")  # fmt: skip
        finally:
            server.stop()
        return result

    async def bc_file(self, name: str, count: int) -> Path:
        """``count`` /bc-authorize bodies, each naming a new user (so that the
        push-fatigue caps never refuse one; wrk would wrap around if it ran out)."""
        hints = await create_users(self.conn, self.fixture, max(200, count))
        return write_lines(self.work_dir / f"{name}-bodies.txt", bc_bodies(hints))

    async def bc_authorize(
        self, server: Server, name: str = "bc-authorize", *, census: bool = False,
        profile: bool = False,
    ) -> tuple[LoadResult, list[str]]:  # fmt: skip
        """/bc-authorize; also returns every auth_req_id it created (for the polls)."""
        a = self.args
        ids_file = self.work_dir / f"ids-{name}.txt"
        auth = self.fixture.auth
        warm = await self.bc_file(f"{name}-warm", math.ceil(self.rate_bound * a.warmup))
        first = await self.wrk(f"{name}-warmup", server, "/bc-authorize", warm, a.warmup,
                               auth=auth, ids_out=ids_file)  # fmt: skip
        rate = 1.5 * max(first.rps, first.rps_per_cpu)  # users enough for the measured runs
        main = await self.bc_file(name, math.ceil(rate * a.duration))
        result = await self.measure(name, server, "/bc-authorize", main, auth=auth,
                                    ids_out=ids_file, profile=profile, warmup=False)  # fmt: skip
        if census:
            bodies = await self.bc_file(f"{name}-census", math.ceil(rate * a.census))
            await self.census(name, server, "bench_server", "/bc-authorize", bodies,
                              "SELECT count(*) FROM auth_requests", auth)  # fmt: skip
        return result, read_lines(ids_file)

    async def polls(
        self, server: Server, created: list[str], rate_bound: float, name: str = "poll",
        *, census: bool = False, profile: bool = False,
    ) -> tuple[LoadResult, dict[str, int]]:  # fmt: skip
        """Normal polls over enough distinct pending ids that none is polled twice within
        the interval even at ``rate_bound`` req/s. Warm-up and census use their own ids."""
        a = self.args
        main, added_main = await self.pending(
            math.ceil(rate_bound * (POLL_INTERVAL + 1.5)), created
        )
        created = created[len(main) :]
        warm, added_warm = await self.pending(math.ceil(rate_bound * (a.warmup + 1)), created)
        added = added_warm + added_main
        if added:
            log(f"{name}: {added} pending requests inserted directly in the DB")
        files = {
            key: write_lines(self.work_dir / f"{name}-{key}.txt", poll_bodies(ids))
            for key, ids in (("warm", warm), ("main", main))
        }
        auth = self.fixture.auth
        result = await self.measure(name, server, "/token", files["main"], files["warm"],
                                    auth=auth, profile=profile)  # fmt: skip
        if census:
            ids, _ = await self.pending(math.ceil(rate_bound * (a.census + 1)), [])
            census_file = write_lines(self.work_dir / f"{name}-census.txt", poll_bodies(ids))
            await self.census(name, server, "bench_server", "/token", census_file,
                              "SELECT sum(poll_count) FROM auth_requests", auth)  # fmt: skip
        return result, {"distinct": len(main), "added_directly_in_db": added_main}


# --------------------------------------------------------------------------- main


def version_of(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def machine_facts(pg_version: str, args: argparse.Namespace) -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip()

    dirty = run("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": run("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
        + (" (+uncommitted changes)" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "postgresql_where": "BACKCHANNEL_DATABASE_URL"
        if args.database_url
        else "embedded (pgserver), synchronous_commit=off, fsync=off",
        "hypercorn": version_of("hypercorn"),
        "starlette": version_of("starlette"),
        "asyncpg": version_of("asyncpg"),
        "wrk": run("wrk", "--version").split("[")[0].strip() or "?",
    }


async def main(args: argparse.Namespace) -> int:
    for tool, how in (("wrk", "apt-get update && apt-get install -y wrk"),
                      ("taskset", "apt-get install -y util-linux")):  # fmt: skip
        if not shutil.which(tool):
            print(f"{tool} is not installed: {how}", file=sys.stderr)
            return 2
    if args.profile and not (
        shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()
    ):
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        log("WARNING: fewer than 2 cores: the server and the load generator share one")
    os.sched_setaffinity(0, {int(c) for c in args.load_cpu.split(",")})
    if args.nice:  # this script and wrk, its child
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        prioritise_session(os.getpid(), args.nice)

    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="backchannel-bench-"))
    started = time.monotonic()
    db = await start_database(args.database_url, work_dir)
    bench: Bench | None = None
    results: dict[str, Any] = {}
    try:
        place_postgres(db, args.pg_cpus, args.nice)
        conn = await connect(db.dsn)  # backchannel's json/jsonb codecs
        pg_version = await conn.fetchval("SHOW server_version")
        log(f"provisioning a client and {COUNTER_ROWS} counter rows")
        fixture = await provision(conn)
        results["machine"] = machine_facts(pg_version, args)
        results["config"] = {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "census_s": args.census,
            "concurrency": args.concurrency,
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
            "postgres_cpus": args.pg_cpus if db.postmaster_pid else "not pinned (external)",
            "nice": args.nice,
            "hypercorn": "bench/hypercorn.toml: 1 worker process, asyncio, no access log",
            "poll_interval_s": POLL_INTERVAL,
            "db_pool": "asyncpg min 2 / max 10 (backchannel's defaults) in both apps",
        }
        bench = Bench(args, db, conn, fixture, work_dir)

        baselines = [await bench.baseline("baseline-1", census=True)]
        bench.rate_bound = 1.3 * max(baselines[0].rps, baselines[0].rps_per_cpu)
        app = await bench.start("backchannel")
        bc, created = await bench.bc_authorize(app, census=True)
        rate_bound = bench.rate_bound = max(bench.rate_bound, 1.3 * bc.rps_per_cpu)
        poll, poll_ids = await bench.polls(app, created, rate_bound, census=True)
        log(f"long polling: {args.decisions} decisions, {args.concurrency} polls held at once")
        long_poll = await long_poll_phase(
            app, db, fixture, decisions=args.decisions, held=args.concurrency, spacing=0.02,
            census=lambda load: statement_census(
                db, conn, "bench_server",
                "SELECT count(*) FROM auth_requests WHERE status = 'redeemed'", load,
            ),
        )  # fmt: skip
        log(f"long polling: p50 {long_poll['p50_ms']} ms, p99 {long_poll['p99_ms']} ms")
        if args.profile:
            await bench.bc_authorize(app, "bc-authorize-profiled", profile=True)
            await bench.polls(app, [], rate_bound, "poll-profiled", profile=True)
        app.stop()
        if not args.quick:
            baselines.append(await bench.baseline("baseline-2"))

        what_if: dict[str, Any] = {}
        if args.what_if:
            nb = await bench.baseline("baseline-noreset", reset_off=True, census=True)
            app = await bench.start("backchannel", reset_off=True)
            nbc, _ = await bench.bc_authorize(app, "bc-authorize-noreset")
            npoll, _ = await bench.polls(app, [], rate_bound, "poll-noreset", census=True)
            app.stop()
            what_if = {r.name: r.summary() for r in (nb, nbc, npoll)}

        results["phases"] = {r.name: r.summary() for r in (*baselines, bc, poll)}
        results["baseline_runs"] = [r.name for r in baselines]
        results["census"] = {k: c.summary() for k, c in bench.censuses.items()}
        results["poll_ids"] = poll_ids
        results["long_poll"] = long_poll
        results["profiles"] = bench.profiles
        results["what_if_no_pool_reset"] = what_if
        results["verdicts"] = verdicts(results)
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        await conn.execute("DROP TABLE IF EXISTS bench_counter")
        await conn.close()
    finally:
        for server in bench.servers if bench else []:
            server.stop()
        db.stop()
        shutil.rmtree(work_dir, ignore_errors=True)

    text = render(results)
    print(text)
    (out_dir / "latest.md").write_text(text + "\n")
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"wrote {out_dir / 'latest.md'} and {out_dir / 'latest.json'}")
    return 0 if all(v["pass"] for v in results["verdicts"].values()) else 1


# --------------------------------------------------------------------------- verdicts, report


def baseline_of(results: dict[str, Any]) -> dict[str, float]:
    runs = [results["phases"][n] for n in results["baseline_runs"]]
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("rps", "rps_per_cpu")}


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    p, lp, census = results["phases"], results["long_poll"], results["census"]
    base = baseline_of(results)
    bc, poll = p["bc-authorize"], p["poll"]
    pending = poll["answers"].get("authorization_pending/400", 0)
    answered = sum(poll["answers"].values())
    pc = census.get("poll", {})
    by = pc.get("by_statement_per_request", {})
    poll_statement = by.get(POLL_LABEL, math.nan)
    others = {k: n for k, n in by.items() if k not in (POLL_LABEL, RESET_LABEL)}
    round_trips = pc.get("statements_per_request", math.nan)
    lp_ok = lp["answers"].get("200 with tokens", 0)
    out: dict[str, dict[str, Any]] = {}
    for key, r, target in (
        ("bc_authorize", bc, TARGET_BC_RATIO),
        ("poll", poll, TARGET_POLL_RATIO),
    ):
        clean = r["socket_errors"] == 0 and (key == "poll" or set(r["answers"]) == {"200"})
        ratio = r["rps"] / base["rps"]
        ratio_cpu = r["rps_per_cpu"] / base["rps_per_cpu"]
        out[f"{key}_ratio"] = {
            "value": round(ratio, 3),
            "target": f">= {target:.2f}",
            "pass": clean and ratio >= target,
        }
        out[f"{key}_ratio_per_cpu"] = {
            "value": round(ratio_cpu, 3), "target": f">= {target:.2f}",
            "pass": clean and ratio_cpu >= target,
        }  # fmt: skip
    out["poll_answers_all_pending"] = {
        "value": f"{pending}/{answered}",
        "target": "100% authorization_pending",
        "pass": answered > 0 and pending == answered and poll["socket_errors"] == 0,
    }
    out["poll_statements_by_backchannel"] = {
        "value": f"{poll_statement:.2f} poll statement + {sum(others.values()):.2f} other",
        "target": "the poll is 1 statement; others only amortised (< 0.1 per poll)",
        "pass": abs(poll_statement - 1) <= 0.01 and all(n < 0.1 for n in others.values()),
    }
    out["poll_db_round_trips"] = {
        "value": round(round_trips, 2),
        "target": f"== {TARGET_POLL_ROUND_TRIPS}",
        "pass": abs(round_trips - TARGET_POLL_ROUND_TRIPS) <= 0.01,
    }
    out["long_poll_p99"] = {
        "value": lp["p99_ms"],
        "target": f"< {TARGET_LONG_POLL_P99_MS:g} ms over >= 200 decisions",
        "pass": lp["p99_ms"] < TARGET_LONG_POLL_P99_MS and lp_ok == lp["decisions"] >= 200,
    }
    return out


def census_parts(cs: dict[str, Any], floor: float = 0.05) -> str:
    """Statements per request, largest first; the rare ones (background workers, cache
    refills: under ``floor`` per request) summed up at the end."""
    by = cs["by_statement_per_request"]
    parts = [f"{n:.2f} × {k}" for k, n in by.items() if n >= floor]
    rare = sum(n for n in by.values() if n < floor)
    if rare:
        parts.append(f"{rare:.2f} × others (background workers, cache refills)")
    return "; ".join(parts)


def render(results: dict[str, Any]) -> str:
    m, c, p = results["machine"], results["config"], results["phases"]
    v, lp = results["verdicts"], results["long_poll"]
    base = baseline_of(results)

    def mark(key: str) -> str:
        return "PASS" if v[key]["pass"] else "FAIL"

    def row(name: str, r: dict[str, Any], base: dict[str, float], key: str | None) -> str:
        ratio = r["rps"] / base["rps"]
        ratio_cpu = r["rps_per_cpu"] / base["rps_per_cpu"]
        verdict = f" {mark(key + '_ratio')} |" if key else " |"
        verdict_cpu = f" {mark(key + '_ratio_per_cpu')} |" if key else " |"
        target = f" {v[key + '_ratio']['target']} |" if key else " |"
        return (
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['server_cpu_pct']:.0f}% | {r['cpu_us_per_request']:.0f} | "
            f"{ratio:.2f} |{verdict} {ratio_cpu:.2f} |{verdict_cpu}{target}"
        )

    head = [
        "| phase | req/s | p50 ms | p99 ms | server CPU | CPU µs/req | ratio req/s | result "
        "| ratio per CPU-s | result | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    lines = [
        f"# backchannel bench — {m['date']} — commit {m['commit']}",
        "",
        f"machine: {m['nproc']} cores ({m['cpu']}), load average at start {m['loadavg_at_start']};"
        f" Python {m['python']}; PostgreSQL {m['postgresql']} [{m['postgresql_where']}];"
        f" hypercorn {m['hypercorn']}, Starlette {m['starlette']}, asyncpg {m['asyncpg']},"
        f" {m['wrk']}",
        f"setup: each server alone, hypercorn with 1 worker on cpu {c['server_cpu']} (taskset);"
        f" wrk (1 thread, {c['concurrency']} connections) and this script on cpu"
        f" {c['load_cpu']}; PostgreSQL on cpu {c['postgres_cpus']}, sharing the machine with"
        f" the generator; nice {c['nice']}; {c['duration_s']:g} s per phase after"
        f" {c['warmup_s']:g} s warm-up; {c['db_pool']}",
        "",
        *head,
    ]
    for n in results["baseline_runs"]:
        lines.append(row(n + " (UPDATE…RETURNING)", p[n], base, None))
    lines.append(row("/bc-authorize", p["bc-authorize"], base, "bc_authorize"))
    lines.append(row("/token normal poll", p["poll"], base, "poll"))
    lines.append("")
    lines.append(
        "ratio req/s: against the mean baseline req/s (the targets' measure). ratio per CPU-s:"
        " each rate divided by the server worker's own CPU time, i.e. the rate one whole core"
        " would sustain; unlike req/s it does not move when other processes take the core."
    )
    low = [n for n, r in p.items() if r["server_cpu_pct"] < BUSY_ENOUGH_PCT]
    if low:
        lines.append(
            f"WARNING: the server worker used < {BUSY_ENOUGH_PCT:g}% of its core in"
            f" {', '.join(low)}: other processes on the machine (see the load average) or a"
            " saturated generator/PostgreSQL core held it back, so the req/s ratios are"
            " disturbed; read the per-CPU-s ratios."
        )
    poll = p["poll"]
    mix = ", ".join(f"{k} {n}" for k, n in sorted(poll["answers"].items(), key=lambda x: -x[1]))
    gap = poll["min_reuse_gap_s"]
    ids = results["poll_ids"]
    lines += [
        "",
        f"poll answers: {mix}; socket errors {poll['socket_errors']} →"
        f" {mark('poll_answers_all_pending')}",
        f"poll pacing: {ids['distinct']} distinct pending ids"
        f" ({ids['distinct'] - ids['added_directly_in_db']} created by /bc-authorize,"
        f" {ids['added_directly_in_db']} inserted directly in the DB); "
        + (
            f"{poll['reuses']} re-polls, closest {gap:.2f} s apart"
            if gap is not None
            else "no id polled twice"
        )
        + f" (interval {c['poll_interval_s']} s)",
        "",
        f"statements PostgreSQL ran per request ({c['census_s']:g} s wrk run per phase with"
        " log_statement=all; requests counted from the rows):",
    ]
    for name, cs in results["census"].items():
        lines.append(
            f"- {name}: {cs['statements_per_request']:.2f} over {cs['requests']} requests —"
            f" {census_parts(cs)}"
        )
    lines += [
        f"normal poll: statements sent by backchannel"
        f" {v['poll_statements_by_backchannel']['value']} per poll →"
        f" {mark('poll_statements_by_backchannel')};"
        f" round trips to PostgreSQL {v['poll_db_round_trips']['value']} (target == 1) →"
        f" {mark('poll_db_round_trips')}",
        "",
        f"long polling (Prefer: wait=25, {lp['held_at_once']} polls held at once, one"
        f" record_decision every {lp['decision_spacing_ms']:g} ms on the bench's own"
        f" connection): decision COMMIT → token response p50 {lp['p50_ms']} ms, p90"
        f" {lp['p90_ms']} ms, p99 {lp['p99_ms']} ms, max {lp['max_ms']} ms over"
        f" {lp['decisions']} decisions; answers {lp['answers']} (target p99 <"
        f" {TARGET_LONG_POLL_P99_MS:g} ms) → {mark('long_poll_p99')}",
    ]
    lc = lp.get("census")
    if lc:
        lines.append(
            f"- statements per long-polled decision (server side, {lc['requests']} decisions):"
            f" {lc['statements_per_request']:.2f} — {census_parts(lc)}"
        )
    wi = results.get("what_if_no_pool_reset") or {}
    if wi:
        wbase = wi["baseline-noreset"]
        lines += [
            "",
            "what-if (no target): both apps' asyncpg pools with a no-op `reset`, so releasing a"
            " connection sends nothing (ratios against the no-reset baseline):",
            "",
            *head,
            row("baseline-noreset", wbase, wbase, None),
        ]
        for name in ("bc-authorize-noreset", "poll-noreset"):
            lines.append(row(name, wi[name], wbase, None))
        for name, default in (("baseline-noreset", results["baseline_runs"][0]),
                              ("bc-authorize-noreset", "bc-authorize"),
                              ("poll-noreset", "poll")):  # fmt: skip
            r, d = wi[name], p[default]
            lines.append(
                f"- {name} vs {default}: req/s ×{r['rps'] / d['rps']:.2f}, "
                f"CPU µs/req {d['cpu_us_per_request']:.0f} → {r['cpu_us_per_request']:.0f}"
            )
    for name, prof in results.get("profiles", {}).items():
        lines += [
            "",
            f"profile {name} (py-spy; {prof['samples_busy']} busy samples, epoll waits left"
            f" out; raw stacks {prof['raw_stacks']}):",
            "- self time by layer: " + ", ".join(f"{k} {s}%" for k, s in prof["self_by_layer"]),
            "- inclusive: " + "; ".join(f"{k} {s}%" for k, s in prof["inclusive_key_frames"]),
        ]
    lines += ["", f"whole run: {results['elapsed_s']} s"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=10.0, help="seconds per measured phase")
    add("--warmup", type=float, default=2.0, help="warm-up seconds before each phase")
    add("--census", type=float, default=2.0, help="seconds of the statement-count runs")
    add("--concurrency", type=int, default=32, help="wrk connections; long polls held at once")
    add("--decisions", type=int, default=400, help="long-poll decisions (>= 200)")
    add("--quick", action="store_true", help="4 s phases, 1 s warm-up, one baseline run")
    add("--server-cpu", default="0", help="core of the server under test")
    add("--load-cpu", default="1", help="core of wrk and of this script")
    add("--pg-cpus", default="1", help="cores of the embedded PostgreSQL")
    add(
        "--nice",
        type=int,
        default=0,
        help="niceness (and autogroup niceness) of servers, wrk, PostgreSQL; -20 on a busy machine",
    )
    add(
        "--database-url",
        default=os.environ.get("BACKCHANNEL_DATABASE_URL"),
        help="a scratch database instead of the embedded server",
    )
    add("--profile", action="store_true", help="also run both endpoints under py-spy")
    add("--what-if", action="store_true",
        help="also run both apps with asyncpg's per-release reset query disabled")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.census, args.decisions = 4.0, 1.0, 1.0, 200
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
