"""One dedicated connection per app instance that LISTENs for cross-replica events.

Channels:
- ``bc_decision``: payload is the hex SHA-256 of an auth_req_id whose state
  changed (decided, revoked); wakes long polls on every replica.
- ``bc_config``: payload ``client:<client_id>``, ``keys`` or ``policy``;
  drops cached configuration on every replica.

If the connection drops, it reconnects with back-off and calls every
``on_reconnect`` callback, since notifications may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from backchannel.db.pool import connect

log = logging.getLogger(__name__)

DECISION_CHANNEL = "bc_decision"
CONFIG_CHANNEL = "bc_config"

Handler = Callable[[str], None]


class PgListener:
    def __init__(
        self, dsn: str, *, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep
    ) -> None:
        """``sleep`` waits out the back-off after each failed reconnect attempt."""
        self._dsn = dsn
        self._handlers: dict[str, list[Handler]] = {}
        self._on_reconnect: list[Callable[[], None]] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._closing = False
        self._sleep = sleep

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for each notification on ``channel``; a channel must be known
        before :meth:`start`, which LISTENs on every channel subscribed so far."""
        if channel not in self._handlers and self._conn is not None:
            raise RuntimeError(f"subscribe to {channel} before the listener starts")
        self._handlers.setdefault(channel, []).append(handler)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._on_reconnect.append(callback)

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is open (False while it reconnects, and once closed)."""
        conn = self._conn
        return (
            not self._closing
            and conn is not None
            and not conn.is_closed()
            and not self._lost.is_set()
        )

    @property
    def server_pid(self) -> int | None:
        """The PostgreSQL backend of the LISTEN connection (operators find it in
        ``pg_stat_activity``); None while there is none."""
        conn = self._conn
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="pg-listener")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def _connect(self) -> None:
        conn = await connect(self._dsn)
        conn.add_termination_listener(lambda _c: self._lost.set())
        for channel in self._handlers:
            await conn.add_listener(channel, self._dispatch)
        self._conn = conn
        self._lost.clear()

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        text = payload if isinstance(payload, str) else str(payload)
        for handler in self._handlers.get(channel, ()):
            try:
                handler(text)
            except Exception:  # a bad handler must not stop the listener
                log.exception("listener handler failed on %s", channel)

    async def _watch(self) -> None:
        delay = 0.1
        while not self._closing:
            await self._lost.wait()
            if self._closing:
                return
            log.warning("LISTEN connection lost; reconnecting")
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN reconnect failed: %s", exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            for callback in self._on_reconnect:
                callback()


async def notify(conn: asyncpg.Connection, channel: str, payload: str) -> None:
    """Queue a notification; PostgreSQL delivers it when the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
