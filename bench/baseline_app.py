"""The baseline: a bare Starlette app shaped like a token poll, with nothing else.

``POST /bump`` reads an ``application/x-www-form-urlencoded`` body (``id=N``),
runs one ``pool.fetchrow`` of ``UPDATE bench_counter ... RETURNING n`` on row
N (bench/run.py creates the table with many rows, so there is no hot row) and
answers JSON. The pool is asyncpg's own, with the sizes and command timeout of
backchannel's (``backchannel/db/pool.py``). ``GET /`` answers once the
lifespan has started (readiness check).

Run: ``BENCH_DATABASE_URL=... hypercorn -c bench/hypercorn.toml bench/baseline_app.py:app``
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BUMP = "UPDATE bench_counter SET n = n + 1 WHERE id = $1 RETURNING n"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool ``reset`` that sends nothing (the what-if run: BENCH_POOL_RESET=off)."""


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"],
        min_size=int(os.environ.get("BENCH_POOL_MIN", "2")),
        max_size=int(os.environ.get("BENCH_POOL_MAX", "10")),
        command_timeout=30,
        reset=_keep_session if os.environ.get("BENCH_POOL_RESET") == "off" else None,
    )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


async def bump(request: Request) -> Response:
    body = await request.body()
    form = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))
    row = await request.app.state.pool.fetchrow(BUMP, int(form["id"]))
    if row is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    return JSONResponse({"n": row["n"]}, headers={"Cache-Control": "no-store"})


async def ready(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/bump", bump, methods=["POST"]), Route("/", ready, methods=["GET"])],
    lifespan=lifespan,
)
