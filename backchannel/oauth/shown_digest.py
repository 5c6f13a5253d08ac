"""The ``shown`` digest: what the user saw when deciding (docs/device-api.md).

``base64url(SHA-256(UTF-8(JSON.stringify([ref, client_name, binding_message, scope]))))``
with ``binding_message`` ``""`` when absent and ``scope`` space-joined. base64url
is unpadded, as everywhere in JOSE. The browser's ``JSON.stringify`` and
``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` agree on these
four strings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence


def request_ref(id_hash: bytes) -> str:
    """The ``ref`` a device knows a request by: the hex SHA-256 of its auth_req_id."""
    return id_hash.hex()


def shown_digest(
    ref: str, client_name: str, binding_message: str | None, scope: Sequence[str]
) -> str:
    """The digest a device signs over in its decision."""
    text = json.dumps(
        [ref, client_name, binding_message or "", " ".join(scope)],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
