"""The OAuth error hierarchy: each class carries its wire code and HTTP status.

Lower layers raise these; one Starlette handler (``render_oauth_error``) turns
any of them into the JSON body of RFC 6749 §5.2 / CIBA §13. A database that
cannot answer becomes ``503 temporarily_unavailable`` with ``Retry-After``
(docs/operations.md, "When the database is unavailable"); other unexpected
exceptions become a bare ``server_error`` without details.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from backchannel.responses import JSONResponse

log = logging.getLogger(__name__)

# error_description may only carry %x20-21 / %x23-5B / %x5D-7E (RFC 6749 §5.2).
_NOT_ALLOWED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def clean_description(text: str) -> str:
    """Replace every character that RFC 6749 does not allow in error_description."""
    return _NOT_ALLOWED.sub("?", text)[:500]


class OAuthError(Exception):
    """Base of every protocol error answered to a client."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(
        self,
        description: str | None = None,
        *,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.description = description
        self.status = status_code if status_code is not None else self.status_code
        self.headers = dict(headers or {})
        super().__init__(f"{self.error}: {description}" if description else self.error)

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = clean_description(self.description)
        return body


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class AccessDenied(OAuthError):
    """The OP refused: 403 at /bc-authorize, 400 when answered to a token poll."""

    error = "access_denied"
    status_code = 403


# access_denied's error_description for a request that ended denied: a relying party
# can tell "this wasn't me" (the user reported the request as not theirs) from a plain
# denial by this exact text, at /token and in a pushed error (docs/relying-parties.md).
DENIED_DESCRIPTION = "the request was denied"
NOT_ME_DESCRIPTION = "the user reported this request as not theirs"
_NOT_ME_REASON = "not_me"  # the denial_reason a "this wasn't me" decision records


def denial_description(denial_reason: str | None) -> str:
    """What access_denied says about a denied request, from its ``denial_reason``."""
    return NOT_ME_DESCRIPTION if denial_reason == _NOT_ME_REASON else DENIED_DESCRIPTION


class ExpiredLoginHintToken(OAuthError):
    error = "expired_login_hint_token"


class UnknownUserId(OAuthError):
    error = "unknown_user_id"


class MissingUserCode(OAuthError):
    error = "missing_user_code"


class InvalidUserCode(OAuthError):
    error = "invalid_user_code"


class InvalidBindingMessage(OAuthError):
    error = "invalid_binding_message"


class InvalidAuthorizationDetails(OAuthError):
    """``authorization_details`` is malformed, of an unknown or disallowed type, or does
    not fit its type's schema (RFC 9396 §5)."""

    error = "invalid_authorization_details"


class AuthorizationPending(OAuthError):
    error = "authorization_pending"


class SlowDown(OAuthError):
    error = "slow_down"


class ExpiredToken(OAuthError):
    error = "expired_token"


class TemporarilyUnavailable(OAuthError):
    """A temporary lock (poll abuse, shutdown): 503 with Retry-After."""

    error = "temporarily_unavailable"
    status_code = 503

    def __init__(self, description: str | None = None, *, retry_after: int) -> None:
        super().__init__(description, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class InvalidDPoPProof(OAuthError):
    """A DPoP proof was missing, malformed or did not bind the request (RFC 9449 §7)."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuthError):
    """The proof must carry the server's nonce, sent in ``DPoP-Nonce`` (RFC 9449 §8)."""

    error = "use_dpop_nonce"

    def __init__(self, description: str | None = None, *, nonce: str) -> None:
        super().__init__(description, headers={"DPoP-Nonce": nonce})
        self.nonce = nonce


class InvalidToken(OAuthError):
    """A bearer token was refused at a resource endpoint (RFC 6750 §3.1)."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(OAuthError):
    """The token lacks the scope the resource needs (RFC 6750 §3.1)."""

    error = "insufficient_scope"
    status_code = 403


class PayloadTooLarge(InvalidRequest):
    status_code = 413


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500


def error_response(exc: OAuthError, headers: dict[str, str] | None = None) -> Response:
    headers = {**NO_STORE, **(headers or {}), **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def oauth_error_response(
    request: Request, exc: OAuthError, headers: dict[str, str] | None = None
) -> Response:
    """The error answer, noting its code as the outcome observability.requests counts."""
    request.state.oauth_error = exc.error
    return error_response(exc, headers)


async def render_oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return oauth_error_response(request, exc)


# The database cannot answer now: down, restarting, overloaded, a statement or a
# checkout that took too long, or a transaction that lost a race and may be retried.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
)
# Input the database refused as data (class 22) or text Python cannot encode: a check
# missing where the value entered. Answered as the client's error, and logged.
UNSTORABLE_INPUT: tuple[type[BaseException], ...] = (asyncpg.DataError, UnicodeEncodeError)
RETRY_AFTER_OUTAGE = 5


async def render_unavailable(request: Request, exc: Exception) -> Response:
    """503 ``temporarily_unavailable`` with ``Retry-After``; one log line, no traceback."""
    log.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        str(exc)[:200],
    )
    return oauth_error_response(
        request,
        TemporarilyUnavailable(
            "the service is temporarily unavailable; retry later", retry_after=RETRY_AFTER_OUTAGE
        ),
    )


async def render_unstorable_input(request: Request, exc: Exception) -> Response:
    log.warning("input refused by the database on %s %s: %s", request.method, request.url.path, exc)
    return oauth_error_response(request, InvalidRequest("a parameter holds unacceptable text"))


class NotFound(OAuthError):
    """No endpoint at this path."""

    error = "not_found"
    status_code = 404


class MethodNotAllowed(OAuthError):
    """The endpoint exists but does not answer this method; ``Allow`` names those it does."""

    error = "method_not_allowed"
    status_code = 405


async def render_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) in the same JSON shape as ours."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    error: OAuthError
    if exc.status_code == 404:
        error = NotFound(f"no endpoint at {request.url.path}")
    elif exc.status_code == 405:
        allowed = ", ".join(sorted(headers.get("Allow", "").split(", ")))
        error = MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}")
    elif exc.status_code >= 500:
        error = ServerError(status_code=exc.status_code)
    else:
        error = InvalidRequest(exc.detail, status_code=exc.status_code)
    return oauth_error_response(request, error, headers)


async def render_client_gone(request: Request, exc: Exception) -> Response:
    """The client went away before its body arrived in full (closed, or cut by the server's
    read timeout): nothing went wrong here. One INFO line; the answer rarely reaches anyone."""
    log.info("client went away during the request body on %s %s", request.method, request.url.path)
    return oauth_error_response(request, InvalidRequest("the request body did not arrive in full"))


async def render_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ServerError())


class UserVerificationRequired(OAuthError):
    """Approving needs the user's fingerprint, face or PIN (docs/device-api.md)."""

    error = "user_verification_required"
    status_code = 403


class UserVerificationFailed(OAuthError):
    """The WebAuthn assertion of an approval did not verify (docs/device-api.md)."""

    error = "user_verification_failed"
    status_code = 403


class RequestNotPending(OAuthError):
    """A decision arrived for a request that is no longer pending (decided, expired, unknown)."""

    error = "invalid_request"
    status_code = 409

    def __init__(self, state: str) -> None:
        super().__init__(f"the request is {state}")
        self.state = state
