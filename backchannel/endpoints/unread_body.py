"""Reading what is left of a request body before the answer goes out.

An endpoint may answer without reading the whole body: a wrong content type,
a body over the size limit, a method that takes none. hypercorn then
misbehaves on HTTP/1.1 in two ways, both seen with chunked bodies:

- it closes the connection with the rest of the body unread, so the kernel
  answers the client's next bytes with a reset, and a client still writing
  its body never reads the 4xx;
- the body's chunks pile up in the request's queue (``max_app_queue_size``,
  ten messages); once it is full, hypercorn's reader waits forever to add
  the next one, so the connection neither closes nor serves the client's
  next request.

So before the first body message of an answer is sent, :class:`DrainUnreadBody`
reads and discards what the client is still sending, up to
:data:`DRAIN_BYTES` and :data:`DRAIN_SECONDS`. When the body then ended,
the connection stays usable; when it did not, the answer carries
``Connection: close``. Requests that declare no body pass straight through.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "DrainUnreadBody"]

DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 5.0
_CLOSE = (b"connection", b"close")


def _declares_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class DrainUnreadBody:
    """ASGI middleware: the request body is read to its end (within bounds) before answering."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _declares_body(scope):
            await self.app(scope, receive, send)
            return
        ended = False  # the body arrived to its end, or the client went away
        held_start: Message | None = None

        async def tracking_receive() -> Message:
            nonlocal ended
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                ended = True
            return message

        async def drain() -> None:
            left = self.max_bytes
            try:
                async with asyncio.timeout(self.seconds):
                    while not ended and left >= 0:
                        left -= len((await tracking_receive()).get("body", b""))
            except TimeoutError:
                pass

        async def draining_send(message: Message) -> None:
            nonlocal held_start
            if ended:
                if held_start is not None:
                    await send(held_start)
                    held_start = None
                await send(message)
                return
            if message["type"] == "http.response.start":
                held_start = message  # sent with the first body message, once drained
                return
            await drain()
            if held_start is not None:
                start = held_start
                held_start = None
                if not ended:
                    start = {**start, "headers": [*start.get("headers", ()), _CLOSE]}
                await send(start)
            await send(message)

        await self.app(scope, tracking_receive, draining_send)
