"""Reading a request body of one media type, within a size limit.

A wrong ``Content-Type``, a malformed ``Content-Length`` and a body over the
limit are refused before the body is read (``invalid_request``, 413 for the
size). A declared length bounds the read (the server enforces it); without
one the body is streamed and cut off at the limit.
"""

from __future__ import annotations

from starlette.requests import Request

from backchannel.errors import InvalidRequest, PayloadTooLarge


async def read_body(request: Request, media_type: str, max_bytes: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != media_type:
        raise InvalidRequest(f"the request body must be {media_type}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("malformed Content-Length")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
