"""backchannel against node-oidc-provider, and checkouts against each other, in one run.

    .venv/bin/python bench/vs_peer.py --peer PEER_DIR [--rounds 3] [--duration 10]
        [--variant NAME=CHECKOUT[,loop=uvloop][,fill=N][,floor[=trivial|none]][,only-floor[=…]]
        [,env:KEY=VALUE]] ...
        [--cases bc,poll] [--open-loop 500]

PEER_DIR is a copy of shared/bench-peer with ``npm install`` done: its
``perf-server.mjs`` (node-oidc-provider on :3000) and its load generator
``load.py`` (closed loop, 64 keep-alive connections) are used as they are.
Every variant is a backchannel checkout with its own ``.venv`` (./scripts/setup),
run as ``backchannel dev`` (bench/serve_dev.py: asyncio or uvloop) with its own
embedded PostgreSQL at the server's defaults (fsync and synchronous commit on),
on a port of its own. Without ``--variant`` the one variant is this checkout.

Servers are pinned to core 0, every PostgreSQL and the load generator to core 1,
as in shared/bench-peer/vs_peer.py. Each round runs every case of every server
one after the other, so drift hits all alike, starting with another server each
round (the server loaded right after another shares the machine with that one's
leftover work). CPU per request is the server
process's CPU plus its PostgreSQL's (all processes) over the measured window,
divided by the requests answered in it.

``fill=N`` loads a variant's database first with N auth requests (pending,
expired, denied and redeemed mixed, as housekeeping leaves them: nothing is
deleted), N/10 users and N/10 devices, and 2 audit rows per request, sealed:
the scale check compares it with a variant of the same checkout at a small N.
``floor`` also serves bench/floor_app.py (hypercorn, asyncpg and the service's
own statements, no framework and no other Python) on the variant's database, as
a server of its own (``NAME-floor``, port + 100): the least the fixed stack
spends on the same durable work. ``floor=trivial`` makes that server run one
``SELECT`` of the request body per request instead: hypercorn and a database
round trip, nothing else; ``floor=none`` answers without the database
(hypercorn alone). ``only-floor`` loads the floor and not the variant's
own server.
``--open-loop RATE`` runs the cases with bench/open_loop.py at a fixed rate
instead (latency at a fixed load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

BENCH = Path(__file__).resolve().parent
SEALER_LOCK = 0x6263_6175_6474  # backchannel/db/audit_chain.py
ROOT = BENCH.parent
PEER_PORT = 3000
SERVER_CPU, LOAD_CPU = "0", "1"


def log(message: str) -> None:
    print(f"[vs_peer {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, secs: float = 180) -> None:
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def pin(pid: int, cpus: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True)
    for child in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split():
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, child], capture_output=True)


@dataclass
class Variant:
    name: str
    checkout: Path
    loop: str = "asyncio"
    fill: int = 0
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    data: Path | None = None
    pg_pid: int | None = None
    dsn: str = ""
    secret: str = ""
    wrapper: list[str] = field(default_factory=list)  # e.g. valgrind (bench/instructions.py)
    floor: str = ""  # also serve bench/floor_app.py on port + 100: service, trivial or none
    floor_proc: subprocess.Popen[bytes] | None = None
    only_floor: bool = False  # load the floor only, not the variant's server

    @classmethod
    def parse(cls, spec: str, port: int) -> Variant:
        head, *options = spec.split(",")
        name, _, path = head.partition("=")
        v = cls(name, Path(path or ROOT).resolve(), port=port)
        for option in options:
            key, _, value = option.partition("=")
            if key == "loop":
                v.loop = value
            elif key == "fill":
                v.fill = int(value)
            elif key.startswith("env:"):
                v.env[key[4:]] = value
            elif key == "floor":
                v.floor = value or "service"
            elif key == "only-floor":
                v.floor, v.only_floor = value or "service", True
            else:
                raise SystemExit(f"unknown variant option {option!r}")
        return v

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        assert self.data is not None
        return {
            **os.environ,
            "BACKCHANNEL_DATA_DIR": str(self.data),
            "BACKCHANNEL_PORT": str(self.port),
            "BACKCHANNEL_ISSUER": self.base,
            "BACKCHANNEL_POLL_INTERVAL": "1",
            "BACKCHANNEL_FATIGUE_MAX_PENDING": "0",
            "BACKCHANNEL_FATIGUE_MAX_PROMPTS": "0",
            "BACKCHANNEL_LOG_LEVEL": "WARNING",
            **self.env,
        }

    def start(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix=f"vs-peer-{self.name}-"))
        python = self.checkout / ".venv" / "bin" / "python"
        cmd = ["taskset", "-c", SERVER_CPU, *self.wrapper, str(python),
               str(BENCH / "serve_dev.py"), "--loop", self.loop]  # fmt: skip
        with (self.data / "server.log").open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.data, env=self.environment(), stdout=out, stderr=subprocess.STDOUT
            )

    def ready(self, timeout: float = 180) -> None:
        assert self.proc is not None and self.data is not None
        wait_http(f"{self.base}/.well-known/openid-configuration", self.proc, self.name, timeout)
        pidfile = self.data / "pgdata" / "postmaster.pid"
        for _ in range(100):  # written line by line as the server starts
            lines = pidfile.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready" and lines[4].strip():
                break
            time.sleep(0.1)
        self.pg_pid = int(lines[0])
        pin(self.pg_pid, LOAD_CPU)
        self.dsn = f"postgresql://postgres@/postgres?host={lines[4]}&port={lines[3]}"
        exe = self.checkout / ".venv" / "bin" / "backchannel"
        out = subprocess.run(
            [str(exe), "--json", "client", "create", "--name", "perf", "--client-id",
             "perf-client"],
            cwd=self.data, env=self.environment(), capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        created = json.loads(out)
        self.secret = created.get("client_secret") or created["client"]["client_secret"]

    @property
    def floor_base(self) -> str:
        return f"http://127.0.0.1:{self.port + 100}"

    def start_floor(self) -> None:
        """bench/floor_app.py under hypercorn, on this variant's database and loop."""
        assert self.data is not None
        hypercorn = self.checkout / ".venv" / "bin" / "hypercorn"
        cmd = ["taskset", "-c", SERVER_CPU, str(hypercorn), "--worker-class", self.loop,
               "--bind", f"127.0.0.1:{self.port + 100}", "--log-level", "WARNING",
               "--keep-alive", "75", "bench.floor_app:app"]  # fmt: skip
        env = {**self.environment(), "BACKCHANNEL_DATABASE_URL": self.dsn,
               "PYTHONPATH": str(ROOT), "FLOOR_STATEMENT": self.floor}  # fmt: skip
        with (self.data / "floor.log").open("wb") as out:
            self.floor_proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_http(f"{self.floor_base}/token", self.floor_proc, f"{self.name} floor")

    def stop(self) -> None:
        for proc in (self.floor_proc, self.proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def add_users(dsn: str, users: int) -> None:
    """user0..userN-1 with username hints (the peer's login_hint=userI), as vs_peer.py does."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"""INSERT INTO users (subject, display_name)
                SELECT 'user' || i, 'User ' || i FROM generate_series(0, {users - 1}) i;
                INSERT INTO user_login_hints (kind, value, user_id)
                SELECT 'username', subject, user_id FROM users WHERE subject LIKE 'user%';
                ANALYZE users, user_login_hints"""
        )
    finally:
        await conn.close()


FILL_SQL = """
-- The sealer waits (its lock) while the sealed rows and the chain head are written.
SELECT pg_advisory_xact_lock({sealer_lock});
INSERT INTO users (subject, display_name, email)
SELECT 'scale-' || i, 'Scale ' || i, 'scale-' || i || '@scale.example'
  FROM generate_series(1, {users}) i;
INSERT INTO user_login_hints (kind, value, user_id)
SELECT 'email', email, user_id FROM users WHERE subject LIKE 'scale-%';
INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint,
                     push_endpoint, push_p256dh, push_auth)
SELECT 'scale-dev-' || user_id, user_id, 'Phone', '{{"kty": "EC"}}'::jsonb,
       md5(user_id::text), 'https://push.example.net/' || user_id, 'p256dh', 'auth'
  FROM users WHERE subject LIKE 'scale-%';
-- Requests over the last 30 days as housekeeping leaves them (it deletes none):
-- 2 % still pending, 40 % expired undecided, 8 % denied, 50 % approved and redeemed.
INSERT INTO auth_requests (id_hash, client_id, user_id, scope, delivery_mode, requested_expiry,
                           status, denial_reason, created_at, expires_at, decided_at,
                           redeemed_at, poll_interval, last_polled_at, poll_count,
                           device_challenge, prompts_withdrawn_at)
SELECT sha256(('scale-' || i)::bytea), 'perf-client',
       (SELECT min(user_id) FROM users WHERE subject LIKE 'scale-%') + i % {users},
       ARRAY['openid'], 'poll', 300,
       CASE WHEN k < 2 THEN 'pending' WHEN k < 42 THEN 'pending'
            WHEN k < 50 THEN 'denied' ELSE 'redeemed' END,
       CASE WHEN k >= 42 AND k < 50 THEN 'user' END,
       c, CASE WHEN k < 2 THEN now() + interval '30 minutes' ELSE c + interval '5 minutes' END,
       CASE WHEN k >= 42 THEN c + interval '20 seconds' END,
       CASE WHEN k >= 50 THEN c + interval '21 seconds' END,
       5, c + interval '15 seconds', 3, 'challenge',
       CASE WHEN k >= 2 THEN c + interval '5 minutes' END
  FROM (SELECT i, i % 100 AS k,
               CASE WHEN i % 100 < 2 THEN now() - interval '10 seconds'
                    ELSE now() - (i::double precision / {n}) * interval '30 days' END AS c
          FROM generate_series(1, {n}) i) s;
INSERT INTO audit_events (at, event, client_id, user_id, auth_request_id, detail, seq,
                          prev_hash, hash)
SELECT r.created_at + (e - 1) * interval '20 seconds',
       CASE e WHEN 1 THEN 'auth_request_issued' ELSE 'auth_request_decided' END,
       r.client_id, r.user_id, r.id, '{{}}'::jsonb,
       (SELECT coalesce(max(seq), 0) FROM audit_events) + row_number() OVER (ORDER BY r.id, e),
       sha256(r.id_hash || '\\x00'::bytea),
       sha256(r.id_hash || int4send(e))
  FROM auth_requests r CROSS JOIN generate_series(1, 2) e;
UPDATE audit_chain_head SET seq = (SELECT max(seq) FROM audit_events),
       hash = sha256('scale'::bytea), sealed_at = now();
"""


async def fill(dsn: str, n: int) -> dict[str, Any]:
    """N requests, N/10 users and devices, 2N sealed audit rows; returns sizes."""
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await conn.execute(FILL_SQL.format(n=n, users=max(1, n // 10), sealer_lock=SEALER_LOCK))
        await conn.execute("VACUUM ANALYZE")
        log(f"filled {n} requests in {time.monotonic() - started:.0f} s")
        return await sizes(conn)
    finally:
        await conn.close()


async def sizes(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        """SELECT c.relname, c.relkind, pg_relation_size(c.oid) AS bytes,
                  coalesce(t.relname, c.relname) AS tbl
             FROM pg_class c
             LEFT JOIN pg_index i ON i.indexrelid = c.oid
             LEFT JOIN pg_class t ON t.oid = i.indrelid
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')
              AND coalesce(t.relname, c.relname) IN
                  ('auth_requests', 'users', 'user_login_hints', 'devices', 'audit_events')
            ORDER BY tbl, c.relkind DESC, c.relname"""
    )
    counts = {
        t: await conn.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("auth_requests", "users", "devices", "audit_events")
    }
    return {
        "rows": counts,
        "relations_mb": {r["relname"]: round(r["bytes"] / 2**20, 2) for r in rows},
    }


def run_load(args: argparse.Namespace, base: str, mode: str, extra: list[str], server_pid: int,
             db_pid: int | None) -> dict[str, Any]:  # fmt: skip
    if args.open_loop:
        script = [str(BENCH / "open_loop.py"), "--peer", args.peer, "--rate", str(args.open_loop)]
    else:
        script = [str(Path(args.peer) / "load.py"), "--engine", "raw"]
    cmd = ["taskset", "-c", LOAD_CPU, args.load_python, *script, "--base", base, "--mode", mode,
           "-c", str(args.concurrency), "-d", str(args.duration), "-w", str(args.warmup),
           "--server-pid", str(server_pid), *extra]  # fmt: skip
    if db_pid:
        cmd += ["--db-pid", str(db_pid)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cpu_ms(run: dict[str, Any]) -> float:
    cpu = run.get("server_cpu_pct", 0) + run.get("db_cpu_pct", 0)
    return cpu * 10 / run["rps"] if run["rps"] else float("nan")


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median round (by CPU per request) and the pooled figure (all CPU / all requests)."""
    per = [cpu_ms(r) for r in runs]
    requests = sum(r["requests"] for r in runs)
    server = sum(r.get("server_cpu_pct", 0) * r["duration_s"] for r in runs) / 100
    db = sum(r.get("db_cpu_pct", 0) * r["duration_s"] for r in runs) / 100
    return {
        "case": name,
        "rps_median": statistics.median(r["rps"] for r in runs),
        "rps_range": [min(r["rps"] for r in runs), max(r["rps"] for r in runs)],
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "p99_ms_max": max(r["p99_ms"] for r in runs),
        "server_cpu_pct": statistics.median(r.get("server_cpu_pct", 0) for r in runs),
        "db_cpu_pct": statistics.median(r.get("db_cpu_pct", 0) for r in runs),
        "cpu_ms_per_req_median": statistics.median(per),
        "cpu_ms_per_req_range": [min(per), max(per)],
        "server_ms_per_req": 1000 * server / requests if requests else float("nan"),
        "db_ms_per_req": 1000 * db / requests if requests else float("nan"),
        "cpu_ms_per_req": 1000 * (server + db) / requests if requests else float("nan"),
        "responses": {
            k: sum(r["responses"].get(k, 0) for r in runs)
            for k in {k for r in runs for k in r["responses"]}
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", required=True, help="copy of shared/bench-peer, npm-installed")
    ap.add_argument("--no-peer", action="store_true", help="compare the variants only")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--cases", default="bc,poll")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--poll-pool", type=int, default=6000)
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--open-loop", type=float, default=0, help="fixed request rate instead")
    ap.add_argument("--load-python", default=sys.executable)
    ap.add_argument("--json", help="write every run and the summary to this file")
    args = ap.parse_args()
    peer_dir = Path(args.peer).resolve()
    variants = [Variant.parse(s, 8200 + i) for i, s in enumerate(args.variant or ["backchannel="])]
    # SIGTERM stops the servers too (the finally below), as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cases = args.cases.split(",")
    peer = None
    try:
        if not args.no_peer:
            peer = subprocess.Popen(
                ["taskset", "-c", SERVER_CPU, "node", "perf-server.mjs"], cwd=peer_dir,
                env=dict(os.environ, NODE_ENV="production"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_http(
                f"http://127.0.0.1:{PEER_PORT}/.well-known/openid-configuration", peer, "peer"
            )
        facts: dict[str, Any] = {}
        for v in variants:
            log(f"starting {v.name} ({v.checkout}, loop {v.loop})")
            v.start()
            v.ready()
            asyncio.run(add_users(v.dsn, args.users))
            if v.fill:
                facts[v.name] = asyncio.run(fill(v.dsn, v.fill))
            if v.floor:
                v.start_floor()
        servers: list[tuple[str, str, int, int | None, list[str]]] = []
        if peer is not None:
            servers.append(("peer", f"http://127.0.0.1:{PEER_PORT}", peer.pid, None, []))
        for v in variants:
            assert v.proc is not None
            extra = ["--bc-path", "/bc-authorize", "--hint", "user{i}",
                     "--client-id", "perf-client", f"--client-secret={v.secret}"]  # fmt: skip
            if not v.only_floor:
                servers.append((v.name, v.base, v.proc.pid, v.pg_pid, extra))
            if v.floor_proc is not None:
                servers.append((f"{v.name}-floor", v.floor_base, v.floor_proc.pid, v.pg_pid, extra))
        results: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            for mode in cases:
                # Each round starts with another server: the one loaded after another
                # shares the machine with that one's leftovers (sealing, autovacuum).
                for name, base, spid, dpid, extra in (
                    servers[r % len(servers) :] + servers[: r % len(servers)]
                ):
                    pool = ["--pool", "1000" if name == "peer" else str(args.poll_pool)]
                    res = run_load(args, base, mode, extra + (pool if mode == "poll" else []),
                                   spid, dpid)  # fmt: skip
                    res["case"], res["round"] = f"{name} {mode}", r
                    res.pop("cores", None)
                    print(json.dumps(res), flush=True)
                    results.setdefault(f"{name} {mode}", []).append(res)
        summary = {name: summarise(name, runs) for name, runs in results.items()}
        print("\n| case | req/s median (range) | p50 ms | p99 ms | server CPU % | DB CPU % |"
              " CPU ms/req (server + DB) | median round (range) |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in summary.values():
            print(f"| {s['case']} | {s['rps_median']:.0f} ({s['rps_range'][0]:.0f}–"
                  f"{s['rps_range'][1]:.0f}) | {s['p50_ms']} | {s['p99_ms']} | "
                  f"{s['server_cpu_pct']} | {s['db_cpu_pct']} | {s['cpu_ms_per_req']:.3f} "
                  f"({s['server_ms_per_req']:.3f} + {s['db_ms_per_req']:.3f}) | "
                  f"{s['cpu_ms_per_req_median']:.3f} ({s['cpu_ms_per_req_range'][0]:.3f}–"
                  f"{s['cpu_ms_per_req_range'][1]:.3f}) |")  # fmt: skip
        print()
        for mode in cases:
            ref = summary.get(f"peer {mode}")
            served = [v for v in variants if not v.only_floor] or variants
            first = summary.get(f"{served[0].name} {mode}", {"cpu_ms_per_req": 1, "rps_median": 1})
            for v in variants:
                floor = summary.get(f"{v.name}-floor {mode}")
                if floor and ref:
                    line = (
                        f"{mode} {v.name}-floor: CPU per request "
                        f"{floor['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.2f}× the peer's"
                    )
                    if not v.only_floor:
                        over = summary[f"{v.name} {mode}"]["cpu_ms_per_req"]
                        line += f"; {v.name} spends {over / floor['cpu_ms_per_req']:.2f}× its floor"
                    print(line)
                if v.only_floor:
                    continue
                s = summary[f"{v.name} {mode}"]
                line = f"{mode} {v.name}:"
                if ref:
                    line += (
                        f" CPU per request {s['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.2f}×"
                        f" the peer's; throughput {s['rps_median'] / ref['rps_median']:.2f}×"
                    )
                if v is not served[0]:
                    line += (
                        f"; against {served[0].name}: CPU per request "
                        f"{s['cpu_ms_per_req'] / first['cpu_ms_per_req']:.3f}×, throughput "
                        f"{s['rps_median'] / first['rps_median']:.3f}×"
                    )
                print(line)
        for name, f in facts.items():
            print(f"\n{name} database: {json.dumps(f)}")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"runs": results, "summary": summary, "facts": facts}, indent=2))  # fmt: skip
    finally:
        for v in variants:
            v.stop()
        if peer is not None:
            peer.terminate()
            try:
                peer.wait(20)
            except subprocess.TimeoutExpired:
                peer.kill()


if __name__ == "__main__":
    main()
