"""Cross-site request forgery: every form post carries its session's token.

The token is the session's own (a synchroniser token, compared in constant
time), in the hidden ``csrf_token`` field of every form. The SameSite=Strict
cookie already keeps other sites' posts session-less; a post whose ``Origin``
header names another origin is refused as well.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request

from examples.call_centre.sessions import Session

FIELD = "csrf_token"


def post_is_genuine(
    request: Request, form: Mapping[str, str], session: Session | None, origin: str
) -> bool:
    """Whether a form post comes from the panel's own page in this session."""
    sent_origin = request.headers.get("origin")
    if sent_origin is not None and sent_origin != origin:
        return False
    token = form.get(FIELD, "")
    if session is None or not token:
        return False
    return hmac.compare_digest(token.encode(), session.csrf_token.encode())
