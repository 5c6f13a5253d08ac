"""Whole CIBA flows, backchannel against node-oidc-provider: CPU per completed flow.

    .venv/bin/python bench/flow_bench.py --peer PEER_DIR [--rate 40] [--duration 20]
        [--rounds 2] [--variant NAME=CHECKOUT[,loop=uvloop]]

A flow: the relying party starts a request, the user's authenticator decides
(approves) 2–10 s later, the relying party gets its tokens. Flows start at a
fixed rate (open loop) for ``--duration`` seconds; the run ends when the last
one has its tokens (plus a 1.5 s tail, so work a flow leaves behind, such as
sealing its audit rows, is counted). CPU per completed flow is the server
process's CPU (and for backchannel its PostgreSQL's) over that time.

backchannel (bench/vs_peer.py's setup: ``backchannel dev`` on core 0, its
PostgreSQL at its defaults on core 1): ``POST /bc-authorize``; the prompt goes
out by Web Push to the user's one enrolled device, whose push service is the
tests' RFC 8030 service (tests/support/push_service.py: checks VAPID, decrypts
the message) in this process; the simulated phone (tests/support/device.py's
key handling) signs its decision over what the prompt showed and posts it to
``/device/decision``; the relying party holds one ``/token`` poll with
``Prefer: wait=30`` from the start, which answers with the tokens.

The peer (PEER_DIR/perf-server.mjs): ``POST /backchannel``; its decision hook
on :3001 approves 2–10 s later (the peer's ``triggerAuthenticationDevice`` does
nothing, so it sends no push); the relying party polls ``/token`` every
``interval`` seconds (5) until the tokens come.

This process (load, push service, phones) runs on core 1.

``--census`` adds one round per backchannel variant after the measured ones,
with ``log_statement=all``: the statements its PostgreSQL ran in that round
(background workers included, this process's own connection excluded),
divided by the flows completed. Its CPU is not counted in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from harness import (  # noqa: E402
    count_logged_statements,
    postgres_cpu_seconds,
    process_cpu_seconds,
)
from vs_peer import PEER_PORT, SERVER_CPU, Variant, wait_http  # noqa: E402

from tests.support.device import Phone  # noqa: E402
from tests.support.push_service import LocalPushService, run_push_service  # noqa: E402

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
PEER_AUTH = "Basic " + base64.b64encode(b"perf-client:perf-secret").decode()
DECIDE_AFTER = (2.0, 10.0)
USERS = 400


def log(message: str) -> None:
    print(f"[flow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    started: int = 0
    completed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)  # start to tokens, minus the wait
    requests: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    def count(self, what: str) -> None:
        self.requests[what] = self.requests.get(what, 0) + 1


async def open_loop(rate: float, duration: float, flow: Any) -> None:
    tasks = []
    start = time.monotonic()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(flow(i)))
    await asyncio.gather(*tasks)


# --------------------------------------------------------------------------- backchannel


async def enrol_phones(
    v: Variant, service: LocalPushService, count: int
) -> tuple[list[str], dict[str, Phone]]:
    """``count`` users (email hints) with one device each subscribed to ``service``."""
    conn = await asyncpg.connect(v.dsn)
    try:
        kid = await conn.fetchval("SELECT kid FROM vapid_keys WHERE status = 'active'")
        emails = [f"flow-{i}@flow.example" for i in range(count)]
        rows = await conn.fetch(
            """INSERT INTO users (subject, display_name, email)
               SELECT 'flow-' || i, 'Flow ' || i, 'flow-' || i || '@flow.example'
                 FROM generate_series(0, $1 - 1) i RETURNING user_id, email""",
            count,
        )
        await conn.execute(
            """INSERT INTO user_login_hints (kind, value, user_id)
               SELECT 'email', email, user_id FROM users WHERE subject LIKE 'flow-%'"""
        )
        phones: dict[str, Phone] = {}
        by_token: dict[str, Phone] = {}
        for row in rows:
            phone = Phone(name="Flow phone", issuer=v.base)
            sub = service.subscribe()
            phone.device_id = "dev-" + os.urandom(8).hex()
            await conn.execute(
                """INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint,
                                        push_endpoint, push_p256dh, push_auth, vapid_kid)
                   VALUES ($1, $2, 'Flow phone', $3::jsonb, $4, $5, $6, $7, $8)""",
                phone.device_id,
                row["user_id"],
                json.dumps(phone.key.as_dict(private=False)),
                phone.key.thumbprint(),
                sub.endpoint,
                sub.p256dh,
                sub.auth,
                kid,
            )
            by_token[sub.token] = phone
            phones[row["email"]] = phone
        await conn.execute("ANALYZE")
        return emails, by_token
    finally:
        await conn.close()


async def backchannel_round(
    v: Variant, service: LocalPushService, emails: list[str], phones: dict[str, Phone],
    rate: float, duration: float, wait: int,
) -> dict[str, Any]:  # fmt: skip
    auth = "Basic " + base64.b64encode(f"perf-client:{v.secret}".encode()).decode()
    out = Outcome()
    seen = len(service.received)
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def decide(phone: Phone, payload: dict[str, Any]) -> None:
            await asyncio.sleep(random.uniform(*DECIDE_AFTER))
            entry = {k: payload[k] for k in ("ref", "client_name", "binding_message", "scope",
                                             "challenge")}  # fmt: skip
            jose = {"Content-Type": "application/jose"}
            # A phone tries again when the connection fails (a keep-alive connection
            # the server closed as it was reused), with a freshly signed call.
            for attempt in range(3):
                jws = phone.call_jws("/device/decision", **phone.decision(entry, "approve"))
                try:
                    async with http.post(v.base + "/device/decision", data=jws,
                                         headers=jose) as r:  # fmt: skip
                        await r.read()
                        out.count(f"decision {r.status}")
                        return
                except aiohttp.ClientConnectionError as exc:
                    out.count(f"decision {type(exc).__name__}")
                    if attempt == 2:
                        out.fail(f"decision {type(exc).__name__}")

        async def phones_watch() -> None:
            nonlocal seen
            deciding = []
            while not stop.is_set():
                await asyncio.sleep(0.02)
                for message in service.received[seen:]:
                    if message.payload.get("type") == "prompt":
                        phone = phones[message.token]
                        deciding.append(asyncio.create_task(decide(phone, message.payload)))
                seen = len(service.received)
            await asyncio.gather(*deciding)

        async def flow(i: int) -> None:
            out.started += 1
            t0 = time.monotonic()
            form = {"scope": "openid", "login_hint": emails[i % len(emails)],
                    "binding_message": f"F-{i}"}  # fmt: skip
            try:
                async with http.post(v.base + "/bc-authorize", data=form,
                                     headers={"Authorization": auth}) as r:  # fmt: skip
                    body = await r.json(content_type=None)
                    out.count(f"bc-authorize {r.status}")
                    if r.status != 200:
                        return out.fail(f"bc-authorize {r.status} {body.get('error')}")
            except aiohttp.ClientConnectionError as exc:
                return out.fail(f"bc-authorize {type(exc).__name__}")
            poll = {"grant_type": CIBA_GRANT, "auth_req_id": body["auth_req_id"]}
            for _ in range(5):
                try:
                    async with http.post(v.base + "/token", data=poll,
                                         headers={"Authorization": auth,
                                                  "Prefer": f"wait={wait}"}) as r:  # fmt: skip
                        answer = await r.json(content_type=None)
                        status = r.status
                except aiohttp.ClientConnectionError as exc:  # a reused connection closed: again
                    out.count(f"token {type(exc).__name__}")
                    continue
                out.count(f"token {status} {answer.get('error', 'tokens')}")
                if status == 200:
                    out.completed += 1
                    out.durations.append(time.monotonic() - t0)
                    return None
                if answer.get("error") != "authorization_pending":
                    return out.fail(f"token {answer.get('error')}")
                await asyncio.sleep(1)
            return out.fail("no tokens after 5 held polls")

        assert v.proc is not None
        watcher = asyncio.create_task(phones_watch())
        cpu0, pg0, t0 = (
            process_cpu_seconds(v.proc.pid),
            postgres_cpu_seconds(v.pg_pid),
            time.monotonic(),
        )
        await open_loop(rate, duration, flow)
        await asyncio.sleep(1.5)
        cpu1, pg1, t1 = (
            process_cpu_seconds(v.proc.pid),
            postgres_cpu_seconds(v.pg_pid),
            time.monotonic(),
        )
        stop.set()
        await watcher
    return result(v.name, out, cpu1 - cpu0, pg1 - pg0, t1 - t0)


CENSUS_APP = "flow_census"


async def census_round(
    v: Variant, service: LocalPushService, emails: list[str], phones: dict[str, Phone],
    rate: float, duration: float, wait: int,
) -> dict[str, Any]:  # fmt: skip
    """One round with every statement logged; statements per completed flow, by kind."""
    assert v.data is not None
    log_path = v.data / "pgdata" / "log"
    admin = await asyncpg.connect(v.dsn, server_settings={"application_name": CENSUS_APP})
    try:
        await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        await admin.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.5)  # a backend rereads its configuration before its next command
        offset = log_path.stat().st_size
        res = await backchannel_round(v, service, emails, phones, rate, duration, wait)
        end = log_path.stat().st_size
    finally:
        await admin.execute("ALTER SYSTEM RESET log_statement")
        await admin.execute("ALTER SYSTEM RESET log_line_prefix")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
    with log_path.open("rb") as f:
        f.seek(offset)
        text = f.read(end - offset).decode(errors="replace")
    counts = count_logged_statements(text, lambda app: app != CENSUS_APP)
    done = max(1, res["flows_completed"])
    return {
        "census": v.name,
        "flows_completed": res["flows_completed"],
        "failures": res["failures"],
        "statements_per_flow": round(sum(counts.values()) / done, 2),
        "by_statement_per_flow": {
            k: round(n / done, 3) for k, n in sorted(counts.items(), key=lambda x: -x[1])
        },
    }


# --------------------------------------------------------------------------- peer


async def peer_round(
    peer_pid: int, rate: float, duration: float, port: int = PEER_PORT
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    out = Outcome()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def decide(auth_req_id: str) -> None:
            await asyncio.sleep(random.uniform(*DECIDE_AFTER))
            decision = {"auth_req_id": auth_req_id, "approve": True}
            url = f"http://127.0.0.1:{port + 1}/decide"
            async with http.post(url, json=decision) as r:
                await r.read()
                out.count(f"decision {r.status}")

        async def flow(i: int) -> None:
            out.started += 1
            t0 = time.monotonic()
            form = {"scope": "openid", "login_hint": f"user{i}", "binding_message": f"F-{i}"}
            async with http.post(base + "/backchannel", data=form,
                                 headers={"Authorization": PEER_AUTH}) as r:  # fmt: skip
                body = await r.json(content_type=None)
                out.count(f"backchannel {r.status}")
                if r.status != 200:
                    return out.fail(f"backchannel {r.status} {body.get('error')}")
            deciding = asyncio.create_task(decide(body["auth_req_id"]))
            interval = body.get("interval", 5)
            poll = {"grant_type": CIBA_GRANT, "auth_req_id": body["auth_req_id"]}
            for _ in range(20):
                await asyncio.sleep(interval)
                async with http.post(base + "/token", data=poll,
                                     headers={"Authorization": PEER_AUTH}) as r:  # fmt: skip
                    answer = await r.json(content_type=None)
                    out.count(f"token {r.status} {answer.get('error', 'tokens')}")
                    if r.status == 200:
                        out.completed += 1
                        out.durations.append(time.monotonic() - t0)
                        await deciding
                        return None
                    if answer.get("error") == "slow_down":
                        interval += 5
                    elif answer.get("error") != "authorization_pending":
                        return out.fail(f"token {answer.get('error')}")
            return out.fail("no tokens after 20 polls")

        cpu0, t0 = process_cpu_seconds(peer_pid), time.monotonic()
        await open_loop(rate, duration, flow)
        await asyncio.sleep(1.5)
        cpu1, t1 = process_cpu_seconds(peer_pid), time.monotonic()
    return result("peer", out, cpu1 - cpu0, 0.0, t1 - t0)


def result(name: str, out: Outcome, server: float, db: float, wall: float) -> dict[str, Any]:
    cpu = server + db
    return {
        "server": name,
        "flows_started": out.started,
        "flows_completed": out.completed,
        "failures": out.failures,
        "requests": out.requests,
        "wall_s": round(wall, 1),
        "server_cpu_s": round(server, 2),
        "db_cpu_s": round(db, 2),
        "cpu_ms_per_flow": round(1000 * cpu / out.completed, 2) if out.completed else None,
        "flows_per_cpu_s": round(out.completed / cpu, 1) if cpu else None,
        "flow_s_median": round(statistics.median(out.durations), 2) if out.durations else None,
    }


async def run(args: argparse.Namespace, variants: list[Variant], peer_pid: int | None) -> None:
    os.sched_setaffinity(0, {1})
    async with run_push_service() as service:
        enrolled = {}
        for v in variants:
            enrolled[v.name] = await enrol_phones(v, service, USERS)
        runs: dict[str, list[dict[str, Any]]] = {}
        log("warm-up round (not counted)")
        if peer_pid is not None:
            await peer_round(peer_pid, args.rate, 3, args.peer_port)
        for v in variants:
            emails, phones = enrolled[v.name]
            await backchannel_round(v, service, emails, phones, args.rate, 3, args.wait)
        for r in range(args.rounds):
            if peer_pid is not None:
                res = await peer_round(peer_pid, args.rate, args.duration, args.peer_port)
                res["round"] = r
                print(json.dumps(res), flush=True)
                runs.setdefault("peer", []).append(res)
            for v in variants:
                emails, phones = enrolled[v.name]
                res = await backchannel_round(v, service, emails, phones, args.rate,
                                              args.duration, args.wait)  # fmt: skip
                res["round"] = r
                print(json.dumps(res), flush=True)
                runs.setdefault(v.name, []).append(res)
        if args.census:
            for v in variants:
                emails, phones = enrolled[v.name]
                log(f"census round ({v.name}, log_statement=all, not counted)")
                census = await census_round(v, service, emails, phones, args.rate,
                                            args.duration, args.wait)  # fmt: skip
                print(json.dumps(census, indent=1), flush=True)
    print("\n| server | flows completed | CPU ms per flow (server + DB) | flows per CPU-s |"
          " median flow s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    pooled: dict[str, float] = {}
    for name, rs in runs.items():
        done = sum(x["flows_completed"] for x in rs)
        server = sum(x["server_cpu_s"] for x in rs)
        db = sum(x["db_cpu_s"] for x in rs)
        pooled[name] = done / (server + db) if server + db else float("nan")
        print(
            f"| {name} | {done} | {1000 * (server + db) / max(1, done):.2f} "
            f"({1000 * server / max(1, done):.2f} + {1000 * db / max(1, done):.2f}) | "
            f"{pooled[name]:.1f} | {statistics.median(x['flow_s_median'] or 0 for x in rs)} |"
        )
    if "peer" in pooled:
        for v in variants:
            print(
                f"{v.name}: flows per CPU-second {pooled[v.name] / pooled['peer']:.2f}× the peer's"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--rate", type=float, default=40.0, help="flows started per second")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wait", type=int, default=30, help="Prefer: wait=N on backchannel polls")
    ap.add_argument("--census", action="store_true",
                    help="one more round per variant with log_statement=all")  # fmt: skip
    ap.add_argument("--port", type=int, default=8200, help="first backchannel variant's port")
    ap.add_argument("--peer-port", type=int, default=PEER_PORT, help="the peer's (+1: its hook)")
    args = ap.parse_args()
    specs = args.variant or ["backchannel="]
    variants = [Variant.parse(s, args.port + i) for i, s in enumerate(specs)]
    # SIGTERM stops the servers too (the finally below), as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    extra = {"BACKCHANNEL_PUSH_ALLOW_LOOPBACK": "true", "BACKCHANNEL_ALLOW_INSECURE_URLS": "true",
             "BACKCHANNEL_POLL_INTERVAL": "5"}  # fmt: skip
    peer = None
    try:
        if not args.no_peer:
            peer = subprocess.Popen(
                ["taskset", "-c", SERVER_CPU, "node", "perf-server.mjs"], cwd=Path(args.peer),
                env=dict(os.environ, NODE_ENV="production", PORT=str(args.peer_port)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_http(
                f"http://127.0.0.1:{args.peer_port}/.well-known/openid-configuration", peer, "peer"
            )
        for v in variants:
            v.env = {**extra, **v.env}
            log(f"starting {v.name} ({v.checkout}, loop {v.loop})")
            v.start()
            v.ready()
        asyncio.run(run(args, variants, peer.pid if peer else None))
    finally:
        for v in variants:
            v.stop()
        if peer is not None:
            peer.terminate()
            peer.wait(20)


if __name__ == "__main__":
    main()
