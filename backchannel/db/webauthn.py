"""WebAuthn on the user's devices: credentials, registration challenges, user handles.

A credential belongs to one device (and through it to one user); a device may
hold several. Registration challenges are stored as SHA-256, tied to the
device that asked for them and spent by one conditional UPDATE, so a challenge
serves at most one attempt. The sign counter only moves forward: the UPDATE
that records a use refuses a counter that does not grow (unless the
authenticator keeps no counter, reporting 0 every time).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class WebAuthnCredential:
    credential_id: bytes
    device_id: str
    user_id: int
    public_key: bytes  # COSE_Key
    alg: int
    sign_count: int
    aaguid: uuid.UUID
    transports: tuple[str, ...]
    attestation_format: str
    attested: bool
    backup_eligible: bool
    backed_up: bool
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewCredential:
    credential_id: bytes
    device_id: str
    user_id: int
    public_key: bytes
    alg: int
    sign_count: int
    aaguid: uuid.UUID
    transports: tuple[str, ...]
    attestation_format: str
    attested: bool
    backup_eligible: bool
    backed_up: bool


_COLUMNS = (
    "credential_id, device_id, user_id, public_key, alg, sign_count, aaguid, transports, "
    "attestation_format, attested, backup_eligible, backed_up, created_at, last_used_at"
)


def _credential(row: asyncpg.Record) -> WebAuthnCredential:
    values = dict(row)
    values["credential_id"] = bytes(values["credential_id"])
    values["public_key"] = bytes(values["public_key"])
    values["transports"] = tuple(values["transports"])
    return WebAuthnCredential(**values)


async def select_user_handle(conn: Queryable, user_id: int, candidate: bytes) -> bytes:
    """The user's WebAuthn user handle, set to ``candidate`` the first time it is asked for."""
    handle = await conn.fetchval(
        """UPDATE users SET webauthn_user_handle = coalesce(webauthn_user_handle, $2)
            WHERE user_id = $1
        RETURNING webauthn_user_handle""",
        user_id,
        candidate,
    )
    if handle is None:
        raise LookupError(f"no user {user_id}")
    return bytes(handle)


async def insert_registration_challenge(
    conn: Queryable, challenge_hash: bytes, device_id: str, ttl: int
) -> None:
    await conn.execute(
        """INSERT INTO webauthn_challenges (challenge_hash, device_id, purpose, expires_at)
           VALUES ($1, $2, 'registration', now() + make_interval(secs => $3))""",
        challenge_hash,
        device_id,
        ttl,
    )


async def spend_registration_challenge(
    conn: Queryable, challenge_hash: bytes, device_id: str
) -> bool:
    """Spend an unused, unexpired registration challenge this device asked for."""
    spent = await conn.fetchval(
        """UPDATE webauthn_challenges SET used_at = now()
            WHERE challenge_hash = $1 AND device_id = $2 AND purpose = 'registration'
              AND used_at IS NULL AND expires_at > now()
        RETURNING true""",
        challenge_hash,
        device_id,
    )
    return spent is True


async def delete_stale_challenges(conn: Queryable, *, limit: int) -> int:
    """Delete up to ``limit`` expired challenges (spent or not); the number deleted."""
    status: str = await conn.execute(
        """DELETE FROM webauthn_challenges
            WHERE challenge_hash IN (SELECT challenge_hash FROM webauthn_challenges
                                      WHERE expires_at < now() LIMIT $1)""",
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])


async def insert_credential(conn: Queryable, credential: NewCredential) -> WebAuthnCredential:
    """Store a credential; ``UniqueViolationError`` if its id is registered already."""
    row = await conn.fetchrow(
        f"""INSERT INTO webauthn_credentials
                   (credential_id, device_id, user_id, public_key, alg, sign_count, aaguid,
                    transports, attestation_format, attested, backup_eligible, backed_up)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         RETURNING {_COLUMNS}""",
        credential.credential_id,
        credential.device_id,
        credential.user_id,
        credential.public_key,
        credential.alg,
        credential.sign_count,
        credential.aaguid,
        list(credential.transports),
        credential.attestation_format,
        credential.attested,
        credential.backup_eligible,
        credential.backed_up,
    )
    assert row is not None
    return _credential(row)


async def select_device_credentials(conn: Queryable, device_id: str) -> list[WebAuthnCredential]:
    """The device's credentials, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM webauthn_credentials
             WHERE device_id = $1 ORDER BY created_at, credential_id""",
        device_id,
    )
    return [_credential(r) for r in rows]


async def select_user_credentials(
    conn: Queryable, user_id: int | None = None
) -> list[WebAuthnCredential]:
    """Credentials on active devices (of one user, or of everyone), by device and age."""
    rows = await conn.fetch(
        f"""SELECT {", ".join("c." + c.strip() for c in _COLUMNS.split(","))}
              FROM webauthn_credentials c JOIN devices d USING (device_id)
             WHERE d.removed_at IS NULL AND ($1::bigint IS NULL OR c.user_id = $1)
             ORDER BY c.user_id, c.device_id, c.created_at, c.credential_id""",
        user_id,
    )
    return [_credential(r) for r in rows]


async def delete_credential(conn: Queryable, credential_id: bytes) -> WebAuthnCredential | None:
    """Remove one credential; None if there was none. Its device stays enrolled."""
    row = await conn.fetchrow(
        f"DELETE FROM webauthn_credentials WHERE credential_id = $1 RETURNING {_COLUMNS}",
        credential_id,
    )
    return _credential(row) if row else None


async def select_credential_counts(conn: Queryable, device_ids: Sequence[str]) -> dict[str, int]:
    """How many credentials each of these devices holds (devices with none are left out)."""
    rows = await conn.fetch(
        """SELECT device_id, count(*) AS n FROM webauthn_credentials
            WHERE device_id = ANY($1::text[]) GROUP BY device_id""",
        list(device_ids),
    )
    return {r["device_id"]: int(r["n"]) for r in rows}


async def select_credential(conn: Queryable, credential_id: bytes) -> WebAuthnCredential | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM webauthn_credentials WHERE credential_id = $1", credential_id
    )
    return _credential(row) if row else None


async def advance_sign_count(conn: Queryable, credential_id: bytes, sign_count: int) -> bool:
    """Record a use with the authenticator's counter; False if the counter did not grow.

    An authenticator without a counter reports 0 every time: 0 after 0 is accepted.
    """
    advanced = await conn.fetchval(
        """UPDATE webauthn_credentials SET sign_count = $2, last_used_at = now()
            WHERE credential_id = $1
              AND (sign_count < $2 OR (sign_count = 0 AND $2 = 0))
        RETURNING true""",
        credential_id,
        sign_count,
    )
    return advanced is True
