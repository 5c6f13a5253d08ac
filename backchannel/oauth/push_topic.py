"""The Web Push ``Topic`` of a request's messages (RFC 8030 §5.4, docs/device-api.md).

A later message with the same topic replaces an undelivered one, so a
``dismiss`` overtakes the ``prompt`` it withdraws.
"""

from __future__ import annotations

import base64
import hashlib

TOPIC_LENGTH = 32


def push_topic(ref: str) -> str:
    """The first 32 characters of base64url(SHA-256(UTF-8(ref)))."""
    digest = hashlib.sha256(ref.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:TOPIC_LENGTH]
