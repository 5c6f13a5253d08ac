"""Client-side cost of a checkout plus the token poll's statement, pool against pool.

    .venv/bin/python bench/pool_cost.py [--iterations 2000] [--tasks 16]

For each pool it runs this script under ``valgrind --tool=callgrind`` twice, with
N and 2N iterations of ``pool.fetchrow(<the poll statement>)`` by ``--tasks``
concurrent tasks against an embedded PostgreSQL (running natively, not
counted). The difference of the two totals is the instructions of N
iterations, start-up and set-up cancelled out: a machine-load-free figure for
what a pool adds to every request. Pools:

  own       the service's own ConnectionPool, as backchannel/db/pool.py had it until
            it moved to asyncpg's pool (read from commit ``--own-pool-commit``)
  asyncpg   asyncpg.create_pool with the service's init (codecs), server settings
            and a reset that sends nothing
  asyncpg+  the same with a checkout timeout (acquire(timeout=10)): the service's
            set-up today (backchannel/db/pool.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
POOLS = ("own", "asyncpg", "asyncpg+")


async def workload(kind: str, dsn: str, iterations: int, tasks: int, own_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    import asyncpg

    from backchannel.db import auth_requests as ar
    from backchannel.db import pool as own

    if kind == "own":
        sys.path.insert(0, own_dir)
        import own_pool  # type: ignore[import-not-found]

        pool: Any = await own_pool.create_pool(dsn, min_size=tasks, max_size=tasks)

        async def one(args: tuple[Any, ...]) -> Any:
            return await pool.fetchrow(ar._POLL_PACED, *args)

    else:

        async def noop(conn: Any) -> None:
            pass

        pool = await asyncpg.create_pool(
            dsn, min_size=tasks, max_size=tasks, init=own._init_connection, reset=noop,
            server_settings=own.SERVER_SETTINGS, command_timeout=own.COMMAND_TIMEOUT,
        )  # fmt: skip
        timeout = 10.0 if kind == "asyncpg+" else None

        async def one(args: tuple[Any, ...]) -> Any:
            async with pool.acquire(timeout=timeout) as conn:
                return await conn.fetchrow(ar._POLL_PACED, *args)

    args = (secrets.token_bytes(32), "nobody", 500)  # no such request: the statement's cost

    async def worker(n: int) -> None:
        for _ in range(n):
            await one(args)

    await asyncio.gather(*(worker(200 // tasks) for _ in range(tasks)))  # warm-up
    await asyncio.gather(*(worker(iterations // tasks) for _ in range(tasks)))
    await pool.close()


def measure(kind: str, dsn: str, iterations: int, tasks: int, out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
           __file__, "--run", kind, "--dsn", dsn, "--iterations", str(iterations),
           "--tasks", str(tasks), "--own-dir", str(out.parent)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not match:
        raise RuntimeError(done.stderr[-2000:])
    return int(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument(
        "--own-pool-commit",
        default="b98456a",
        help="a commit whose backchannel/db/pool.py is the service's own pool",
    )
    ap.add_argument("--run", choices=POOLS, help=argparse.SUPPRESS)
    ap.add_argument("--own-dir", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        asyncio.run(workload(args.run, args.dsn, args.iterations, args.tasks, args.own_dir))
        return
    sys.path.insert(0, str(ROOT))
    from backchannel.db.migrate import migrate
    from backchannel.db.pool import connect
    from backchannel.embedded_postgres import start_embedded_postgres

    work = Path(tempfile.mkdtemp(prefix="pool-cost-"))
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.own_pool_commit}:backchannel/db/pool.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (work / "own_pool.py").write_text(source)
    pg = start_embedded_postgres(work / "pgdata", cleanup="delete")
    try:

        async def setup() -> None:
            conn = await connect(pg.dsn())
            await migrate(conn)
            await conn.close()

        asyncio.run(setup())
        figures = {}
        for kind in POOLS:
            n = args.iterations
            small = measure(kind, pg.dsn(), n, args.tasks, work / f"{kind}-1.out")
            large = measure(kind, pg.dsn(), 2 * n, args.tasks, work / f"{kind}-2.out")
            figures[kind] = (large - small) / n
            print(f"{kind}: {figures[kind]:,.0f} instructions per checkout + poll statement",
                  flush=True)  # fmt: skip
        print(json.dumps({k: round(v) for k, v in figures.items()}))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
