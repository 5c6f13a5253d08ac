"""Pieces of the benchmark: servers, the wrk driver, the database, fixtures, the
statement census and py-spy profiles. bench/run.py puts them together."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support.factories

from backchannel.db.migrate import migrate  # noqa: E402
from backchannel.oauth.secrets import hash_secret  # noqa: E402
from tests.support.factories import create_client  # noqa: E402

PYTHON = sys.executable
WRK_SCRIPT = BENCH / "wrk" / "rotate.lua"
HYPERCORN_CONFIG = BENCH / "hypercorn.toml"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
POLL_INTERVAL = 5  # the Settings default; the server is started with it explicitly
REQUESTED_EXPIRY = 1800  # Settings.max_request_expiry's default: outlives any run
COUNTER_ROWS = 20_000


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_query(dsn: str, **params: str) -> str:
    return dsn + ("&" if "?" in dsn else "?") + "&".join(f"{k}={v}" for k, v in params.items())


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def postgres_cpu_seconds(postmaster_pid: int | None) -> float:
    """CPU time of the postmaster, its live processes and the ones it has reaped."""
    if postmaster_pid is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{postmaster_pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, cutime, cstime
    for pid in children_of(postmaster_pid):
        with contextlib.suppress(OSError, IndexError):
            total += process_cpu_seconds(pid)
    return total


def core_times() -> dict[str, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            nums = [int(v) for v in values]
            out[name] = (sum(nums) - nums[3] - nums[4], sum(nums))  # minus idle, iowait
    return out


def core_busy(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    busy = {}
    for name, (b1, t1) in after.items():
        b0, t0 = before.get(name, (0, 0))
        busy[name] = round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)
    return busy


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def basic_auth(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def priority_prefix(nice: int) -> list[str]:
    return ["nice", "-n", str(nice)] if nice else []


def prioritise_session(pid: int, nice: int) -> None:
    """Give the autogroup (session) of ``pid`` the niceness ``nice``.

    With kernel.sched_autogroup_enabled=1 a process's own niceness only counts
    inside its session; between sessions the scheduler shares CPU by the
    autogroup's niceness, so that is the one that must change.
    """
    if not nice:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


# --------------------------------------------------------------------------- servers


class Server:
    """A hypercorn process (bench/hypercorn.toml: 1 worker) serving ``target`` on ``cpus``."""

    def __init__(
        self, name: str, target: str, env: dict[str, str], cpus: str, log_dir: Path, nice: int
    ) -> None:
        self.name = name
        self.target = target
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.cpus = cpus
        self.nice = nice
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pid: int | None = None
        self.app_name = name  # its connections' application_name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        cmd = [
            *priority_prefix(self.nice),
            "taskset", "-c", self.cpus,
            PYTHON, "-m", "hypercorn",
            "--config", str(HYPERCORN_CONFIG),
            "--bind", f"127.0.0.1:{self.port}",
            self.target,
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        prioritise_session(self.proc.pid, self.nice)  # its own session: hypercorn + worker
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; {self.log_path}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2):
                    pass
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer: the worker serves, so its lifespan has started
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start; see {self.log_path}") from None
                time.sleep(0.2)
        # hypercorn's supervisor spawns the worker (and multiprocessing's resource tracker)
        workers = [
            pid
            for pid in children_of(self.proc.pid)
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        if len(workers) != 1:
            raise RuntimeError(f"{self.name}: expected one hypercorn worker, found {workers}")
        self.worker_pid = workers[0]

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cpu_seconds(self) -> float:
        assert self.worker_pid is not None
        return process_cpu_seconds(self.worker_pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: hypercorn + worker
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


# --------------------------------------------------------------------------- wrk


@dataclass
class LoadResult:
    name: str
    requests: int
    seconds: float  # wrk's measured duration
    wall_s: float  # around the wrk process, as server CPU time is measured
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    answers: dict[str, int]
    server_cpu_s: float
    cores_busy_pct: dict[str, float]
    postgres_cpu_s: float = 0.0  # including the tail
    background_cpu_s: float = 0.0  # the server's, in the tail after the load
    min_reuse_gap_s: float | None = None
    reuses: int = 0
    ids_written: int = 0
    # latency distribution as (weight in requests, microseconds) points
    distribution: list[tuple[float, int]] = field(default_factory=list, repr=False)
    segments: list[dict[str, float]] = field(default_factory=list)  # each interleaved run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_pct(self) -> float:
        return 100.0 * self.server_cpu_s / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_s(self) -> float:
        """The server worker's CPU time for this load, including what it left behind."""
        return self.server_cpu_s + self.background_cpu_s

    @property
    def rps_per_cpu(self) -> float:
        """Requests per second of the worker's CPU time: the rate of one whole core."""
        return self.requests / self.cpu_s if self.cpu_s else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "distribution"}
        return {
            **out,
            "rps": round(self.rps, 1),
            "rps_per_cpu": round(self.rps_per_cpu, 1),
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "cpu_us_per_request": round(1e6 * self.cpu_s / max(1, self.requests), 1),
            "postgres_cpu_us_per_request": round(
                1e6 * self.postgres_cpu_s / max(1, self.requests), 1
            ),
            "socket_errors": self.socket_errors,
        }


def _distribution(requests: int, quantiles: list[list[float]]) -> list[tuple[float, int]]:
    """wrk's quantile function as points: each carries the requests between the
    previous percentile and its own."""
    points, previous = [], 0.0
    for p, value in quantiles:
        points.append((requests * (p - previous) / 100, int(value)))
        previous = p
    return points


def _percentile(points: list[tuple[float, int]], q: float) -> float:
    total = sum(w for w, _ in points)
    seen = 0.0
    for w, value in sorted(points, key=lambda x: x[1]):
        seen += w
        if seen >= q / 100 * total - 1e-9:
            return value / 1000
    return math.nan


def combine(name: str, runs: list[LoadResult]) -> LoadResult:
    """One result from several wrk runs of the same workload (percentiles of the merged
    latency distributions)."""
    points = [point for r in runs for point in r.distribution]

    def add(field_name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in runs:
            for k, v in getattr(r, field_name).items():
                out[k] = out.get(k, 0) + v
        return out

    wall = sum(r.wall_s for r in runs)
    gaps = [r.min_reuse_gap_s for r in runs if r.min_reuse_gap_s is not None]
    cores = {
        core: round(sum(r.cores_busy_pct.get(core, 0) * r.wall_s for r in runs) / wall, 1)
        for core in runs[0].cores_busy_pct
    }
    return LoadResult(
        name=name,
        requests=sum(r.requests for r in runs),
        seconds=sum(r.seconds for r in runs),
        wall_s=wall,
        p50_ms=_percentile(points, 50),
        p90_ms=_percentile(points, 90),
        p99_ms=_percentile(points, 99),
        max_ms=max(r.max_ms for r in runs),
        errors=add("errors"),
        answers=add("answers"),
        server_cpu_s=round(sum(r.server_cpu_s for r in runs), 3),
        postgres_cpu_s=round(sum(r.postgres_cpu_s for r in runs), 3),
        background_cpu_s=round(sum(r.background_cpu_s for r in runs), 3),
        cores_busy_pct=cores,
        min_reuse_gap_s=min(gaps) if gaps else None,
        reuses=sum(r.reuses for r in runs),
        ids_written=sum(r.ids_written for r in runs),
        distribution=points,
        segments=[{"rps": round(r.rps, 1), "rps_per_cpu": round(r.rps_per_cpu, 1)} for r in runs],
    )


async def run_wrk(
    name: str,
    server: Server,
    path: str,
    bodies: Path,
    *,
    duration: float,
    concurrency: int,
    load_cpu: str,
    work_dir: Path,
    nice: int = 0,
    auth: str | None = None,
    ids_out: Path | None = None,
    postmaster_pid: int | None = None,
    tail: float = 0.0,
) -> LoadResult:
    """``wrk -t1`` for ``duration`` s, POSTing the lines of ``bodies`` in rotation.

    With ``postmaster_pid``, PostgreSQL's CPU time is measured too. ``tail`` seconds
    after wrk ends are waited out and the server's CPU time meanwhile (work the load
    left behind, such as audit rows to seal) counts as ``background_cpu_s``; so does
    PostgreSQL's (autovacuum after the writes, for instance)."""
    report = work_dir / f"wrk-{name}.json"
    report.unlink(missing_ok=True)
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_PATH": path,
        "BENCH_AUTH": auth or "",
        "BENCH_IDS_OUT": str(ids_out) if ids_out else "",
        "BENCH_REPORT": str(report),
    }
    cmd = [
        *priority_prefix(nice),
        "taskset", "-c", load_cpu,
        "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), server.url + path,
    ]  # fmt: skip
    pg0 = postgres_cpu_seconds(postmaster_pid)
    cpu0, cores0, started = server.cpu_seconds(), core_times(), time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    wall = time.monotonic() - started
    cpu1, cores1 = server.cpu_seconds(), core_times()
    if tail:
        await asyncio.sleep(tail)
    cpu2, pg2 = server.cpu_seconds(), postgres_cpu_seconds(postmaster_pid)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    data = json.loads(report.read_text())
    lat = data["latency_us"]
    gap = data.get("min_reuse_gap_s", -1)
    return LoadResult(
        name=name,
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        wall_s=round(wall, 3),
        errors=data["errors"],
        answers=data["answers"],
        server_cpu_s=round(cpu1 - cpu0, 3),
        postgres_cpu_s=round(pg2 - pg0, 3),
        background_cpu_s=round(cpu2 - cpu1, 3),
        cores_busy_pct=core_busy(cores0, cores1),
        min_reuse_gap_s=gap if gap is not None and gap >= 0 else None,
        reuses=int(data.get("reuses", 0)),
        ids_written=int(data.get("ids_written", 0)),
        distribution=_distribution(int(data["requests"]), data.get("quantiles", [])),
    )


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    dsn: str
    superuser_dsn: str | None = None  # the embedded server's (for the statement census)
    log_path: Path | None = None  # the embedded server's log file
    embedded: Any = None
    postmaster_pid: int | None = None

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


async def start_database(url: str | None, work_dir: Path) -> Database:
    if url:
        log("using BACKCHANNEL_DATABASE_URL (it must name a scratch database)")
        return Database(dsn=url)
    from backchannel.cli.embedded_postgres import start_embedded_postgres

    log("starting embedded PostgreSQL")
    embedded = start_embedded_postgres(work_dir / "pgdata", cleanup="delete")
    conn = await asyncpg.connect(embedded.dsn("postgres"))
    try:
        # A throwaway server: disk flushes are not what this bench measures (baseline and
        # app commit alike), and they would add noise and a slow shutdown checkpoint.
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("ALTER SYSTEM SET fsync = off")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.execute("CREATE DATABASE backchannel_bench")
    finally:
        await conn.close()
    pgdata = embedded.data_dir
    return Database(
        dsn=embedded.dsn("backchannel_bench"),
        superuser_dsn=embedded.dsn("backchannel_bench"),
        log_path=pgdata / "log",
        embedded=embedded,
        postmaster_pid=int((pgdata / "postmaster.pid").read_text().split()[0]),
    )


def place_postgres(db: Database, cpus: str, nice: int) -> None:
    """Pin (and renice) the postmaster and its processes; new backends inherit both."""
    if db.postmaster_pid is None:
        return
    pids = [db.postmaster_pid, *children_of(db.postmaster_pid)]
    for pid in pids:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
    if nice:
        subprocess.run(["renice", "-n", str(nice), "-p", *map(str, pids)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        prioritise_session(db.postmaster_pid, nice)


@dataclass
class Fixture:
    """The bench's client, and the users its requests name.

    /bc-authorize refuses a user's request past the push-fatigue caps (by default 3
    pending, 10 per 10 minutes), so every /bc-authorize run gets users of its own
    (:func:`create_users`), and requests written directly to the table belong to
    separate ``parking_user_ids``.
    """

    client_id: str
    auth: str
    tag: str
    parking_user_ids: list[int]
    users_created: int = 0


def bc_bodies(hints: list[str]) -> list[str]:
    return [
        f"scope=openid&login_hint={quote(h, safe='')}&requested_expiry={REQUESTED_EXPIRY}"
        for h in hints
    ]


def poll_bodies(ids: list[str]) -> list[str]:
    return [f"grant_type={quote(CIBA_GRANT, safe='')}&auth_req_id={i}" for i in ids]


async def create_users(conn: asyncpg.Connection, fixture: Fixture, count: int) -> list[str]:
    """``count`` new users with an email login hint each; returns the hints."""
    first = fixture.users_created
    fixture.users_created += count
    rows = await conn.fetch(
        """INSERT INTO users (subject, display_name, email)
           SELECT s, 'Bench User', s || '@bench.example' FROM unnest($1::text[]) AS s
           RETURNING user_id, email""",
        [f"bench-{fixture.tag}-{i}" for i in range(first, first + count)],
    )
    await conn.execute(
        """INSERT INTO user_login_hints (kind, value, user_id)
           SELECT 'email', e, u FROM unnest($1::text[], $2::bigint[]) AS t (e, u)""",
        [r["email"] for r in rows],
        [r["user_id"] for r in rows],
    )
    # Bulk inserts outrun autovacuum: without fresh statistics the planner may pick
    # sequential scans a production database (analyzed) would not.
    await conn.execute("ANALYZE users, user_login_hints")
    return [r["email"] for r in rows]


async def provision(conn: asyncpg.Connection, parking_users: int = 100) -> Fixture:
    """Migrate; one poll-mode client_secret_basic client, the users that directly
    inserted requests belong to, and the baseline's counter table."""
    await migrate(conn)
    tag = secrets.token_hex(3)
    client, secret = await create_client(conn, client_id=f"bench-{tag}", name="Bench RP")
    assert secret is not None
    fixture = Fixture(client.client_id, basic_auth(client.client_id, secret), tag, [])
    await create_users(conn, fixture, parking_users)
    fixture.parking_user_ids = [
        r["user_id"]
        for r in await conn.fetch(
            "SELECT user_id FROM users WHERE subject LIKE $1", f"bench-{tag}-%"
        )
    ]
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_counter (id integer PRIMARY KEY, n bigint NOT NULL)"
    )
    await conn.execute(
        """INSERT INTO bench_counter (id, n) SELECT g, 0 FROM generate_series(1, $1) g
           ON CONFLICT (id) DO NOTHING""",
        COUNTER_ROWS,
    )
    await conn.execute("ANALYZE")
    return fixture


async def insert_pending_requests(
    conn: asyncpg.Connection, fixture: Fixture, count: int
) -> list[str]:
    """``count`` fresh pending requests written straight to the table (the row
    /bc-authorize writes, without its audit row); returns their auth_req_ids."""
    ids = [secrets.token_urlsafe(32) for _ in range(count)]
    parked = fixture.parking_user_ids
    users = [parked[i % len(parked)] for i in range(count)]
    await conn.execute(
        """INSERT INTO auth_requests
               (id_hash, client_id, user_id, scope, delivery_mode, requested_expiry,
                expires_at, poll_interval)
           SELECT h, $2, u, ARRAY['openid'], 'poll', $3::integer,
                  now() + make_interval(secs => $3::integer), $4
             FROM unnest($1::bytea[], $5::bigint[]) AS t (h, u)""",
        [hash_secret(i) for i in ids],
        fixture.client_id,
        REQUESTED_EXPIRY,
        POLL_INTERVAL,
        users,
    )
    await conn.execute("ANALYZE auth_requests")
    return ids


# --------------------------------------------------------------------------- statement census

# log_line_prefix '%m [%p] %a ': "2026-01-01 10:00:00.123 UTC [123] app LOG:  execute s1: SQL"
_ENTRY_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.M)
_STATEMENT = re.compile(r"^\S+ \S+ \S+ \[\d+\] (\S*) LOG:  (execute [^:]+|statement): (.*)", re.S)
POLL_LABEL = "poll_auth_request (one conditional UPDATE auth_requests statement)"
JUDGE_LABEL = "poll_auth_request, judging strikes and end states (WITH ... UPDATE)"
RESET_LABEL = (
    "asyncpg pool reset on connection release "
    "(SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL)"
)
_LABELS = [
    ("UPDATE auth_requests SET last_polled_at = now()", POLL_LABEL),
    ("WITH cur AS", JUDGE_LABEL),
    ("SELECT pg_advisory_unlock_all()", RESET_LABEL),
    ("WITH ins AS ( INSERT INTO auth_requests", "insert_auth_request (+ audit row, one statement)"),
    ("SELECT u.user_id", "select_user_by_hint"),
    ("UPDATE bench_counter", "UPDATE bench_counter ... RETURNING n"),
    ("SELECT client_id, name, secret_hash", "select_client (ClientRegistry cache refill)"),
    (
        "SELECT (SELECT count(*) FROM ( SELECT 1 FROM auth_requests WHERE user_",
        "select_prompt_state (push-fatigue caps)",
    ),
    ("UPDATE auth_requests r SET status = 'redeemed'", "redeem_auth_request"),
    ("INSERT INTO access_tokens", "insert_access_token"),
    ("INSERT INTO refresh_tokens", "insert_refresh_token"),
    ("INSERT INTO audit_events", "insert_audit_event"),
    ("WITH due AS ( SELECT o.id FROM push_outbox", "push outbox worker (background)"),
    ("WITH state AS ( SELECT CASE WHEN", "insert_auth_request (+ audit row, prompts, NOTIFY)"),
    ("WITH done AS ( UPDATE push_outbox SET status = 'sent'", "push settle (+ audit row)"),
    ("SELECT device_id, user_id, name, public_jwk", "select_device (device call)"),
    ("WITH spent AS ( INSERT INTO used_jtis", "device call's jti + last_seen_at (+ target)"),
    (
        "SELECT CASE WHEN status = 'redeemed' THEN 'spent'",
        "poll_auth_request, re-read after a wake-up (plain SELECT)",
    ),
    ("SELECT r.id, r.user_id, c.name AS client_name", "decision target"),
    (
        "WITH decided AS ( UPDATE auth_requests SET status",
        "decide_auth_request (+ amr, audit row, NOTIFY)",
    ),
    ("WITH targets AS (SELECT $1::bigint AS id)", "withdraw prompts"),
    ("WITH ar AS ( SELECT id, id_hash", "receipt (+ audit row)"),
    ("WITH access AS ( INSERT INTO access_tokens", "insert_token_set (+ refresh, audit row)"),
    (
        "WITH redeemed AS ( UPDATE auth_requests r SET status = 'redeemed'",
        "redeem_into_token_set (redeem + token set + audit row)",
    ),
    (
        "WITH targets AS ( SELECT r.id FROM auth_requests r WHERE r.prompts_withdrawn_at",
        "prompt withdrawal worker (background)",
    ),
]


def statement_label(sql: str) -> str:
    text = " ".join(sql.split()).rstrip(";")
    for prefix, label in _LABELS:
        if text.startswith(prefix):
            return label
    return text[:70] + ("…" if len(text) > 70 else "")


@dataclass
class Census:
    """Statements PostgreSQL ran per request while a short wrk run loaded the server."""

    method: str
    requests: int
    statements: dict[str, int] = field(default_factory=dict)

    def per_request(self, label: str | None = None) -> float:
        count = sum(self.statements.values()) if label is None else self.statements.get(label, 0)
        return count / self.requests if self.requests else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "requests": self.requests,
            "statements_per_request": round(self.per_request(), 3),
            "resets_per_request": round(self.per_request(RESET_LABEL), 3),
            "by_statement_per_request": {
                k: round(v / max(1, self.requests), 3)
                for k, v in sorted(self.statements.items(), key=lambda x: -x[1])
            },
        }


async def statement_census(
    db: Database,
    conn: asyncpg.Connection,
    app_name: str,
    count_sql: str,
    load: Awaitable[Any],
) -> Census:
    """Run ``load`` with every statement logged; count them per request.

    ``count_sql`` reads how many requests the server handled from the data itself
    (e.g. the sum of poll_count), so requests still in flight when wrk stops are
    counted too. Needs the embedded server's log; with another database it falls back
    to pg_stat_database's transaction counter (each autocommit statement and each
    reset query is one transaction), waiting for the backends to publish it.
    """
    if db.superuser_dsn is None or db.log_path is None:
        return await _census_by_counters(conn, count_sql, load)
    admin = await asyncpg.connect(db.superuser_dsn)
    try:
        await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        await admin.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)  # a backend rereads its configuration before its next command
        before = int(await conn.fetchval(count_sql))
        offset = db.log_path.stat().st_size
        await load
        await asyncio.sleep(0.3)  # requests that were in flight when wrk stopped
        after = int(await conn.fetchval(count_sql))
        end = db.log_path.stat().st_size
    finally:
        await admin.execute("ALTER SYSTEM RESET log_statement")
        await admin.execute("ALTER SYSTEM RESET log_line_prefix")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
    with db.log_path.open("rb") as f:
        f.seek(offset)
        text = f.read(end - offset).decode(errors="replace")
    statements = count_logged_statements(text, lambda app: app == app_name)
    return Census("log_statement=all", after - before, statements)


def count_logged_statements(text: str, counted: Callable[[str], bool]) -> dict[str, int]:
    """The statements in a stretch of PostgreSQL's log (log_line_prefix '%m [%p] %a ')
    by label, of the connections whose application_name ``counted`` accepts."""
    starts = [m.start() for m in _ENTRY_START.finditer(text)] + [len(text)]
    statements: dict[str, int] = {}
    for a, b in itertools.pairwise(starts):
        m = _STATEMENT.match(text[a:b])
        if m and counted(m.group(1)):
            label = statement_label(m.group(3))
            statements[label] = statements.get(label, 0) + 1
    return statements


async def _census_by_counters(
    conn: asyncpg.Connection, count_sql: str, load: Awaitable[Any]
) -> Census:
    # Backends publish statistics at most once a second, and an idle one only after
    # PGSTAT_IDLE_INTERVAL (10 s): wait that out on both sides.
    query = (
        "SELECT xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    )
    await asyncio.sleep(11)
    x0, n0 = int(await conn.fetchval(query)), int(await conn.fetchval(count_sql))
    await load
    await asyncio.sleep(11)
    x1, n1 = int(await conn.fetchval(query)), int(await conn.fetchval(count_sql))
    return Census("pg_stat_database xact delta", n1 - n0, {"transactions": x1 - x0 - 2})


# --------------------------------------------------------------------------- profiles


def _frame_name(frame: str) -> str:
    """'func (/long/path/pkg/file.py:123)' -> 'func (pkg/file.py)'."""
    frame = re.sub(r":\d+\)$", ")", frame)
    frame = re.sub(r"\(.*?site-packages/", "(", frame)
    frame = re.sub(r"\(.*?/lib/python3\.\d+/", "(", frame)
    return frame.replace(f"({ROOT}/", "(")


def _path(frame: str) -> str:
    m = re.search(r"\(([^()]*)\)$", frame)
    return m.group(1) if m else frame


# py-spy names backchannel's files relative to the package (oauth/polling.py, errors.py)
_OWN = {p.name.removesuffix(".py") for p in (ROOT / "backchannel").iterdir()} - {"__pycache__"}


def _is_own(frame: str) -> bool:
    first = _path(frame).split("/")[0]
    return first == "backchannel" or first.removesuffix(".py") in _OWN


def _layer(frame: str) -> str:
    if _is_own(frame):
        return "backchannel"
    path = _path(frame)
    top = path.split("/")[0].removesuffix(".py")
    if top in ("hypercorn", "h11"):
        return "hypercorn+h11"
    if top in ("starlette", "asyncpg", "joserfc", "cryptography"):
        return top
    if top in ("asyncio", "selectors", "_weakrefset", "contextvars"):
        return "asyncio loop + socket I/O"
    return top


# Frameworks' frames worth showing next to backchannel's own.
_FRAMEWORK_FRAMES = re.compile(
    r"^(Pool\.fetchrow|PoolConnectionHolder\.release|Connection\.reset|Response\.__call__|"
    r"JSONResponse\.__init__|H11Protocol\.handle|H11Protocol\.stream_send|"
    r"TCPServer\._read_data|TCPServer\._idle_timeout) "
)
_IDLE_LEAVES = ("EpollSelector.select ", "select (selectors", "_worker (concurrent/futures")


def summarise_profile(raw: Path, top: int = 24) -> dict[str, Any]:
    """Where the worker's CPU went, from a py-spy ``--format raw`` (collapsed stacks) file.

    Samples waiting in epoll (or idle executor threads) are left out; shares are of
    the busy samples. ``inclusive`` lists backchannel's own functions and a few
    framework ones (handler, DB calls, response writing).
    """
    inclusive: dict[str, int] = {}
    layers: dict[str, int] = {}
    busy = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _frame_name(f)
            for f in stack.split(";")
            if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        if frames[-1].startswith(_IDLE_LEAVES):
            idle += count
            continue
        busy += count
        for f in set(frames):
            if _is_own(f) or _FRAMEWORK_FRAMES.match(f):
                inclusive[f] = inclusive.get(f, 0) + count
        layer = _layer(frames[-1])
        layers[layer] = layers.get(layer, 0) + count

    def share(d: dict[str, int], n: int) -> list[tuple[str, float]]:
        ordered = sorted(d.items(), key=lambda x: -x[1])[:n]
        return [(k, round(100.0 * v / max(1, busy), 1)) for k, v in ordered]

    return {
        "samples_busy": busy,
        "samples_idle": idle,
        "self_by_layer": share(layers, 12),
        "inclusive_key_frames": share(inclusive, top),
    }


async def profiled(
    load: Awaitable[LoadResult], pid: int, seconds: float, out: Path, cpu: str
) -> tuple[LoadResult, dict[str, Any]]:
    """Run ``load`` while py-spy samples process ``pid``.

    py-spy pauses the process for each sample (its default): its ``--nonblocking``
    mode reads frames while they change and returns many truncated stacks.
    """
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", cpu, spy, "record", "--pid", str(pid), "--rate", "200",
        "--format", "raw", "--duration", str(max(1, round(seconds))),
        "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    result = await load
    _, err = await proc.communicate()
    if proc.returncode != 0 or not out.exists():  # noqa: ASYNC240
        raise RuntimeError(f"py-spy failed ({spy}): {err.decode(errors='replace')}")
    return result, summarise_profile(out)
