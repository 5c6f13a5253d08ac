"""How much of an unread request body is read before the answer goes out.

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

So before the first body message of an answer is sent, the request gateway
(``endpoints/gateway.py``) reads and discards what the client is still
sending, up to :data:`DRAIN_BYTES` and :data:`DRAIN_SECONDS`. When the body
then ended, the connection stays usable; when it did not, the answer carries
``Connection: close``. Requests that declare no body pass straight through.
"""

from __future__ import annotations

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS"]

DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 5.0
