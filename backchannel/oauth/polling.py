"""Token polls for the CIBA grant (CIBA §10.1, §11) with optional long polling.

A normal poll is one database statement (``poll_auth_request``). A held poll
registers a waiter before that statement and, when the decision's
notification arrives, re-reads the state without counting it as a new poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any, assert_never

from backchannel.db.auth_requests import (
    PollLimits,
    PollResult,
    PollVerdict,
    poll_auth_request,
)
from backchannel.db.clients import Client
from backchannel.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidGrant,
    OAuthError,
    SlowDown,
    TemporarilyUnavailable,
    denial_description,
)
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.sender_constraint import UNBOUND, TokenBinding
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import Grant, redeem_and_issue
from backchannel.settings import Settings

AUTH_REQ_ID = re.compile(r"^[A-Za-z0-9._-]{1,256}$")
SLOW_DOWN_STEP = 5


_limits: tuple[Settings, PollLimits] | None = None


def poll_limits(settings: Settings) -> PollLimits:
    """The pacing rules of ``settings``, built once per Settings object (a cache keyed
    by the settings would hash all their fields on every poll)."""
    global _limits
    cached = _limits
    if cached is None or cached[0] is not settings:
        cached = _limits = (
            settings,
            PollLimits(
                grace_ms=settings.poll_grace_ms,
                lock_after=settings.poll_lock_after,
                lock_seconds=settings.poll_lock_seconds,
                deny_after=settings.poll_deny_after,
                interval_step=SLOW_DOWN_STEP,
                interval_max=settings.poll_interval_max,
            ),
        )
    return cached[1]


async def poll_for_tokens(
    services: Services,
    client: Client,
    auth_req_id: str,
    *,
    wait: float = 0.0,
    client_gone: asyncio.Future[None] | None = None,
    binding: TokenBinding = UNBOUND,
) -> dict[str, Any] | OAuthError:
    """Answer one poll: the token response, or the §11 error that applies.

    The expected answers (pending, slow_down, denied, expired, ...) are
    returned rather than raised: most polls are pending, and the hot path
    skips the exception machinery. ``wait`` > 0 holds the poll up to that
    many seconds while the request is pending. ``client_gone`` resolves when the
    client goes away: a held poll then ends at once, and never spends the
    request (its tokens would reach nobody; the client's next poll collects them). ``binding``
    is what the tokens are bound to (the refresh token family keeps a DPoP key
    for good).
    """
    if not AUTH_REQ_ID.match(auth_req_id):
        return InvalidGrant("unknown auth_req_id")
    id_hash = hash_secret(auth_req_id)
    limits = poll_limits(services.settings)
    waiters = services.waiters
    deadline = time.monotonic() + wait
    counts_as_poll = True
    while True:
        watch = waiters.watch(id_hash) if wait > 0 else contextlib.nullcontext(None)
        with watch as woken:
            result = await poll_auth_request(
                services.pool, id_hash, client.client_id, limits, counts_as_poll=counts_as_poll
            )
            if result is None:
                return InvalidGrant("unknown auth_req_id")
            if result.verdict is not PollVerdict.PENDING or woken is None or waiters.released:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await waiters.wait(woken, remaining, client_gone):
                break
            if client_gone is not None and client_gone.done():
                return AuthorizationPending("the client went away while its poll was held")
        counts_as_poll = False
    services.metrics.record_poll(result.verdict)
    if result.verdict is PollVerdict.APPROVED:
        if not counts_as_poll and client_gone is not None and client_gone.done():
            return AuthorizationPending("the client went away before the tokens were issued")
        return await _redeem(services, client, result, auth_req_id, binding)
    return _error_for(result)


async def _redeem(
    services: Services,
    client: Client,
    result: PollResult,
    auth_req_id: str,
    binding: TokenBinding,
) -> dict[str, Any] | OAuthError:
    """Tokens for the approval the poll read, signed at once; one statement then spends
    the request and stores them, so of racing polls exactly one gets tokens."""
    assert result.approval is not None and result.read_at is not None
    grant = Grant.of_redemption(client, result.approval, auth_req_id, binding)
    body = await redeem_and_issue(services, grant, result.read_at)
    if body is None:
        return InvalidGrant("auth_req_id has already been used")
    return body


def _error_for(result: PollResult) -> OAuthError:
    match result.verdict:
        case PollVerdict.PENDING:
            return AuthorizationPending("the user has not decided yet")
        case PollVerdict.SLOW_DOWN:
            return SlowDown(f"poll at most every {result.poll_interval} seconds")
        case PollVerdict.LOCK | PollVerdict.LOCKED:
            return TemporarilyUnavailable(
                "too many polls; retry later", retry_after=result.retry_after
            )
        case PollVerdict.ABUSE_DENIED:
            return AccessDenied("the request was ended after repeated polling", status_code=400)
        case PollVerdict.DENIED:
            return AccessDenied(denial_description(result.denial_reason), status_code=400)
        case PollVerdict.EXPIRED:
            return ExpiredToken("the request has expired")
        case PollVerdict.SPENT:
            return InvalidGrant("auth_req_id has already been used")
        case PollVerdict.APPROVED:
            raise AssertionError("an approved request is redeemed, not refused")
    assert_never(result.verdict)
