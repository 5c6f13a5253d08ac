"""Every error ``backchannel.rp`` raises, in one tree under :class:`RPError`.

::

    RPError
    ├── UsageError          (also a ValueError) the call itself is wrong: no hint, two hints, …
    ├── TransportError      the server could not be reached, or did not answer in time
    ├── ProtocolError       the server answered something the protocol does not allow
    ├── InvalidIdToken      an ID token failed verification (OIDC Core §3.1.3.7, CIBA §10.3.1)
    └── OAuthError          the server answered with an OAuth error (RFC 6749 §5.2, CIBA §13)
        ├── AccessDenied        access_denied: the user or the server said no
        │   └── ReportedNotMe   the user said the request was not theirs ("this wasn't me")
        ├── ExpiredToken        expired_token: the request expired before the user decided
        ├── TransactionFailed   transaction_failed (CIBA §12, push mode)
        ├── InvalidGrant        invalid_grant: unknown, spent or foreign auth_req_id / refresh token
        └── InvalidClient       invalid_client: client authentication failed

Like the server's own errors, each :class:`OAuthError` class names its wire code
in the class attribute ``error``; any other code arrives as a plain
:class:`OAuthError` whose instance carries it. A class that also names a
``description`` stands for that code with exactly that ``error_description``.
"""

from __future__ import annotations

from typing import ClassVar


class RPError(Exception):
    """Base of every error raised by ``backchannel.rp``."""


class UsageError(RPError, ValueError):
    """The library was called with arguments it cannot send (nothing reached the server)."""


class TransportError(RPError):
    """The server could not be reached, or the exchange broke off or timed out."""


class ProtocolError(RPError):
    """The server's answer breaks the protocol (not JSON, a field missing, a wrong issuer, …)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidIdToken(RPError):
    """An ID token failed verification; ``reason`` says which check refused it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ID token refused: {reason}")
        self.reason = reason


class OAuthError(RPError):
    """An OAuth error answer: ``error``, ``error_description``, ``error_uri`` and HTTP ``status``.

    ``status`` is None when no HTTP answer carried the error: a pushed error
    (CIBA §10.3) or a request that expired while the client waited. A 503's
    ``Retry-After`` is kept as ``retry_after`` (seconds).
    """

    error: str = "oauth_error"
    # Set on a class that refines its code by one exact error_description.
    description: ClassVar[str | None] = None
    _by_code: ClassVar[dict[str, type[OAuthError]]] = {}
    _by_description: ClassVar[dict[tuple[str, str], type[OAuthError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.description is not None:
            OAuthError._by_description[(cls.error, cls.description)] = cls
        else:
            OAuthError._by_code[cls.error] = cls

    def __init__(
        self,
        error_description: str | None = None,
        *,
        error: str | None = None,
        status: int | None = None,
        error_uri: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        if error is not None:
            self.error = error
        self.error_description = error_description
        self.status = status
        self.error_uri = error_uri
        self.retry_after = retry_after
        text = f"{self.error}: {error_description}" if error_description else self.error
        super().__init__(text if status is None else f"{text} (HTTP {status})")

    @classmethod
    def from_code(
        cls,
        error: str,
        error_description: str | None = None,
        *,
        status: int | None = None,
        error_uri: str | None = None,
        retry_after: float | None = None,
    ) -> OAuthError:
        """The instance of the class registered for ``error`` and ``error_description``,
        else for ``error`` alone (plain OAuthError if none)."""
        error_class = OAuthError._by_description.get((error, error_description or "")) or (
            OAuthError._by_code.get(error, OAuthError)
        )
        return error_class(
            error_description,
            error=error,
            status=status,
            error_uri=error_uri,
            retry_after=retry_after,
        )


class AccessDenied(OAuthError):
    error = "access_denied"


class ReportedNotMe(AccessDenied):
    """The user answered "this wasn't me": they say they did not make this request.

    A denial that may mean someone else is using the user's identity (the
    server answers ``access_denied`` with this exact ``error_description``);
    still an :class:`AccessDenied` for code that needs no distinction.
    """

    description = "the user reported this request as not theirs"


class ExpiredToken(OAuthError):
    error = "expired_token"


class TransactionFailed(OAuthError):
    error = "transaction_failed"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class InvalidClient(OAuthError):
    error = "invalid_client"
