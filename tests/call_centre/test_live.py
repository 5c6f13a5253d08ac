"""The event stream behind the live status: what the page hears, and when."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backchannel.oauth.decision_recording import record_decision
from tests.support.call_centre import Desk, binding_message_on, request_hash

pytestmark = pytest.mark.usefixtures("alice")


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The ``attempt`` events of a server-sent event stream, decoded."""
    name, data = "", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            if name == "attempt":
                yield json.loads(data)
            name, data = "", ""


async def test_the_stream_sends_the_attempts_as_they_stand_then_each_change(
    desk: Desk, db: asyncpg.Connection
) -> None:
    attempt = await desk.start("alice@example.com")
    attempt_id = attempt.rsplit("/", 1)[1]
    async with desk.http.stream("GET", "/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        events = _events(stream.aiter_lines())
        first = await asyncio.wait_for(anext(events), 10)
        assert (first["id"], first["status"], first["final"]) == (attempt_id, "waiting", False)
        assert first["label"] == "Waiting"

        page = (await desk.http.get(attempt)).text
        id_hash = await request_hash(db, binding_message_on(page))
        await record_decision(db, id_hash, "approved")
        verified = await asyncio.wait_for(anext(events), 10)
        assert (verified["id"], verified["status"], verified["final"]) == (
            attempt_id,
            "verified",
            True,
        )
        assert verified["identity"]["subject"] == "alice"
        assert verified["identity"]["name"] == "Alice Example"
        assert verified["identity"]["method"] == "Phone"
        assert verified["done"] is None

        await desk.post(attempt + "/done")
        done = await asyncio.wait_for(anext(events), 10)
        assert done["done"]["label"] == "Password reset done"
