"""Open-loop load at a fixed rate: latency at a moderate load, for bench/vs_peer.py.

    python bench/open_loop.py --peer PEER_DIR --rate 500 --base URL --mode bc|poll ...

Takes the options and prints the JSON line of PEER_DIR/load.py (whose HTTP
client, request bodies and auth_req_id pool it reuses), but sends request i at
start + i/rate whatever the answers: a request finding no idle keep-alive
connection opens a new one. Latency runs from the scheduled send time, so a
server that falls behind shows it (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp


async def run(args: argparse.Namespace, load: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    auth = base64.b64encode(f"{args.client_id}:{args.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}",
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    u = urlsplit(args.base)
    host, port = u.hostname, u.port or 80
    async with aiohttp.ClientSession() as session:
        if args.mode == "poll":
            pool = await load.make_pool(session, args.base, headers, args.pool, 64)
            bodies = [f"grant_type={load.GRANT}&auth_req_id={i}".encode() for i in pool]
            path = "/token"
        else:
            bodies = [
                f"login_hint={load.HINT.format(i=i)}&scope=openid&binding_message=MSG-{i}".encode()
                for i in range(1000)
            ]
            path = load.BC_PATH
    raw = [load.build_raw(path, f"{host}:{port}", headers, b) for b in bodies]
    idle: list[Any] = []
    lat: list[float] = []
    counts: collections.Counter[str] = collections.Counter()
    t_start = time.perf_counter() + 0.1
    t_meas = t_start + args.warmup
    total = int(args.rate * (args.warmup + args.duration))
    snap: dict[str, Any] = {}

    async def one(i: int, scheduled: float) -> None:
        conn = idle.pop() if idle else None
        try:
            if conn is None or conn.closed:
                _, conn = await loop.create_connection(lambda: load.RawConn(loop), host, port)
            status, body, close = await asyncio.wait_for(
                conn.request(raw[i % len(raw)]), args.timeout
            )
            key = load.classify(status, body)
            if close:
                conn.transport.close()
            else:
                idle.append(conn)
        except Exception as exc:
            key = f"EXC {type(exc).__name__}"
        if scheduled >= t_meas:
            lat.append(time.perf_counter() - scheduled)
            counts[key] += 1

    tasks = []
    for i in range(total):
        scheduled = t_start + i / args.rate
        if scheduled >= t_meas and not snap:
            snap["cpu0"] = load.proc_cpu(args.server_pid)
            snap["db0"] = load.proc_cpu(args.db_pid)
            snap["ru0"] = resource.getrusage(resource.RUSAGE_SELF)
            snap["w0"] = time.perf_counter()
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - snap["w0"]
    cpu1, db1 = load.proc_cpu(args.server_pid), load.proc_cpu(args.db_pid)
    ru1, ru0 = resource.getrusage(resource.RUSAGE_SELF), snap["ru0"]
    for conn in idle:
        conn.transport.close()
    lat.sort()
    res: dict[str, Any] = {
        "mode": args.mode,
        "engine": "open-loop",
        "rate": args.rate,
        "duration_s": round(wall, 2),
        "requests": len(lat),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(load.pct(lat, 50) * 1000, 2),
        "p90_ms": round(load.pct(lat, 90) * 1000, 2),
        "p99_ms": round(load.pct(lat, 99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "responses": dict(counts.most_common()),
        "loadgen_cpu_pct": round(
            100 * ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / wall, 1
        ),
    }
    if args.server_pid:
        res["server_cpu_pct"] = round(100 * (cpu1 - snap["cpu0"]) / wall, 1)
    if args.db_pid:
        res["db_cpu_pct"] = round(100 * (db1 - snap["db0"]) / wall, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", required=True, help="the folder of load.py")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--base", required=True)
    ap.add_argument("--mode", choices=["bc", "poll"], default="bc")
    ap.add_argument("-c", "--concurrency", type=int, default=64, help="(unused: open loop)")
    ap.add_argument("-d", "--duration", type=float, default=10.0)
    ap.add_argument("-w", "--warmup", type=float, default=2.0)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--client-id", default="perf-client")
    ap.add_argument("--client-secret", default="perf-secret")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--db-pid", type=int, action="append", default=[])
    ap.add_argument("--bc-path", default="/backchannel")
    ap.add_argument("--hint", default="user{i}")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.peer).resolve()))
    import load  # the peer folder's load generator: its client and helpers

    load.BC_PATH, load.HINT = args.bc_path, args.hint
    print(json.dumps(asyncio.run(run(args, load))))


if __name__ == "__main__":
    main()
