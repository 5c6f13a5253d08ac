"""Decision-to-notification latency for a ping client (CIBA §10.2).

A ping-mode client whose ``backchannel_client_notification_endpoint`` is an
HTTP receiver in the bench process (loopback; the server runs with
``BACKCHANNEL_ALLOW_INSECURE_URLS=true``) starts requests through
``/bc-authorize``; the bench then approves them at a fixed rate with
``record_decision`` on its own connection (the decision's transaction queues
the notification and wakes the notification workers). Latency runs from just
before that transaction's COMMIT is sent to the receiver having read the ping
(``{"auth_req_id": ...}``, with the client's bearer token checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from harness import (
    REQUESTED_EXPIRY,
    Database,
    Fixture,
    Server,
    basic_auth,
    create_users,
    percentile,
)
from longpoll import TimedConnection

from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret
from tests.support.factories import create_client

DECIDERS = 4  # connections the decisions are recorded on, so that 200/s is kept up


class Receiver:
    """The client's notification endpoint: when each ping arrived, by auth_req_id."""

    def __init__(self, bearer: dict[str, str]) -> None:
        self.bearer = bearer  # auth_req_id -> the client_notification_token it was sent with
        self.arrived: dict[str, float] = {}
        self.refused = 0
        self.url = ""
        self.expected = 0
        self.all_in = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        at = time.perf_counter()
        auth_req_id = str(body.get("auth_req_id"))
        if request.headers.get("Authorization") != f"Bearer {self.bearer.get(auth_req_id)}":
            self.refused += 1
            return web.Response(status=401)
        self.arrived.setdefault(auth_req_id, at)
        if self.expected and len(self.arrived) >= self.expected:
            self.all_in.set()
        return web.Response(status=204)


async def ping_phase(
    server: Server, db: Database, fixture: Fixture, *, decisions: int, rate: float
) -> dict[str, Any]:
    """``decisions`` approvals at ``rate`` per second for a ping client's requests."""
    conns: asyncio.Queue[TimedConnection] = asyncio.Queue()
    for _ in range(DECIDERS):
        c = await asyncpg.connect(db.dsn, connection_class=TimedConnection)
        for codec in ("jsonb", "json"):
            await c.set_type_codec(codec, encoder=json.dumps, decoder=json.loads,
                                   schema="pg_catalog")  # fmt: skip
        conns.put_nowait(c)
    conn = await conns.get()
    receiver = Receiver({})
    app = web.Application()
    app.router.add_post("/ping", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/ping"
    latencies: list[float] = []
    try:
        client, secret = await create_client(
            conn,
            client_id=f"bench-ping-{fixture.tag}",
            name="Bench ping RP",
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=receiver.url,
        )
        assert secret is not None
        auth = basic_auth(client.client_id, secret)
        hints = await create_users(conn, fixture, decisions)
        sem = asyncio.Semaphore(16)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def start(hint: str) -> str:
                token = secrets.token_urlsafe(24)
                form = {"scope": "openid", "login_hint": hint, "client_notification_token": token,
                        "requested_expiry": str(REQUESTED_EXPIRY)}  # fmt: skip
                async with (
                    sem,
                    session.post(
                        server.url + "/bc-authorize", data=form, headers={"Authorization": auth}
                    ) as resp,
                ):
                    body = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise RuntimeError(f"/bc-authorize answered {resp.status}: {body}")
                    receiver.bearer[body["auth_req_id"]] = token
                    return str(body["auth_req_id"])

            ids = list(await asyncio.gather(*(start(h) for h in hints)))
        receiver.expected = len(ids)
        await asyncio.sleep(1.0)
        cpu0, started = server.cpu_seconds(), time.monotonic()
        conns.put_nowait(conn)
        precommit: dict[str, float] = {}
        lag: list[float] = []

        async def decide(auth_req_id: str, scheduled: float) -> None:
            c = await conns.get()
            try:
                lag.append(time.perf_counter() - scheduled)
                await record_decision(c, hash_secret(auth_req_id), "approved")
                precommit[auth_req_id] = c.precommit_at
            finally:
                conns.put_nowait(c)

        tasks = []
        t0 = time.perf_counter()
        for i, auth_req_id in enumerate(ids):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(decide(auth_req_id, scheduled)))
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):  # what did not arrive counts as missing
            await asyncio.wait_for(receiver.all_in.wait(), 10)
        wall = time.monotonic() - started
        cpu1 = server.cpu_seconds()
        for auth_req_id, at in precommit.items():
            if auth_req_id in receiver.arrived:
                latencies.append(1000 * (receiver.arrived[auth_req_id] - at))
    finally:
        await runner.cleanup()
        while not conns.empty():
            await conns.get_nowait().close()
    return {
        "decisions": len(ids),
        "rate": rate,
        "achieved_rate": round(len(ids) / max(1e-9, max(precommit.values()) - t0), 1),
        "received": len(latencies),
        "missing": len(ids) - len(latencies),
        "refused": receiver.refused,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else math.nan,
        "decision_lag_p99_ms": round(1000 * percentile(lag, 99), 2),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
    }
