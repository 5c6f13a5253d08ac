"""backchannel benchmark: throughput as ratios against a baseline measured in the same run.

    .venv/bin/python bench/run.py [--duration 10] [--concurrency 32] [--quick]
                                  [--profile] [--what-if] [--nice -20]

Starts a private PostgreSQL (or uses BACKCHANNEL_DATABASE_URL, which must name a
scratch database), migrates it, provisions one client_secret_basic client, then
runs the baseline (bench/baseline_app.py) and backchannel side by side, each
under the same hypercorn setup (bench/hypercorn.toml, 1 worker process) pinned
to the same core with taskset. Only one is loaded at a time: the measured time
is split into rounds, and every round drives, one after the other,

  baseline      bench/baseline_app.py: read form, one UPDATE ... RETURNING, JSON
  /bc-authorize client_secret_basic, login_hint of an existing user (a new user
                per request, so the push-fatigue caps never refuse one)
  /token        CIBA normal polls of pending requests, no id twice within the interval

so that a machine whose load drifts affects all three alike. After each run the
bench waits 1.2 s and charges the server's CPU meanwhile (sealing audit rows the
run wrote, say) to that run. Then: statement
counts per request, long polling (decision COMMIT -> token response latency),
and optionally py-spy profiles and a stricter baseline whose asyncpg pool sends no
reset query on release (--what-if).
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
from dataclasses import dataclass
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
    combine,
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
from ping import DECIDERS, ping_phase

from backchannel.db.migrate import migrate
from backchannel.db.pool import connect

TARGET_BC_RATIO = 0.60
TARGET_POLL_RATIO = 0.85
TARGET_POLL_ROUND_TRIPS = 1
TARGET_LONG_POLL_P99_MS = 100.0
TARGET_PING_P99_MS = 100.0
BUSY_ENOUGH_PCT = 90.0  # below this the server was held back by something else
# Idle seconds after each interleaved run: the server's CPU meanwhile (sealing the audit
# rows the run wrote, say) is charged to that run, and the next run starts clean.
TAIL_S = 1.2
PHASES = ("baseline", "bc-authorize", "poll")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []


@dataclass
class Workload:
    name: str
    server: Server
    path: str
    bodies: list[Path]  # one file per round
    auth: str | None = None


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
        self.rate_bound = 5000.0  # req/s; set from the baseline's warm-up
        self.profiles: dict[str, Any] = {}
        self.censuses: dict[str, Census] = {}
        self.poll_ids: dict[str, Any] = {}

    # -- servers

    async def start(self, kind: str, *, reset_off: bool = False) -> Server:
        env = {"BACKCHANNEL_LOG_LEVEL": "WARNING", "PYTHONDONTWRITEBYTECODE": "1"}
        # PostgreSQL's log tells the servers apart by application_name
        app_name = ("bench_baseline" if kind == "baseline" else "bench_server") + (
            "_noreset" if reset_off else ""
        )
        assert not reset_off or kind == "baseline", "backchannel's pool sends no reset"
        if reset_off:
            env["BENCH_POOL_RESET"] = "off"
        if kind == "baseline":
            env["BENCH_DATABASE_URL"] = with_query(self.db.dsn, application_name=app_name)
            target = "bench/baseline_app.py:app"
        else:
            await migrate(self.conn)  # the tree may have gained a migration since provisioning
            env |= {
                "BACKCHANNEL_DATABASE_URL": with_query(self.db.dsn, application_name=app_name),
                "BACKCHANNEL_ISSUER": "http://127.0.0.1",
                "BACKCHANNEL_POLL_INTERVAL": str(POLL_INTERVAL),
                "BACKCHANNEL_MAX_REQUEST_EXPIRY": str(REQUESTED_EXPIRY),
                # the ping client's notification endpoint is the bench's loopback receiver
                "BACKCHANNEL_ALLOW_INSECURE_URLS": "true",
            }
            target = "bench/backchannel_server.py:app"
        a = self.args
        server = Server(app_name, target, env, a.server_cpu, self.log_dir, a.nice)
        server.app_name = app_name
        self.servers.append(server)
        log(f"{app_name}: starting hypercorn on cpu {a.server_cpu}")
        server.start()
        return server

    # -- load

    async def wrk(
        self,
        name: str,
        server: Server,
        path: str,
        bodies: Path,
        seconds: float,
        *,
        auth: str | None = None,
        ids_out: Path | None = None,
        tail: float = 0.0,
    ) -> LoadResult:
        a = self.args
        return await run_wrk(
            name, server, path, bodies, duration=seconds, concurrency=a.concurrency,
            load_cpu=a.load_cpu, work_dir=self.work_dir, nice=a.nice, auth=auth, ids_out=ids_out,
            postmaster_pid=self.db.postmaster_pid, tail=tail,
        )  # fmt: skip

    async def bc_file(self, name: str, count: int) -> Path:
        """``count`` /bc-authorize bodies, each naming a new user."""
        hints = await create_users(self.conn, self.fixture, max(200, count))
        return write_lines(self.work_dir / f"{name}.txt", bc_bodies(hints))

    async def poll_file(self, name: str, count: int, created: list[str]) -> Path:
        """``count`` never-polled pending ids (``created`` ones first, then rows
        inserted directly), as /token bodies."""
        ids = created[:count]
        created[:count] = []
        missing = max(0, count - len(ids))
        if missing:
            ids += await insert_pending_requests(self.conn, self.fixture, missing)
        self.poll_ids["distinct"] = self.poll_ids.get("distinct", 0) + len(ids)
        self.poll_ids["inserted_directly"] = self.poll_ids.get("inserted_directly", 0) + missing
        return write_lines(self.work_dir / f"{name}.txt", poll_bodies(ids))

    async def measure(
        self, variants: list[tuple[str, Server, Server | None]]
    ) -> dict[str, dict[str, LoadResult]]:
        """Warm up every workload of every variant (suffix, baseline server, backchannel
        server or None for a baseline alone), then run them all in ``rounds``
        interleaved rounds."""
        a = self.args
        auth = self.fixture.auth
        seg = a.duration / a.rounds
        workloads: list[Workload] = []
        for suffix, base, _app in variants:
            warm = await self.wrk(f"baseline{suffix}-warmup", base, "/bump", self.counter_file,
                                  a.warmup)  # fmt: skip
            if not workloads:
                self.rate_bound = 1.3 * max(warm.rps, warm.rps_per_cpu)
            workloads.append(Workload("baseline" + suffix, base, "/bump",
                                      [self.counter_file] * a.rounds))  # fmt: skip
        per_round = len(variants) * 3 * (seg + TAIL_S)  # seconds a round takes at least
        n_slices = min(a.rounds, 2 + math.ceil(max(0.0, POLL_INTERVAL + 1 - per_round) / per_round))
        slice_size = math.ceil(self.rate_bound * (seg + 1))
        for suffix, _base, app in variants:
            if app is None:
                continue
            ids_file = self.work_dir / f"ids{suffix}.txt"
            bodies = await self.bc_file(f"bc{suffix}-warm", math.ceil(self.rate_bound * a.warmup))
            warm = await self.wrk(f"bc-authorize{suffix}-warmup", app, "/bc-authorize", bodies,
                                  a.warmup, auth=auth, ids_out=ids_file)  # fmt: skip
            self.bc_rate = max(getattr(self, "bc_rate", 0), 1.5 * max(warm.rps, warm.rps_per_cpu))
            bc_files = [
                await self.bc_file(f"bc{suffix}-{r}", math.ceil(self.bc_rate * seg))
                for r in range(a.rounds)
            ]
            # Normal polls: a few slices of pending ids used in turn, so that an id comes
            # back only rounds later (>= the interval; checked below). No slice wraps.
            created = read_lines(ids_file)
            slices = [
                await self.poll_file(f"poll{suffix}-slice{i}", slice_size, created)
                for i in range(n_slices)
            ]
            bodies = await self.poll_file(
                f"poll{suffix}-warm", math.ceil(self.rate_bound * (a.warmup + 1)), []
            )
            await self.wrk(f"poll{suffix}-warmup", app, "/token", bodies, a.warmup, auth=auth)
            workloads.append(
                Workload(
                    "poll" + suffix,
                    app,
                    "/token",
                    [slices[r % n_slices] for r in range(a.rounds)],
                    auth,
                )
            )
            workloads.append(Workload("bc-authorize" + suffix, app, "/bc-authorize", bc_files,
                                      auth))  # fmt: skip
        runs: dict[str, list[LoadResult]] = {w.name: [] for w in workloads}
        last_use: dict[Path, float] = {}
        reuse_gap: float | None = None
        log(f"{a.rounds} rounds of {seg:g} s for each of {len(workloads)} workloads")
        for r in range(a.rounds):
            for w in workloads:
                started = time.monotonic()
                result = await self.wrk(f"{w.name}-{r}", w.server, w.path, w.bodies[r], seg,
                                        auth=w.auth, tail=TAIL_S)  # fmt: skip
                runs[w.name].append(result)
                if w.path == "/token":
                    if w.bodies[r] in last_use:
                        gap = started - last_use[w.bodies[r]]
                        reuse_gap = gap if reuse_gap is None else min(reuse_gap, gap)
                    last_use[w.bodies[r]] = time.monotonic()
        out: dict[str, dict[str, LoadResult]] = {}
        for suffix, _base, app in variants:
            kinds = PHASES if app is not None else ("baseline",)
            out[suffix] = {kind: combine(kind + suffix, runs[kind + suffix]) for kind in kinds}
            if app is not None:
                out[suffix]["poll"].min_reuse_gap_s = reuse_gap
            for res in out[suffix].values():
                log(f"{res.name}: {res.rps:.0f} req/s, p50 {res.p50_ms:.1f} ms, p99"
                    f" {res.p99_ms:.1f} ms, server CPU {res.server_cpu_pct:.0f}%")  # fmt: skip
        return out

    async def census(self, name: str, server: Server, kind: str) -> None:
        """Statements per request for one workload (``kind``: one of PHASES)."""
        a, auth = self.args, self.fixture.auth
        if kind == "baseline":
            path, bodies, sql, auth = (
                "/bump", self.counter_file, "SELECT sum(n) FROM bench_counter", None,
            )  # fmt: skip
        elif kind == "bc-authorize":
            bodies = await self.bc_file(f"{name}-census", math.ceil(self.bc_rate * a.census))
            path, sql = "/bc-authorize", "SELECT count(*) FROM auth_requests"
        else:
            count = math.ceil(self.rate_bound * (a.census + 1))
            bodies = await self.poll_file(f"{name}-census", count, [])
            path, sql = "/token", "SELECT sum(poll_count) FROM auth_requests"
        load = self.wrk(f"{name}-census", server, path, bodies, a.census, auth=auth)
        census = await statement_census(self.db, self.conn, server.app_name, sql, load)
        self.censuses[name] = census
        log(f"{name}: {census.per_request():.2f} statements per request ({census.requests})")

    async def profile(self, name: str, server: Server, kind: str) -> None:
        a, auth = self.args, self.fixture.auth
        if kind == "bc-authorize":
            bodies = await self.bc_file(f"{name}-bodies", math.ceil(self.bc_rate * a.duration))
            path = "/bc-authorize"
        else:
            count = math.ceil(self.rate_bound * (a.duration + 1))
            bodies = await self.poll_file(f"{name}-bodies", count, [])
            path = "/token"
        assert server.worker_pid is not None
        out = BENCH / "results" / f"profile-{name}.txt"
        log(f"{name}: {a.duration:g} s under py-spy")
        load = self.wrk(name, server, path, bodies, a.duration, auth=auth)
        _, summary = await profiled(load, server.worker_pid, a.duration, out, a.load_cpu)
        self.profiles[name] = {"raw_stacks": str(out.relative_to(ROOT)), **summary}


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
    spy = shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()
    if args.profile and not spy:
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
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "census_s": args.census,
            "concurrency": args.concurrency,
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
            "postgres_cpus": args.pg_cpus if db.postmaster_pid else "not pinned (external)",
            "nice": args.nice,
            "hypercorn": "bench/hypercorn.toml: 1 worker process, asyncio, no access log",
            "poll_interval_s": POLL_INTERVAL,
            "db_pool": "min 2 / max 10 connections in both apps (backchannel's defaults):"
            " asyncpg's Pool in both; backchannel's with a reset that sends nothing",
        }
        bench = Bench(args, db, conn, fixture, work_dir)

        base = await bench.start("baseline")
        app = await bench.start("backchannel")
        variants: list[tuple[str, Server, Server | None]] = [("", base, app)]
        if args.what_if:
            variants.append(("-noreset", await bench.start("baseline", reset_off=True), None))
        measured: dict[str, dict[str, LoadResult]] = {}
        if not args.latency_only:
            measured = await bench.measure(variants)
            for kind, server in zip(PHASES, (base, app, app), strict=True):
                await bench.census(kind, server, kind)
        phases = measured.get("", {})
        if args.what_if and not args.latency_only:
            _, nbase, _ = variants[1]
            await bench.census("baseline-noreset", nbase, "baseline")
            nbase.stop()
        log(f"long polling: {args.decisions} decisions, {args.concurrency} polls held at once")
        long_poll = await long_poll_phase(
            app, db, fixture, decisions=args.decisions, held=args.concurrency, spacing=0.02,
            census=lambda load: statement_census(
                db, conn, app.app_name,
                "SELECT count(*) FROM auth_requests WHERE status = 'redeemed'", load,
            ),
        )  # fmt: skip
        log(f"long polling: p50 {long_poll['p50_ms']} ms, p99 {long_poll['p99_ms']} ms")
        log(f"ping: {args.pings} decisions at {args.ping_rate:g}/s")
        ping = await ping_phase(app, db, fixture, decisions=args.pings, rate=args.ping_rate)
        log(f"ping: p50 {ping['p50_ms']} ms, p99 {ping['p99_ms']} ms")
        if args.profile and not args.latency_only:
            await bench.profile("bc-authorize-profiled", app, "bc-authorize")
            await bench.profile("poll-profiled", app, "poll")
        base.stop()
        app.stop()
        what_if = {k: r.summary() for k, r in measured.get("-noreset", {}).items()}

        results["phases"] = {k: r.summary() for k, r in phases.items()}
        results["census"] = {k: c.summary() for k, c in bench.censuses.items()}
        results["poll_ids"] = bench.poll_ids
        results["long_poll"] = long_poll
        results["ping"] = ping
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


def ratios(r: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Overall and per-round ratios of ``r`` to ``base`` (req/s and per CPU-second)."""
    rounds = list(zip(r["segments"], base["segments"], strict=True))
    per_round = [a["rps"] / b["rps"] for a, b in rounds if b["rps"]]
    per_round_cpu = [a["rps_per_cpu"] / b["rps_per_cpu"] for a, b in rounds if b["rps_per_cpu"]]
    return {
        "rps": r["rps"] / base["rps"],
        "cpu": r["rps_per_cpu"] / base["rps_per_cpu"],
        "rps_range": (min(per_round), max(per_round)),
        "cpu_range": (min(per_round_cpu), max(per_round_cpu)),
    }


def verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    p, lp, census = results["phases"], results["long_poll"], results["census"]
    lp_ok = lp["answers"].get("200 with tokens", 0)
    out: dict[str, dict[str, Any]] = {}
    if p:
        out |= throughput_verdicts(p, census)
    out["long poll p99"] = {
        "value": lp["p99_ms"],
        "target": f"< {TARGET_LONG_POLL_P99_MS:g} ms over >= 200 decisions",
        "pass": lp["p99_ms"] < TARGET_LONG_POLL_P99_MS and lp_ok == lp["decisions"] >= 200,
    }
    ping = results["ping"]
    out["ping p99"] = {
        "value": ping["p99_ms"],
        "target": f"< {TARGET_PING_P99_MS:g} ms at {ping['rate']:g} decisions/s, none missing",
        "pass": ping["p99_ms"] < TARGET_PING_P99_MS and ping["missing"] == 0,
    }
    return out


def throughput_verdicts(p: dict[str, Any], census: dict[str, Any]) -> dict[str, dict[str, Any]]:
    poll = p["poll"]
    pending = poll["answers"].get("authorization_pending/400", 0)
    answered = sum(poll["answers"].values())
    by = census.get("poll", {}).get("by_statement_per_request", {})
    poll_statement = by.get(POLL_LABEL, math.nan)
    others = {k: n for k, n in by.items() if k not in (POLL_LABEL, RESET_LABEL)}
    # What serving a poll sends: the poll statement and any pool reset on release.
    # Background workers' statements (audit sealer, outbox) are counted in `others`.
    round_trips = poll_statement + by.get(RESET_LABEL, 0.0)
    gap = poll["min_reuse_gap_s"]
    out: dict[str, dict[str, Any]] = {}
    for key, target in (("bc-authorize", TARGET_BC_RATIO), ("poll", TARGET_POLL_RATIO)):
        r = p[key]
        clean = r["socket_errors"] == 0 and (key == "poll" or set(r["answers"]) == {"200"})
        ratio = ratios(r, p["baseline"])
        for kind in ("rps", "cpu"):
            out[f"{key} ratio {kind}"] = {
                "value": round(ratio[kind], 3),
                "per_round": [round(x, 3) for x in ratio[f"{kind}_range"]],
                "target": f">= {target:.2f}",
                "pass": clean and ratio[kind] >= target,
            }
    out["poll answers all pending"] = {
        "value": f"{pending}/{answered}",
        "target": "100% authorization_pending, no id re-polled within the interval",
        "pass": answered > 0
        and pending == answered
        and poll["socket_errors"] == 0
        and (gap is None or gap >= POLL_INTERVAL),
    }
    out["poll statements by backchannel"] = {
        "value": f"{poll_statement:.2f} poll statement + {sum(others.values()):.2f} other",
        "target": "the poll is 1 statement; others only amortised (< 0.1 per poll)",
        "pass": abs(poll_statement - 1) <= 0.01 and all(n < 0.1 for n in others.values()),
    }
    out["poll db round trips"] = {
        "value": round(round_trips, 2),
        "target": f"== {TARGET_POLL_ROUND_TRIPS}",
        "pass": abs(round_trips - TARGET_POLL_ROUND_TRIPS) <= 0.01,
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


def table(phases: dict[str, dict[str, Any]], names: list[tuple[str, str]],
          verdict: dict[str, dict[str, Any]] | None) -> list[str]:  # fmt: skip
    base = phases["baseline"]
    lines = [
        "| phase | req/s | p50 ms | p99 ms | server CPU | CPU µs/req | PG CPU µs/req "
        "| ratio req/s (rounds) | ratio per CPU-s (rounds) | target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for key, label in names:
        r = phases[key]
        ratio = ratios(r, base)
        target = result = ""
        if verdict and f"{key} ratio rps" in verdict:
            v_rps, v_cpu = verdict[f"{key} ratio rps"], verdict[f"{key} ratio cpu"]
            target = v_rps["target"]
            result = "req/s {} · per CPU-s {}".format(
                *("PASS" if v["pass"] else "FAIL" for v in (v_rps, v_cpu))
            )
        lines.append(
            f"| {label} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['server_cpu_pct']:.0f}% | {r['cpu_us_per_request']:.0f} | "
            f"{r['postgres_cpu_us_per_request']:.0f} | "
            f"{ratio['rps']:.2f} ({ratio['rps_range'][0]:.2f}–{ratio['rps_range'][1]:.2f}) | "
            f"{ratio['cpu']:.2f} ({ratio['cpu_range'][0]:.2f}–{ratio['cpu_range'][1]:.2f}) | "
            f"{target} | {result} |"
        )
    return lines


def throughput_lines(results: dict[str, Any]) -> list[str]:
    c, p, v = results["config"], results["phases"], results["verdicts"]

    def mark(key: str) -> str:
        return "PASS" if v[key]["pass"] else "FAIL"

    lines = [
        "",
        *table(p, [("baseline", "baseline (UPDATE…RETURNING)"),
                   ("bc-authorize", "/bc-authorize"), ("poll", "/token normal poll")], v),
        "",
        "ratio req/s is the targets' measure; ratio per CPU-s divides each rate by the server"
        " worker's own CPU time (the rate one whole core would sustain), which other processes"
        " taking the core do not move. (rounds): lowest–highest ratio of a single round.",
    ]  # fmt: skip
    low = [n for n, r in p.items() if r["server_cpu_pct"] < BUSY_ENOUGH_PCT]
    if low:
        lines.append(
            f"WARNING: the server worker used < {BUSY_ENOUGH_PCT:g}% of its core in"
            f" {', '.join(low)}: other processes (see the load average) or a saturated"
            " generator/PostgreSQL core held it back, so the req/s ratios are disturbed; read"
            " the per-CPU-s ratios."
        )
    poll = p["poll"]
    mix = ", ".join(f"{k} {n}" for k, n in sorted(poll["answers"].items(), key=lambda x: -x[1]))
    gap = poll["min_reuse_gap_s"]
    ids = results["poll_ids"]
    lines += [
        "",
        f"poll answers: {mix}; socket errors {poll['socket_errors']}; "
        + (
            f"an id is re-polled at least {gap:.1f} s later"
            if gap is not None
            else "no id polled twice"
        )
        + f" (interval {c['poll_interval_s']} s; {ids.get('distinct', 0)} pending ids, of which"
        f" {ids.get('inserted_directly', 0)} inserted directly in the DB) →"
        f" {mark('poll answers all pending')}",
        "",
        f"statements PostgreSQL ran per request ({c['census_s']:g} s wrk run per workload with"
        " log_statement=all; requests counted from the rows):",
    ]
    for name, cs in results["census"].items():
        lines.append(
            f"- {name}: {cs['statements_per_request']:.2f} over {cs['requests']} requests —"
            f" {census_parts(cs)}"
        )
    lines += [
        f"normal poll: statements sent by backchannel"
        f" {v['poll statements by backchannel']['value']} per poll →"
        f" {mark('poll statements by backchannel')}; round trips to PostgreSQL"
        f" {v['poll db round trips']['value']} per poll, background workers excluded"
        f" (target == 1) → {mark('poll db round trips')}",
    ]
    return lines


def render(results: dict[str, Any]) -> str:
    m, c, p = results["machine"], results["config"], results["phases"]
    v, lp = results["verdicts"], results["long_poll"]

    def mark(key: str) -> str:
        return "PASS" if v[key]["pass"] else "FAIL"

    seg = c["duration_s"] / c["rounds"]
    lines = [
        f"# backchannel bench — {m['date']} — commit {m['commit']}",
        "",
        f"machine: {m['nproc']} cores ({m['cpu']}), load average at start {m['loadavg_at_start']};"
        f" Python {m['python']}; PostgreSQL {m['postgresql']} [{m['postgresql_where']}];"
        f" hypercorn {m['hypercorn']}, Starlette {m['starlette']}, asyncpg {m['asyncpg']},"
        f" {m['wrk']}",
        f"setup: baseline and backchannel each a hypercorn with 1 worker, both on cpu"
        f" {c['server_cpu']} (taskset), loaded one at a time; wrk (1 thread,"
        f" {c['concurrency']} connections) and this script on cpu {c['load_cpu']}; PostgreSQL"
        f" on cpu {c['postgres_cpus']}, sharing the machine with the generator; nice"
        f" {c['nice']}; {c['rounds']} rounds × {seg:g} s per workload (+{TAIL_S:g} s idle tail"
        f" whose server CPU is charged to the run), after"
        f" {c['warmup_s']:g} s warm-ups; {c['db_pool']}",
    ]  # fmt: skip
    if p:
        lines += throughput_lines(results)
    lines += [
        "",
        f"long polling (Prefer: wait=25, {lp['held_at_once']} polls held at once, one"
        f" record_decision every {lp['decision_spacing_ms']:g} ms on the bench's own"
        f" connection): decision COMMIT → token response p50 {lp['p50_ms']} ms, p90"
        f" {lp['p90_ms']} ms, p99 {lp['p99_ms']} ms, max {lp['max_ms']} ms over"
        f" {lp['decisions']} decisions; answers {lp['answers']} (target p99 <"
        f" {TARGET_LONG_POLL_P99_MS:g} ms) → {mark('long poll p99')}",
    ]
    pg = results["ping"]
    lines.append(
        f"ping client ({pg['decisions']} decisions at {pg['rate']:g}/s, achieved"
        f" {pg['achieved_rate']}/s, recorded on {DECIDERS} connections): decision COMMIT →"
        f" ping read by the client's receiver p50 {pg['p50_ms']} ms, p90 {pg['p90_ms']} ms,"
        f" p99 {pg['p99_ms']} ms, max {pg['max_ms']} ms; missing {pg['missing']}, refused"
        f" {pg['refused']}; server CPU {pg['server_cpu_pct']}% (target p99 <"
        f" {TARGET_PING_P99_MS:g} ms) → {mark('ping p99')}"
    )
    lc = lp.get("census")
    if lc:
        lines.append(
            f"- statements per long-polled decision (server side, {lc['requests']} decisions):"
            f" {lc['statements_per_request']:.2f} — {census_parts(lc)}"
        )
    wi = results.get("what_if_no_pool_reset") or {}
    if wi:
        lines += [
            "",
            "what-if (no target): a stricter baseline whose asyncpg pool has a no-op `reset`,"
            " so releasing a connection sends nothing (one round trip per request, like"
            " backchannel's pool), run in the same rounds as the servers above:",
            "",
            *table(wi, [("baseline", "baseline, no reset")], None),
            "",
            "backchannel against that stricter baseline:",
        ]  # fmt: skip
        for key in ("bc-authorize", "poll"):
            ratio = ratios(p[key], wi["baseline"])
            lines.append(
                f"- {key}: ratio req/s {ratio['rps']:.2f} ({ratio['rps_range'][0]:.2f}–"
                f"{ratio['rps_range'][1]:.2f}), per CPU-s {ratio['cpu']:.2f}"
                f" ({ratio['cpu_range'][0]:.2f}–{ratio['cpu_range'][1]:.2f})"
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
    add("--duration", type=float, default=10.0, help="measured seconds per workload")
    add("--rounds", type=int, default=0, help="interleaved rounds (default: duration / 2 s)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds per workload")
    add("--census", type=float, default=2.0, help="seconds of each statement-count run")
    add("--concurrency", type=int, default=32, help="wrk connections; long polls held at once")
    add("--decisions", type=int, default=400, help="long-poll decisions (>= 200)")
    add("--pings", type=int, default=2000, help="ping-client decisions")
    add("--ping-rate", type=float, default=200.0, help="ping-client decisions per second")
    add("--quick", action="store_true", help="4 s per workload, 1 s warm-ups: under a minute")
    add("--server-cpu", default="0", help="core of the servers under test")
    add("--load-cpu", default="1", help="core of wrk and of this script")
    add("--pg-cpus", default="1", help="cores of the embedded PostgreSQL")
    add(
        "--nice",
        type=int,
        default=0,
        help="niceness (and autogroup niceness) of servers, wrk, PostgreSQL; -20 on a busy box",
    )
    add(
        "--database-url",
        default=os.environ.get("BACKCHANNEL_DATABASE_URL"),
        help="a scratch database instead of the embedded server",
    )
    add("--latency-only", action="store_true",
        help="only long polling and the ping client: no throughput rounds, no census")  # fmt: skip
    add("--profile", action="store_true", help="also run both endpoints under py-spy")
    add("--what-if", action="store_true",
        help="also run a baseline whose asyncpg pool sends no reset query on release")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.census, args.decisions = 4.0, 1.0, 1.0, 200
        args.pings = 600
    if args.rounds <= 0:
        args.rounds = max(1, round(args.duration / 2))
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
