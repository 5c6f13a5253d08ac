"""Reading ``application/x-www-form-urlencoded`` bodies the way OAuth requires.

Refuses (``invalid_request``) a wrong content type, a body over the size
limit, bytes that are not UTF-8, and any parameter sent more than once
(RFC 6749 §3.1). Empty values count as absent.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from starlette.requests import Request

from backchannel.endpoints.request_body import read_body
from backchannel.errors import InvalidRequest

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 64


async def read_form(request: Request, max_bytes: int) -> dict[str, str]:
    return parse_form(await read_body(request, FORM_TYPE, max_bytes))


def parse_form(body: bytes) -> dict[str, str]:
    """The form's fields; ``+`` is a space, ``%XX`` escapes decode as strict UTF-8.

    The same reading as ``urllib.parse.parse_qsl(..., keep_blank_values=True)``
    with ``&`` as the only separator, without its overhead: every token poll
    goes through here.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequest("the form body must be percent-encoded ASCII") from None
    pairs = text.split("&") if text else []
    if len(pairs) > MAX_FIELDS:
        raise InvalidRequest(f"more than {MAX_FIELDS} form fields")
    form: dict[str, str] = {}
    for pair in pairs:
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name, value = _unquote(raw_name), _unquote(raw_value)
        if name in form:
            raise InvalidRequest(f"parameter {name!r} was sent more than once")
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("NUL characters are not allowed")
        form[name] = value
    return {name: value for name, value in form.items() if value != ""}


def _unquote(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    try:
        return unquote_plus(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest("a form value is not valid UTF-8") from None
