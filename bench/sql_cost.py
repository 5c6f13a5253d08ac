"""PostgreSQL's CPU per statement for the hot statements, variant against variant.

    .venv/bin/python bench/sql_cost.py [--requests 20000] [--concurrency 16] [--rounds 3]

Only PostgreSQL runs (an embedded server at its defaults: fsync and synchronous
commit on), pinned to core 1; this script drives it from core 0 over
``--concurrency`` connections with backchannel's own codecs. For each
workload it alternates the variants in rounds and reports PostgreSQL's CPU
time (every server process, so WAL writes and flushes count) per statement:
a figure free of the HTTP stack's noise, for choosing between forms of a
statement. Workloads:

  poll  the token poll's statement on pending requests, each polled once
        (never inside its interval)
  bc    the insert of a new request by /bc-authorize (a user without devices)

Each is run as this checkout's ``backchannel/db/auth_requests.py`` has it, and,
with ``--base CHECKOUT``, as that checkout's copy of the module has it
(imported from its file; its imports resolve to this checkout's package).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from harness import children_of, postgres_cpu_seconds  # noqa: E402

from backchannel.audit.chain import seal_pending  # noqa: E402
from backchannel.db import auth_requests as ar  # noqa: E402
from backchannel.db.audit import insert_audit_event  # noqa: E402
from backchannel.db.migrate import migrate  # noqa: E402
from backchannel.db.pool import create_pool  # noqa: E402
from backchannel.embedded_postgres import start_embedded_postgres  # noqa: E402
from backchannel.oauth.secrets import hash_secret  # noqa: E402
from tests.support.factories import create_client  # noqa: E402

LIMITS = ar.PollLimits(grace_ms=500, lock_after=8, lock_seconds=10, deny_after=100,
                       interval_step=5, interval_max=60)  # fmt: skip

Statement = Callable[[object, int], Awaitable[object]]


async def main(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="sql-cost-"))
    pg = start_embedded_postgres(work / "pgdata", cleanup="delete")
    try:
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        for p in [pid, *children_of(pid)]:
            os.sched_setaffinity(p, {1})
        pool = await create_pool(pg.dsn(), min_size=args.concurrency, max_size=args.concurrency)
        async with pool.acquire() as conn:
            await migrate(conn)
            for sql in args.setup_sql:
                await conn.execute(sql)
            await create_client(conn, client_id="c1", name="C")
            uid = await conn.fetchval(
                "INSERT INTO users (subject, display_name) VALUES ('u', 'U') RETURNING user_id"
            )
        modules = {"branch": ar}
        if args.base:
            spec = importlib.util.spec_from_file_location(
                "base_auth_requests", Path(args.base) / "backchannel/db/auth_requests.py"
            )
            assert spec is not None and spec.loader is not None
            base = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = base  # dataclasses look their module up
            spec.loader.exec_module(base)
            modules["base"] = base
        workloads = {"poll": poll_variants(modules), "bc": bc_variants(modules, uid),
                     "audit": audit_variants()}  # fmt: skip
        for wl in args.workloads.split(","):
            chosen = workloads[wl]
            figures: dict[str, list[float]] = {k: [] for k in chosen}
            for r in range(args.rounds):
                for name, (prepare, run) in chosen.items():
                    items = await prepare(pool, args.requests)
                    await asyncio.sleep(0.5)
                    cpu0, t0 = postgres_cpu_seconds(pid), time.monotonic()
                    queue = list(items)

                    async def worker(run: Statement = run, queue: list = queue) -> None:
                        while queue:
                            item = queue.pop()
                            await run(pool, item)

                    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                    await asyncio.sleep(0.3)  # the WAL writer's share
                    wall = time.monotonic() - t0
                    cpu = postgres_cpu_seconds(pid) - cpu0
                    us = 1e6 * cpu / len(items)
                    figures[name].append(us)
                    print(f"{wl} {name} round {r}: {us:.1f} µs PG CPU per statement,"
                          f" {len(items) / wall:.0f}/s", flush=True)  # fmt: skip
            if wl == "audit":
                await seal_cost(pool, pid)
            hot = await pool.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE relname = 'auth_requests'"
            )
            print(f"auth_requests updates: {hot['n_tup_upd']}, of which HOT {hot['n_tup_hot_upd']}")
            for name, values in figures.items():
                print(f"== {wl} {name}: median {statistics.median(values):.1f} µs"
                      f" ({min(values):.1f}–{max(values):.1f})")  # fmt: skip
        await pool.close()
    finally:
        pg.stop()


async def _pending(pool: object, n: int) -> list[bytes]:
    ids = [hash_secret(secrets.token_urlsafe(32)) for _ in range(n)]
    uid = await pool.fetchval("SELECT min(user_id) FROM users")  # type: ignore[attr-defined]
    await pool.execute(  # type: ignore[attr-defined]
        """INSERT INTO auth_requests (id_hash, client_id, user_id, scope, delivery_mode,
                                      expires_at, poll_interval)
           SELECT h, 'c1', $2, ARRAY['openid'], 'poll', now() + interval '30 minutes', 5
             FROM unnest($1::bytea[]) h""",
        ids,
        uid,
    )
    await pool.execute("ANALYZE auth_requests")  # type: ignore[attr-defined]
    return ids


def poll_variants(modules: dict[str, Any]) -> dict[str, tuple[Callable, Statement]]:
    out: dict[str, tuple[Callable, Statement]] = {}
    for name, mod in modules.items():

        async def poll(pool: object, id_hash: bytes, mod: Any = mod) -> object:
            return await mod.poll_auth_request(pool, id_hash, "c1", LIMITS)

        out[name] = (_pending, poll)
    return out


def audit_variants() -> dict[str, tuple[Callable, Statement]]:
    """An audit row as /bc-authorize writes it; then (printed apart) sealing them all."""

    async def prepare(pool: object, n: int) -> list[int]:
        return list(range(n))

    async def insert(pool: object, i: int) -> object:
        return await insert_audit_event(
            pool,  # type: ignore[arg-type]
            "auth_request_issued",
            client_id="c1",
            user_id=1,
            auth_request_id=i,
            detail={
                "scope": ["openid"],
                "hint": "login_hint",
                "binding_message": None,
                "expires_in": 300,
                "signed": False,
            },
        )

    return {"insert": (prepare, insert)}


async def seal_cost(pool: Any, pid: int) -> None:
    """PostgreSQL's and this process's CPU per row to seal every unsealed audit row."""
    async with pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM audit_events WHERE seq IS NULL")
        cpu0, me0 = postgres_cpu_seconds(pid), time.process_time()
        await seal_pending(conn)
        cpu1, me1 = postgres_cpu_seconds(pid), time.process_time()
    print(f"audit seal: {n} rows, {1e6 * (cpu1 - cpu0) / n:.1f} µs PG CPU and"
          f" {1e6 * (me1 - me0) / n:.1f} µs sealer (Python) CPU per row")  # fmt: skip


def bc_variants(modules: dict[str, Any], uid: int) -> dict[str, tuple[Callable, Statement]]:
    async def prepare(pool: object, n: int) -> list[int]:
        return list(range(n))

    out: dict[str, tuple[Callable, Statement]] = {}
    for name, mod in modules.items():

        async def insert(pool: object, i: int, mod: Any = mod) -> object:
            id_hash = hash_secret(secrets.token_urlsafe(32))
            return await mod.insert_auth_request(
                pool,
                mod.NewAuthRequest(
                    id_hash,
                    "c1",
                    uid,
                    ("openid",),
                    None,
                    None,
                    "poll",
                    None,
                    datetime.now(UTC) + timedelta(minutes=30),
                    5,
                    "ch",
                ),
                mod.QueuedPrompt("t", {"type": "prompt"}, {"type": "dismiss"}),
                {"scope": ["openid"]},
                mod.PromptCaps(0, 0, 600, honour_mutes=True),
            )

        out[name] = (prepare, insert)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workloads", default="poll,bc")
    ap.add_argument("--setup-sql", action="append", default=[], help="run after migrating")
    ap.add_argument("--base", help="a checkout whose auth_requests statements to compare")
    asyncio.run(main(ap.parse_args()))
