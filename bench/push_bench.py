"""Web Push delivery benchmark: outbox worker throughput and /bc-authorize -> push latency.

    .venv/bin/python bench/push_bench.py [--quick] [--pushes 3000] [--rate 200]
                                         [--duration 20] [--database-url postgresql://...]

Starts the embedded PostgreSQL (bench/harness.py), one backchannel hypercorn
worker pinned to core 0 (push_allow_loopback, allow_insecure_urls, fatigue caps
off) with its outbox worker, and the local RFC 8030 push service of the tests
(tests/support/push_service.py: verifies VAPID, decrypts aes128gcm) inside this
process, pinned with PostgreSQL to core 1. Two measurements:

  throughput  N prompt messages (one per user, one device each) written to
              push_outbox in one transaction (+ NOTIFY); time from its COMMIT
              until the push service has accepted all N.
  latency     open-loop /bc-authorize at a fixed rate (requests sent every
              1/rate s whatever the answers), client_secret_basic, a user of
              its own per request with one enrolled device; latency = the push
              service's arrival time of the prompt whose ``ref`` is
              hash_secret(auth_req_id).hex() minus the request's send time.
              Target: p99 < 100 ms.

Results are printed and written to bench/results/push-latest.md (the table and
every number as JSON); the server's log goes to bench/results/logs/. With
PUSH_BENCH_DEBUG=1 the throughput phase also logs pushes per 100 ms and each
message's sent_at - created_at, which shows how the worker paces its batches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from harness import (
    BENCH,
    REQUESTED_EXPIRY,
    Fixture,
    Server,
    core_busy,
    core_times,
    create_users,
    log,
    percentile,
    place_postgres,
    postgres_cpu_seconds,
    provision,
    start_database,
    with_query,
)
from joserfc.jwk import ECKey

from backchannel.authenticator.messages import push_topic
from backchannel.db.pool import connect
from backchannel.delivery.vapid import ensure_vapid_key
from backchannel.oauth.secrets import hash_secret
from tests.support.push_service import LocalPushService, run_push_service

TARGET_P99_MS = 100.0
SERVER_CPU = "0"
LOAD_CPU = "1"

_INSERT_DEVICE = """
INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint,
                     push_endpoint, push_p256dh, push_auth, vapid_kid)
VALUES ($1, $2, 'Bench phone', $3, $4, $5, $6, $7, $8)"""


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def users_with_devices(
    conn: Any, fixture: Fixture, service: LocalPushService, vapid_kid: str, count: int
) -> list[tuple[int, str, str]]:
    """``count`` new users, one enrolled device each subscribed to ``service``:
    (user_id, email, device_id)."""
    emails = await create_users(conn, fixture, count)
    rows = await conn.fetch(
        "SELECT user_id, email FROM users WHERE email = ANY($1::text[])", emails
    )
    by_email = {r["email"]: r["user_id"] for r in rows}
    jwk = ECKey.generate_key("P-256", private=False).as_dict(private=False)
    out, args = [], []
    for email in emails:
        sub = service.subscribe()
        device_id = "dev-" + os.urandom(8).hex()
        args.append((device_id, by_email[email], jwk, os.urandom(24).hex(),
                     sub.endpoint, sub.p256dh, sub.auth, vapid_kid))  # fmt: skip
        out.append((by_email[email], email, device_id))
    await conn.executemany(_INSERT_DEVICE, args)
    await conn.execute("ANALYZE devices, users, user_login_hints")
    return out


# --------------------------------------------------------------------------- throughput


async def throughput(
    conn: Any, fixture: Fixture, service: LocalPushService, server: Server, pg_pid: int | None,
    users: list[tuple[int, str, str]],
) -> dict[str, Any]:  # fmt: skip
    n = len(users)
    refs = [os.urandom(32).hex() for _ in range(n)]  # stand-ins for hash_secret(...).hex()
    received0 = len(service.received)
    cpu0, pg0, me0 = server.cpu_seconds(), postgres_cpu_seconds(pg_pid), self_cpu_seconds()
    cores0 = core_times()
    async with conn.transaction():
        ids = await conn.fetch(
            """INSERT INTO auth_requests (id_hash, client_id, user_id, scope, delivery_mode,
                                          requested_expiry, expires_at, poll_interval)
               SELECT decode(h, 'hex'), $2, u, ARRAY['openid'], 'poll', $3::integer,
                      now() + make_interval(secs => $3::integer), 5
                 FROM unnest($1::text[], $4::bigint[]) AS t (h, u)
               RETURNING id, user_id""",
            refs, fixture.client_id, REQUESTED_EXPIRY, [u for u, _, _ in users],
        )  # fmt: skip
        req_of = {r["user_id"]: r["id"] for r in ids}
        payloads = [
            json.dumps({"type": "prompt", "ref": ref, "client_name": "Bench RP",
                        "binding_message": None, "scope": ["openid"], "challenge": "x" * 24})
            for ref in refs
        ]  # fmt: skip
        await conn.execute(
            """INSERT INTO push_outbox (device_id, auth_request_id, kind, topic, payload,
                                        deliver_before)
               SELECT d, r, 'prompt', t, p::jsonb, now() + interval '30 minutes'
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS x (d, r, t, p)""",
            [d for _, _, d in users], [req_of[u] for u, _, _ in users],
            [push_topic(r) for r in refs], payloads,
        )  # fmt: skip
        await conn.execute("SELECT pg_notify('bc_outbox', '')")
    committed_at = time.monotonic()
    await service.wait_until(lambda: len(service.received) - received0 >= n, within=300)
    done = max(m.at for m in service.received[received0:])
    wall = done - committed_at
    cpu = server.cpu_seconds() - cpu0
    pg = postgres_cpu_seconds(pg_pid) - pg0
    me = self_cpu_seconds() - me0
    arrivals = [1000 * (m.at - committed_at) for m in service.received[received0:]]
    first = min(arrivals) / 1000
    if os.environ.get("PUSH_BENCH_DEBUG"):
        bins: dict[int, int] = {}
        for a in arrivals:
            bins[int(a // 100)] = bins.get(int(a // 100), 0) + 1
        log(f"arrivals per 100 ms bin: {sorted(bins.items())}")
        rows = await conn.fetch(
            "SELECT round(extract(epoch FROM sent_at - created_at)::numeric, 2) AS s, attempts,"
            " status, count(*) FROM push_outbox GROUP BY 1, 2, 3 ORDER BY 1"
        )
        log(f"sent_at - created_at: {[tuple(r) for r in rows]}")
    return {
        "pushes": n,
        "seconds": round(wall, 3),
        "pushes_per_s": round(n / wall, 1),
        "first_push_ms": round(1000 * first, 1),
        # when the pushes arrived, from the COMMIT: 10th, 50th, 90th percentile
        "arrival_p10_p50_p90_ms": [round(percentile(arrivals, q), 1) for q in (10, 50, 90)],
        "server_cpu_pct": round(100 * cpu / wall, 1),
        "server_cpu_us_per_push": round(1e6 * cpu / n, 1),
        "pushes_per_server_cpu_s": round(n / cpu, 1) if cpu else None,
        "postgres_cpu_pct": round(100 * pg / wall, 1),
        "bench_process_cpu_pct": round(100 * me / wall, 1),
        "cores_busy_pct": core_busy(cores0, core_times()),
        "push_service_errors": len(service.errors),
    }


# --------------------------------------------------------------------------- latency


async def open_loop(
    session: aiohttp.ClientSession, url: str, auth: str, hints: list[str], rate: float
) -> list[dict[str, Any]]:
    """POST /bc-authorize for each hint at fixed 1/rate spacing, never waiting for answers."""
    spacing = 1.0 / rate
    results: list[dict[str, Any]] = []
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}

    async def one(hint: str, scheduled: float) -> None:
        body = f"scope=openid&login_hint={quote(hint, safe='')}&requested_expiry={REQUESTED_EXPIRY}"
        sent = time.monotonic()
        entry: dict[str, Any] = {"scheduled": scheduled, "sent": sent, "ref": None}
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                entry["status"] = resp.status
                data = await resp.json(content_type=None)
                if resp.status == 200:
                    entry["ref"] = hash_secret(data["auth_req_id"]).hex()
                else:
                    entry["error"] = data.get("error")
        except Exception as exc:
            entry["status"] = type(exc).__name__
        entry["answered"] = time.monotonic()
        results.append(entry)

    tasks = []
    start = time.monotonic() + 0.05
    for i, hint in enumerate(hints):
        scheduled = start + i * spacing
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(hint, scheduled)))
    await asyncio.gather(*tasks)
    return results


async def latency(
    session: aiohttp.ClientSession, fixture: Fixture, service: LocalPushService,
    server: Server, pg_pid: int | None, hints: list[str], rate: float,
) -> dict[str, Any]:  # fmt: skip
    received0 = len(service.received)
    cpu0, pg0, cores0 = server.cpu_seconds(), postgres_cpu_seconds(pg_pid), core_times()
    t0 = time.monotonic()
    sent = await open_loop(session, server.url + "/bc-authorize", fixture.auth, hints, rate)
    t1 = time.monotonic()
    cpu1, pg1 = server.cpu_seconds(), postgres_cpu_seconds(pg_pid)
    cores = core_busy(cores0, core_times())
    refs = {e["ref"] for e in sent if e["ref"]}

    def arrived() -> set[str]:
        return {str(m.payload.get("ref")) for m in service.received[received0:]} & refs

    with contextlib.suppress(AssertionError):  # what did not arrive is reported as missing
        await service.wait_until(lambda: len(arrived()) >= len(refs), within=10)
    at: dict[str, float] = {}
    for m in service.received[received0:]:
        at.setdefault(str(m.payload.get("ref")), m.at)
    lat = [1000 * (at[e["ref"]] - e["sent"]) for e in sent if e["ref"] in at]
    http = [1000 * (e["answered"] - e["sent"]) for e in sent]
    lag = [1000 * (e["sent"] - e["scheduled"]) for e in sent]
    first = min(e["sent"] for e in sent)
    last = max(e["sent"] for e in sent)
    statuses: dict[str, int] = {}
    for e in sent:
        key = str(e["status"]) + (f"/{e['error']}" if e.get("error") else "")
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "requests": len(sent),
        "target_rate": rate,
        "achieved_rate": round((len(sent) - 1) / (last - first), 1) if last > first else None,
        "answers": statuses,
        "pushes_matched": len(lat),
        "missing_pushes": len(refs) - len(lat),
        "p50_ms": round(percentile(lat, 50), 1),
        "p90_ms": round(percentile(lat, 90), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "http_p50_ms": round(percentile(http, 50), 1),
        "http_p99_ms": round(percentile(http, 99), 1),
        "send_lag_p99_ms": round(percentile(lag, 99), 1),
        "send_lag_max_ms": round(max(lag), 1),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "postgres_cpu_pct": round(100 * (pg1 - pg0) / (t1 - t0), 1),
        "cores_busy_pct": cores,
        "push_service_errors": len(service.errors),
    }


# --------------------------------------------------------------------------- report


def render(r: dict[str, Any]) -> str:
    t, lt = r["throughput"], r["latency"]
    ok = lt["p99_ms"] < TARGET_P99_MS and lt["missing_pushes"] == 0
    lines = [
        f"# Push delivery bench ({r['when']}, load average before: {r['loadavg']})",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| outbox throughput ({t['pushes']} prompts, 1 worker core) | "
        f"**{t['pushes_per_s']} pushes/s** ({t['seconds']} s; first push after "
        f"{t['first_push_ms']} ms) |",
        f"| server CPU during it | {t['server_cpu_pct']} % of core {SERVER_CPU} "
        f"({t['server_cpu_us_per_push']} µs/push = "
        f"{t['pushes_per_server_cpu_s']} pushes per CPU-s) |",
        f"| core {LOAD_CPU}: PostgreSQL + push service | PG {t['postgres_cpu_pct']} %, "
        f"bench process {t['bench_process_cpu_pct']} %; cores busy {t['cores_busy_pct']} |",
        f"| /bc-authorize → push accepted, open loop {lt['target_rate']:g} req/s "
        f"× {r['config']['duration_s']} s | p50 {lt['p50_ms']} ms, p90 {lt['p90_ms']} ms, "
        f"**p99 {lt['p99_ms']} ms**, max {lt['max_ms']} ms |",
        f"| requests / achieved rate | {lt['requests']} / {lt['achieved_rate']} req/s; "
        f"answers {lt['answers']} |",
        f"| pushes matched / missing | {lt['pushes_matched']} / {lt['missing_pushes']} |",
        f"| HTTP answer p50 / p99 | {lt['http_p50_ms']} / {lt['http_p99_ms']} ms "
        f"(generator send lag p99 {lt['send_lag_p99_ms']} ms, max {lt['send_lag_max_ms']} ms) |",
        f"| server CPU / PG CPU at {lt['target_rate']:g} req/s | {lt['server_cpu_pct']} % / "
        f"{lt['postgres_cpu_pct']} %; cores busy {lt['cores_busy_pct']} |",
        f"| push service errors | {t['push_service_errors'] + lt['push_service_errors']} |",
        "",
        f"**p99 < {TARGET_P99_MS:g} ms, no missing push: {'PASS' if ok else 'FAIL'}**",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    if (os.cpu_count() or 1) < 2:
        log("WARNING: fewer than 2 cores")
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    out_dir = BENCH / "results"
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="backchannel-push-bench-"))
    db = await start_database(args.database_url, work_dir)
    server: Server | None = None
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg": loadavg,
        "config": {"pushes": args.pushes, "rate": args.rate, "duration_s": args.duration,
                   "warmup_s": args.warmup},
    }  # fmt: skip
    try:
        place_postgres(db, LOAD_CPU, 0)
        conn = await connect(db.dsn)
        fixture = await provision(conn, parking_users=1)
        vapid = await ensure_vapid_key(conn)
        async with run_push_service() as service:
            warm_n = int(args.rate * args.warmup)
            lat_n = int(args.rate * args.duration)
            log(f"provisioning {args.pushes + warm_n + lat_n} users with a device each")
            tp_users = await users_with_devices(conn, fixture, service, vapid.kid, args.pushes)
            warm_users = await users_with_devices(conn, fixture, service, vapid.kid, warm_n)
            lat_users = await users_with_devices(conn, fixture, service, vapid.kid, lat_n)
            env = {
                "BACKCHANNEL_DATABASE_URL": with_query(db.dsn, application_name="backchannel"),
                "BACKCHANNEL_ISSUER": "http://127.0.0.1",
                "BACKCHANNEL_LOG_LEVEL": "WARNING",
                "BACKCHANNEL_MAX_REQUEST_EXPIRY": str(REQUESTED_EXPIRY),
                "BACKCHANNEL_PUSH_ALLOW_LOOPBACK": "true",
                "BACKCHANNEL_ALLOW_INSECURE_URLS": "true",
                "BACKCHANNEL_FATIGUE_MAX_PENDING": "0",
                "BACKCHANNEL_FATIGUE_MAX_PROMPTS": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
            server = Server("backchannel-push", "bench/backchannel_server.py:app", env,
                            SERVER_CPU, log_dir, 0)  # fmt: skip
            (log_dir / "backchannel-push.log").unlink(missing_ok=True)
            server.start()
            await asyncio.sleep(1.0)  # listener connected, first worker round done

            log(f"throughput: {args.pushes} prompts queued in one transaction")
            results["throughput"] = await throughput(
                conn, fixture, service, server, db.postmaster_pid, tp_users
            )
            log(f"throughput: {results['throughput']['pushes_per_s']} pushes/s")
            # Steady state for the latency phase: the backlog's dead rows vacuumed now
            # rather than by autovacuum in the middle of it, and the sealer caught up.
            await conn.execute("VACUUM ANALYZE push_outbox, audit_events, auth_requests")
            await asyncio.sleep(3.0)

            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                log(f"latency: warm-up {args.warmup} s at {args.rate} req/s")
                await latency(session, fixture, service, server, db.postmaster_pid,
                              [e for _, e, _ in warm_users], args.rate)  # fmt: skip
                await asyncio.sleep(2.0)
                log(f"latency: {args.duration} s at {args.rate} req/s")
                results["latency"] = await latency(
                    session, fixture, service, server, db.postmaster_pid,
                    [e for _, e, _ in lat_users], args.rate,
                )  # fmt: skip
            if service.errors:
                results["push_service_error_sample"] = service.errors[:5]
        server.stop()
        await conn.close()
    finally:
        if server is not None:
            server.stop()
        db.stop()
        shutil.rmtree(work_dir, ignore_errors=True)

    text = render(results)
    print(text)
    if results.get("push_service_error_sample"):
        print("push service errors:", results["push_service_error_sample"])
    out = out_dir / "push-latest.md"
    out.write_text(text + "\n\n```json\n" + json.dumps(results, indent=2) + "\n```\n")
    log(f"wrote {out}")
    lt = results["latency"]
    return 0 if lt["p99_ms"] < TARGET_P99_MS and lt["missing_pushes"] == 0 else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1000 pushes, 10 s of latency load")
    p.add_argument("--pushes", type=int, default=3000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--database-url", default=os.environ.get("BACKCHANNEL_DATABASE_URL"))
    args = p.parse_args(argv)
    if args.quick:
        args.pushes, args.duration, args.warmup = 1000, 10.0, 1.0
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
