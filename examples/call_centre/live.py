"""The server-sent event stream the desk page listens to (``GET /events``).

On connecting, the page gets every attempt it lists as it stands now (so
nothing that changed between the page load and the connection is missed),
then each change as it happens: one ``attempt`` event, whose data is
``wording.view`` as JSON. A comment every ``KEEPALIVE`` seconds keeps proxies
from closing a quiet stream; the stream ends when the session does or the
panel stops, and the browser's ``EventSource`` reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from examples.call_centre.attempts import Attempt, AttemptBook
from examples.call_centre.wording import view

KEEPALIVE = 15.0
RETRY_MS = 2000
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def event(attempt: Attempt) -> str:
    data = json.dumps(view(attempt), ensure_ascii=False, separators=(",", ":"))
    return f"event: attempt\ndata: {data}\n\n"


async def attempt_events(
    book: AttemptBook, agent: str, still_signed_in: Callable[[], bool]
) -> AsyncIterator[str]:
    with book.feed(agent) as changes:
        yield f"retry: {RETRY_MS}\n\n"
        for attempt in book.of_agent(agent):
            yield event(attempt)
        while still_signed_in():
            try:
                changed = await asyncio.wait_for(changes.get(), KEEPALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if changed is None:
                return
            yield event(changed)
