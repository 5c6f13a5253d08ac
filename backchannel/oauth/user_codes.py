"""User codes (CIBA §7.1 ``user_code``): argon2id at rest, and wrong codes limited.

A user code is short (often a few digits), so a plain hash of it falls to a
dictionary in moments: it is stored as argon2id (19 MiB, 2 passes, the OWASP
minimum), verified in a worker thread so the event loop is not held. Online
guessing is limited:

- every wrong code is recorded and audited (``user_code_rejected``);
- ``user_code_max_failures`` wrong codes for one user within
  ``user_code_failure_window`` seconds lock that user's code for
  ``user_code_lock_seconds`` (``user_code_locked``): meanwhile every code,
  the right one included, is refused;
- a client that sent ``user_code_client_max_failures`` wrong codes within the
  window, across all users, is refused user codes until the window has passed.

A code stored before argon2id was used (``sha256:<hex>``) still verifies, and
is rehashed with argon2id on its first correct use.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import Client
from backchannel.db.user_codes import (
    clear_user_code_failures,
    count_client_failures,
    lock_user_code,
    record_user_code_failure,
    update_user_code_hash,
)
from backchannel.db.users import User
from backchannel.errors import AccessDenied, InvalidUserCode
from backchannel.oauth.services import Services

_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
_LEGACY = "sha256:"


def hash_user_code(code: str) -> str:
    return _HASHER.hash(code)


def _verify(stored: str, code: str) -> tuple[bool, bool]:
    """(matches, should be rehashed)."""
    if stored.startswith(_LEGACY):
        digest = hashlib.sha256(code.encode("utf-8")).hexdigest()
        return hmac.compare_digest(digest, stored.removeprefix(_LEGACY)), True
    try:
        _HASHER.verify(stored, code)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return True, _HASHER.check_needs_rehash(stored)


async def check_user_code(services: Services, client: Client, user: User, code: str) -> None:
    """Accept ``code`` for ``user`` or raise ``invalid_user_code`` (``access_denied`` for
    a client over its limit), recording and auditing what went wrong."""
    settings = services.settings
    if user.user_code_locked_until is not None and user.user_code_locked_until > datetime.now(UTC):
        raise InvalidUserCode("the user's code is locked after repeated wrong codes; try later")
    window = settings.user_code_failure_window
    client_failures = await count_client_failures(services.pool, client.client_id, window=window)
    if client_failures >= settings.user_code_client_max_failures:
        raise AccessDenied("too many wrong user codes from this client; try later")
    stored = user.user_code_hash
    matches, rehash = (
        (False, False) if stored is None else await asyncio.to_thread(_verify, stored, code)
    )
    if matches:
        if rehash:
            new_hash = await asyncio.to_thread(hash_user_code, code)
            await update_user_code_hash(services.pool, user.user_id, new_hash)
        await clear_user_code_failures(services.pool, user.user_id)
        return
    client_id, user_id = client.client_id, user.user_id
    async with services.pool.acquire() as conn, conn.transaction():
        counts = await record_user_code_failure(conn, user_id, client_id, window=window)
        await insert_audit_event(
            conn,
            "user_code_rejected",
            client_id=client_id,
            user_id=user_id,
            detail={"failures": counts.user, "window": window},
        )
        if counts.user >= settings.user_code_max_failures:
            until = await lock_user_code(conn, user_id, seconds=settings.user_code_lock_seconds)
            await insert_audit_event(
                conn,
                "user_code_locked",
                client_id=client_id,
                user_id=user_id,
                detail={"until": until.isoformat(), "failures": counts.user},
            )
    raise InvalidUserCode("the user_code does not match")
