"""One HTTP exchange with the server and the reading of its answer.

Answers are read whole (up to ``MAX_BODY_BYTES``) and never redirected: an
OAuth endpoint that redirects is misconfigured, and following it would carry
credentials elsewhere. Error answers become :class:`OAuthError` (RFC 6749
§5.2, CIBA §13); a 503's ``Retry-After`` (RFC 9110 §10.2.3) travels with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from backchannel.rp.errors import OAuthError, ProtocolError, TransportError

MAX_BODY_BYTES = 1024 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # aiohttp's, case-insensitive
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError("the answer is not JSON", status=self.status) from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise ProtocolError("the answer is not a JSON object", status=self.status)
        return data


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    within: float,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """Send one request and read the whole answer within ``within`` seconds; network trouble
    is :class:`TransportError`."""
    try:
        async with session.request(
            method,
            url,
            data=dict(form) if form is not None else None,
            headers=dict(headers or {}),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=within),
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ProtocolError(
                        f"the answer from {url} is larger than {MAX_BODY_BYTES} bytes",
                        status=response.status,
                    )
            return Answer(response.status, response.headers, bytes(body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransportError(f"{method} {url}: {exc!r}") from exc


def retry_after(answer: Answer, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or an HTTP-date), None if absent."""
    value = answer.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return max(0.0, math.ceil(at.timestamp() - now))


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


def bearer_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Bearer`` challenge (RFC 6750 §3), for a resource server that
    answers its error in ``WWW-Authenticate`` only."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return dict(_CHALLENGE_PARAM.findall(params))


def oauth_error(answer: Answer, now: float) -> OAuthError:
    """The error an answer carries: from its JSON body, else from a Bearer challenge; a 503
    without either is ``temporarily_unavailable``."""
    wait = retry_after(answer, now)
    try:
        body = answer.json_object()
    except ProtocolError:
        challenge = bearer_challenge(answer.headers.get("WWW-Authenticate", ""))
        if "error" in challenge:
            return OAuthError.from_code(
                challenge["error"], challenge.get("error_description"), status=answer.status
            )
        if answer.status == 503:
            return OAuthError.from_code("temporarily_unavailable", status=503, retry_after=wait)
        raise ProtocolError(
            f"HTTP {answer.status} without an OAuth error body", status=answer.status
        ) from None
    error = body.get("error")
    if not isinstance(error, str) or not error:
        raise ProtocolError(
            f"HTTP {answer.status} without an OAuth error code", status=answer.status
        )
    description = body.get("error_description")
    uri = body.get("error_uri")
    return OAuthError.from_code(
        error,
        description if isinstance(description, str) else None,
        status=answer.status,
        error_uri=uri if isinstance(uri, str) else None,
        retry_after=wait,
    )


def json_or_error(answer: Answer, now: float) -> dict[str, Any]:
    """The JSON object of a 200 answer; raise the OAuth error of any other."""
    if answer.status == 200:
        return answer.json_object()
    raise oauth_error(answer, now)
