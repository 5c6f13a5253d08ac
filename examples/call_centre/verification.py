"""The CIBA flow behind one attempt, through ``backchannel.rp`` only.

``start`` sends ``/bc-authorize`` with the caller's typed login hint and the
binding message, and records the attempt; a background task then waits for
the caller's decision (long polling) and records the outcome. An approval is
read from the verified ID token (``sub``, ``auth_time``, ``acr``) and the
userinfo answer for that same subject (``name``: with an access token, OIDC
Core §5.4 puts profile claims there rather than in the ID token); the access
token (and a refresh token, if one came) is revoked straight after: the panel
needs nothing else from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from datetime import UTC, datetime, timedelta

from backchannel.rp import (
    AccessDenied,
    CibaClient,
    ExpiredToken,
    OAuthError,
    ReportedNotMe,
    RPError,
    TokenResponse,
)
from examples.call_centre.agents import Agent
from examples.call_centre.attempts import Attempt, AttemptBook, Identity, Status
from examples.call_centre.binding import binding_message, readback_code
from examples.call_centre.caller import CallerId

log = logging.getLogger(__name__)

SCOPE = "openid profile"


class Verifier:
    def __init__(self, client: CibaClient, book: AttemptBook, *, request_expiry: int) -> None:
        self.client = client
        self.book = book
        self.request_expiry = request_expiry
        self._waiting: set[asyncio.Task[None]] = set()

    async def start(self, agent: Agent, caller: CallerId, reason: str) -> Attempt:
        """Ask the provider to prompt the caller; the attempt as it now stands."""
        code = readback_code()
        now = datetime.now(UTC)
        attempt = Attempt(
            id=secrets.token_urlsafe(12),
            agent=agent.login,
            caller=caller,
            reason=reason,
            code=code,
            binding_message=binding_message(agent.name, reason, code),
            started_at=now,
        )
        try:
            started = await self.client.start(
                login_hint=caller.login_hint,
                scope=SCOPE,
                binding_message=attempt.binding_message,
                requested_expiry=self.request_expiry,
            )
        except OAuthError as refusal:
            status = {"unknown_user_id": Status.NO_MATCH, "access_denied": Status.REFUSED}.get(
                refusal.error, Status.FAILED
            )
            attempt = _ended(attempt, status, refusal.error_description or refusal.error)
        except RPError as exc:
            log.warning("attempt %s could not be sent: %s", attempt.id, exc)
            attempt = _ended(attempt, Status.FAILED, "the verification service did not answer")
        else:
            expires_at = now + timedelta(seconds=started.expires_in)
            attempt = dataclasses.replace(attempt, expires_at=expires_at)
            task = asyncio.create_task(self._follow(attempt.id, started.auth_req_id))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
        self.book.add(attempt)
        return attempt

    async def _follow(self, attempt_id: str, auth_req_id: str) -> None:
        status, detail, identity = Status.FAILED, None, None
        try:
            tokens = await self.client.wait(auth_req_id)
            identity = await self._identity(tokens)
            status = Status.VERIFIED
        except ReportedNotMe:
            status = Status.NOT_ME
        except AccessDenied:
            status = Status.DENIED
        except ExpiredToken:
            status = Status.EXPIRED
        except OAuthError as exc:
            detail = exc.error_description or exc.error
        except RPError as exc:
            log.warning("attempt %s: %s", attempt_id, exc)
            detail = "the verification service did not answer as it should"
        self.book.update(
            attempt_id,
            status=status,
            detail=detail,
            identity=identity,
            ended_at=datetime.now(UTC),
        )

    async def _identity(self, tokens: TokenResponse) -> Identity:
        claims = tokens.id_token_claims
        assert claims is not None  # wait() verified an ID token
        subject = str(claims["sub"])
        name = None
        try:
            info = await self.client.userinfo(tokens.access_token, expected_subject=subject)
            name = info.get("name")
        except RPError as exc:  # the subject stands, verified in the ID token; the name is extra
            log.warning("no name for %s from userinfo: %s", subject, exc)
        spent = {"refresh_token": tokens.refresh_token, "access_token": tokens.access_token}
        for hint, token in spent.items():
            if token is not None:
                with contextlib.suppress(RPError):
                    await self.client.revoke(token, token_type_hint=hint)
        auth_time = claims.get("auth_time")
        return Identity(
            subject=subject,
            name=name if isinstance(name, str) else None,
            verified_at=(
                datetime.fromtimestamp(auth_time, UTC)
                if isinstance(auth_time, int)
                else datetime.now(UTC)
            ),
            acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
        )

    def mark_done(self, attempt: Attempt) -> Attempt | None:
        """Record that the verified request was carried out (once)."""
        if attempt.status is not Status.VERIFIED or attempt.done_at is not None:
            return None
        return self.book.update(attempt.id, done_at=datetime.now(UTC))

    async def close(self) -> None:
        """Stop waiting (the panel is stopping); waits cut short stay unrecorded."""
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)


def _ended(attempt: Attempt, status: Status, detail: str) -> Attempt:
    return dataclasses.replace(attempt, status=status, detail=detail, ended_at=datetime.now(UTC))
