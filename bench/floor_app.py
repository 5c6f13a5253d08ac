"""The floor: what a CIBA request costs with hypercorn, asyncpg and backchannel's own SQL
and nothing else (bench/vs_peer.py ``--variant NAME=CHECKOUT,floor``).

A bare ASGI app, no framework, no client authentication, no policy, no metrics:

- ``POST /bc-authorize`` takes ``login_hint`` from the form, runs the service's
  two statements (``select_user_by_hint``; ``insert_auth_request``, durable,
  with its audit row) and answers the ``auth_req_id``;
- ``POST /token`` takes ``auth_req_id``, runs the service's one poll statement
  (``poll_auth_request``: the pacing UPDATE) and answers ``authorization_pending``.

With ``FLOOR_STATEMENT=trivial`` each request runs one ``SELECT`` of its
parameter instead (one round trip that reads and writes nothing): the cost of
hypercorn and a database round trip alone; ``FLOOR_STATEMENT=none`` answers
without touching the database (hypercorn alone).

Whatever backchannel spends above this floor is the framework and its own
Python; what the floor spends is the fixed stack (hypercorn, asyncpg,
PostgreSQL) doing the same durable work.

    BACKCHANNEL_DATABASE_URL=... FLOOR_CLIENT_ID=perf-client \\
        hypercorn --worker-class uvloop -b 127.0.0.1:8300 bench.floor_app:app
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from backchannel.db.auth_requests import (
    NewAuthRequest,
    PromptCaps,
    QueuedPrompt,
    insert_auth_request,
    poll_auth_request,
)
from backchannel.db.pool import ConnectionPool, create_pool
from backchannel.db.users import LoginHint, select_user_by_hint
from backchannel.oauth.polling import poll_limits
from backchannel.oauth.secrets import hash_secret
from backchannel.settings import Settings

EXPIRES_IN = 600
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]

Scope = dict[str, Any]


class Floor:
    def __init__(self) -> None:
        self.pool: ConnectionPool | None = None
        self.settings = Settings.from_env()  # the server's pacing rules and interval
        self.limits = poll_limits(self.settings)
        self.client_id = os.environ.get("FLOOR_CLIENT_ID", "perf-client")
        self.statement = os.environ.get("FLOOR_STATEMENT") or "service"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] != "POST":  # a readiness probe
            await _answer(send, 200, {"floor": True})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        form = dict(parse_qsl(body.decode("latin-1")))
        assert self.pool is not None
        if self.statement in ("trivial", "none"):
            if self.statement == "trivial":
                await self.pool.fetchval("SELECT $1::text", body.decode("latin-1"))
            if scope["path"] == "/bc-authorize":
                status, answer = 200, {"auth_req_id": secrets.token_urlsafe(32), "interval": 1}
            else:
                status, answer = 400, {"error": "authorization_pending"}
        elif scope["path"] == "/bc-authorize" and "login_hint" in form:
            status, answer = await self._authorize(self.pool, form)
        elif scope["path"] == "/token" and "auth_req_id" in form:
            status, answer = await self._poll(self.pool, form)
        else:
            status, answer = 400, {"error": "invalid_request"}
        await _answer(send, status, answer)

    async def _authorize(self, pool: ConnectionPool, form: dict[str, str]) -> tuple[int, Any]:
        user = await select_user_by_hint(pool, [LoginHint("username", form["login_hint"])])
        if user is None:
            return 400, {"error": "unknown_user_id"}
        auth_req_id = secrets.token_urlsafe(32)
        id_hash = hash_secret(auth_req_id)
        await insert_auth_request(
            pool,
            NewAuthRequest(
                id_hash=id_hash,
                client_id=self.client_id,
                user_id=user.user_id,
                scope=("openid",),
                acr_values=None,
                binding_message=form.get("binding_message"),
                delivery_mode="poll",
                requested_expiry=None,
                expires_at=datetime.now(UTC) + timedelta(seconds=EXPIRES_IN),
                poll_interval=self.settings.poll_interval,
            ),
            QueuedPrompt("floor", {}, {}),
            {"scope": ["openid"], "hint": "login_hint"},
            PromptCaps(),
        )
        interval = self.settings.poll_interval
        return 200, {"auth_req_id": auth_req_id, "expires_in": EXPIRES_IN, "interval": interval}

    async def _poll(self, pool: ConnectionPool, form: dict[str, str]) -> tuple[int, Any]:
        result = await poll_auth_request(
            pool, hash_secret(form["auth_req_id"]), self.client_id, self.limits
        )
        if result is None:
            return 400, {"error": "invalid_grant"}
        return 400, {"error": "authorization_pending"}

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                assert self.settings.database_url is not None
                self.pool = await create_pool(self.settings.database_url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Any, status: int, answer: Any) -> None:
    payload = json.dumps(answer).encode()
    headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


app = Floor()
