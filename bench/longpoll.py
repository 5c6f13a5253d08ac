"""Decision-to-tokens latency with long polling.

Clients hold ``/token`` polls with ``Prefer: wait=25``. Once PostgreSQL shows that
every poll of a wave has run its poll statement (so its waiter is registered),
the bench approves them one at a time with ``record_decision`` on its own
connection. Latency runs from just before that transaction's COMMIT is sent to
the moment the client has read the whole token response.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
from asyncpg.transaction import Transaction
from harness import (
    CIBA_GRANT,
    REQUESTED_EXPIRY,
    Census,
    Database,
    Fixture,
    Server,
    create_users,
    percentile,
)

from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret


class _TimedTransaction(Transaction):
    __slots__ = ()

    async def __aexit__(self, extype: Any, ex: Any, tb: Any) -> None:
        if extype is None:
            self._connection.precommit_at = time.perf_counter()
        await super().__aexit__(extype, ex, tb)


class TimedConnection(asyncpg.Connection):  # type: ignore[misc]
    """Stamps ``precommit_at`` just before a managed transaction sends COMMIT."""

    precommit_at: float = 0.0

    def transaction(
        self, *, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> Transaction:
        return _TimedTransaction(self, isolation, readonly, deferrable)


async def create_requests(
    session: aiohttp.ClientSession, server: Server, fixture: Fixture, hints: list[str]
) -> list[str]:
    """One new request per login hint through /bc-authorize; their auth_req_ids."""
    sem = asyncio.Semaphore(16)

    async def one(hint: str) -> str:
        async with sem:
            form = {
                "scope": "openid",
                "login_hint": hint,
                "requested_expiry": str(REQUESTED_EXPIRY),
            }
            async with session.post(
                server.url + "/bc-authorize", data=form, headers={"Authorization": fixture.auth}
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"/bc-authorize answered {resp.status}: {body}")
                return str(body["auth_req_id"])

    return list(await asyncio.gather(*(one(h) for h in hints)))


async def long_poll_phase(
    server: Server,
    db: Database,
    fixture: Fixture,
    *,
    decisions: int,
    held: int,
    spacing: float,
    census: Callable[[Awaitable[None]], Awaitable[Census]] | None = None,
) -> dict[str, Any]:
    """``decisions`` measured decisions in waves of ``held`` held polls; then, if
    ``census`` is given, one more wave run under it (statements per decision)."""
    conn = await asyncpg.connect(db.dsn, connection_class=TimedConnection)
    hints = await create_users(conn, fixture, 10 + decisions + (held if census else 0))
    for codec in ("jsonb", "json"):  # as backchannel's pool does (record_decision writes jsonb)
        await conn.set_type_codec(
            codec, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
    latencies: list[float] = []
    decide_ms: list[float] = []
    answers: dict[str, int] = {}
    applied: dict[str, int] = {}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def hold(auth_req_id: str) -> tuple[int, dict[str, Any], str | None, float]:
                async with session.post(
                    server.url + "/token",
                    data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
                    headers={"Authorization": fixture.auth, "Prefer": "wait=25"},
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as resp:
                    body = await resp.json(content_type=None)
                    return (
                        resp.status,
                        body,
                        resp.headers.get("Preference-Applied"),
                        (time.perf_counter()),
                    )

            async def wave(ids: list[str], record: bool) -> None:
                tasks = [asyncio.create_task(hold(i)) for i in ids]
                hashes = [hash_secret(i) for i in ids]
                deadline = time.monotonic() + 20
                while True:
                    polled = await conn.fetchval(
                        "SELECT count(*) FROM auth_requests"
                        " WHERE id_hash = ANY($1::bytea[]) AND poll_count > 0",
                        hashes,
                    )
                    if polled == len(ids):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {polled}/{len(ids)} long polls were held")
                    await asyncio.sleep(0.01)
                precommit: list[float] = []
                for h in hashes:
                    called = time.perf_counter()
                    await record_decision(conn, h, "approved")
                    precommit.append(conn.precommit_at)
                    decide_ms.append((time.perf_counter() - called) * 1000)
                    await asyncio.sleep(spacing)
                results = await asyncio.gather(*tasks)
                if not record:
                    return
                for t0, (status, body, preference, arrived) in zip(precommit, results, strict=True):
                    ok = status == 200 and {"access_token", "id_token"} <= set(body)
                    key = "200 with tokens" if ok else f"{status} {body.get('error', body)}"
                    answers[key] = answers.get(key, 0) + 1
                    applied[str(preference)] = applied.get(str(preference), 0) + 1
                    if ok:
                        latencies.append((arrived - t0) * 1000)

            await wave(await create_requests(session, server, fixture, hints[:10]), record=False)
            ids = await create_requests(session, server, fixture, hints[10 : 10 + decisions])
            cpu0, started = server.cpu_seconds(), time.monotonic()
            for start in range(0, len(ids), held):
                await wave(ids[start : start + held], record=True)
            wall = time.monotonic() - started
            cpu1 = server.cpu_seconds()
            statements = None
            if census is not None:
                extra = await create_requests(session, server, fixture, hints[10 + decisions :])
                statements = (await census(wave(extra, record=False))).summary()
    finally:
        await conn.close()
    return {
        "census": statements,
        "decisions": decisions,
        "held_at_once": held,
        "decision_spacing_ms": spacing * 1000,
        "answers": answers,
        "preference_applied": applied,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else math.nan,
        "record_decision_p50_ms": round(percentile(decide_ms, 50), 2),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / wall, 1),
    }
