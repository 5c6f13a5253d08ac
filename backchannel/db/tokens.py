"""The ``refresh_tokens`` and ``access_tokens`` tables.

Refresh tokens are stored as SHA-256 hashes and grouped in families (every
token descending from one grant). Access tokens are JWTs; only their ``jti``
and lifetime are stored, so that revocation and introspection can see them.
Expiry is judged by the database clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class RefreshToken:
    token_hash: bytes
    family_id: uuid.UUID
    client_id: str
    user_id: int
    auth_request_id: int | None
    scope: tuple[str, ...]
    auth_time: datetime
    created_at: datetime
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    expired: bool  # by the database clock, when read
    subject: str
    user_disabled: bool
    # How the original approval was made (read only when a token is rotated).
    acr: str | None = None
    amr: tuple[str, ...] | None = None
    dpop_jkt: str | None = None  # the DPoP key the family is bound to


@dataclass(frozen=True)
class AccessTokenRecord:
    jti: str
    family_id: uuid.UUID | None
    client_id: str
    user_id: int
    scope: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    expired: bool  # by the database clock, when read
    dpop_jkt: str | None = None  # cnf.jkt: bound to this DPoP key (RFC 9449 §6)
    x5t_s256: str | None = None  # cnf.x5t#S256: bound to this certificate (RFC 8705 §3.1)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired


@dataclass(frozen=True)
class RevokedCount:
    refresh_tokens: int
    access_tokens: int

    @property
    def total(self) -> int:
        return self.refresh_tokens + self.access_tokens


_REFRESH_COLUMNS = """r.token_hash, r.family_id, r.client_id, r.user_id, r.auth_request_id,
    r.scope, r.auth_time, r.created_at, r.expires_at, r.rotated_at, r.revoked_at,
    r.expires_at <= now() AS expired, u.subject, u.disabled_at IS NOT NULL AS user_disabled,
    r.dpop_jkt"""

_ACCESS_COLUMNS = """jti, family_id, client_id, user_id, scope, created_at, expires_at,
    revoked_at, expires_at <= now() AS expired, dpop_jkt, x5t_s256"""


def _refresh(row: asyncpg.Record) -> RefreshToken:
    values = dict(row)
    values["token_hash"] = bytes(values["token_hash"])
    values["scope"] = tuple(values["scope"])
    if values.get("amr") is not None:
        values["amr"] = tuple(values["amr"])
    return RefreshToken(**values)


def _access(row: asyncpg.Record) -> AccessTokenRecord:
    values = dict(row)
    values["scope"] = tuple(values["scope"])
    return AccessTokenRecord(**values)


@dataclass(frozen=True)
class NewRefreshToken:
    """A refresh token to store with the access token of the same response."""

    token_hash: bytes
    scope: Sequence[str]
    auth_time: datetime
    ttl: int
    max_age: int
    dpop_jkt: str | None = None


@dataclass(frozen=True)
class NewTokenSet:
    """One token response to store: the access token's jti and lifetime (``ttl``
    seconds), the refresh token if any (in ``family_id``) and the ``token_issued``
    audit row's detail."""

    jti: str
    family_id: uuid.UUID | None
    client_id: str
    user_id: int
    scope: Sequence[str]
    ttl: int
    auth_request_id: int | None
    dpop_jkt: str | None
    x5t_s256: str | None
    refresh: NewRefreshToken | None
    audit_detail: dict[str, Any]

    def __post_init__(self) -> None:
        if self.refresh is not None and self.family_id is None:
            raise ValueError("a refresh token needs its family")

    def args(self) -> tuple[Any, ...]:
        """$1 to $16 of the statements below."""
        refresh = self.refresh
        return (
            self.jti,
            self.family_id,
            self.client_id,
            self.user_id,
            list(self.scope),
            float(self.ttl),
            self.auth_request_id,
            self.dpop_jkt,
            self.x5t_s256,
            refresh.token_hash if refresh else None,
            list(refresh.scope) if refresh else None,
            refresh.auth_time if refresh else None,
            float(refresh.ttl) if refresh else None,
            float(refresh.max_age) if refresh else None,
            refresh.dpop_jkt if refresh else None,
            self.audit_detail,
        )


# The refresh token (if $10 is not null) and the audit row of a token set whose access
# token ``access`` inserted; the refresh token expires ``ttl`` ($13) seconds from now but
# never later than ``max_age`` ($14) seconds after ``auth_time`` ($12), the family's end.
_REFRESH_AND_AUDIT = """refresh AS (
                INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id,
                                            auth_request_id, scope, auth_time, expires_at,
                                            dpop_jkt)
                SELECT $10, $2, $3, $4, $7, $11, $12,
                       least(now() + make_interval(secs => $13),
                             $12::timestamptz + make_interval(secs => $14)), $15
                  FROM access
                 WHERE $10::bytea IS NOT NULL
            ), audit AS (
                INSERT INTO audit_events (event, client_id, user_id, auth_request_id, detail)
                SELECT 'token_issued', $3, $4, $7, $16::jsonb FROM access
            )"""

_INSERT_TOKEN_SET = f"""WITH access AS (
                INSERT INTO access_tokens (jti, family_id, client_id, user_id, scope,
                                           expires_at, auth_request_id, dpop_jkt, x5t_s256)
                VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8, $9)
                RETURNING {_ACCESS_COLUMNS}
            ), {_REFRESH_AND_AUDIT}
            SELECT * FROM access"""

# The redemption of an approved request ($7) and its token set, the tokens issued at $17
# (signed before this statement): nothing is stored unless this statement spent the
# request, so of concurrent redemptions exactly one stores tokens.
_REDEEM_INTO_TOKEN_SET = f"""WITH redeemed AS (
                UPDATE auth_requests r SET status = 'redeemed', redeemed_at = now()
                  FROM users u
                 WHERE r.id = $7 AND r.status = 'approved' AND r.expires_at > now()
                   AND u.user_id = r.user_id
             RETURNING r.id
            ), access AS (
                INSERT INTO access_tokens (jti, family_id, client_id, user_id, scope,
                                           created_at, expires_at, auth_request_id, dpop_jkt,
                                           x5t_s256)
                SELECT $1, $2, $3, $4, $5, $17, $17::timestamptz + make_interval(secs => $6),
                       id, $8, $9
                  FROM redeemed
                RETURNING jti
            ), {_REFRESH_AND_AUDIT}
            SELECT jti FROM access"""


async def insert_token_set(conn: asyncpg.Connection, tokens: NewTokenSet) -> AccessTokenRecord:
    """Store one token response in one statement, issued now by the database clock:
    the access token, the refresh token if any and the ``token_issued`` audit row."""
    row = await conn.fetchrow(_INSERT_TOKEN_SET, *tokens.args())
    assert row is not None
    return _access(row)


async def redeem_into_token_set(conn: Queryable, tokens: NewTokenSet, issued_at: datetime) -> bool:
    """Spend the approved, unexpired request ``tokens.auth_request_id`` and store its token
    set, issued at ``issued_at``, in one statement; False (nothing stored) unless this call
    spent it."""
    if tokens.auth_request_id is None:
        raise ValueError("a redemption needs its request")
    jti = await conn.fetchval(_REDEEM_INTO_TOKEN_SET, *tokens.args(), issued_at)
    return jti is not None


async def lock_refresh_family(conn: asyncpg.Connection, token_hash: bytes) -> bool:
    """Take the transaction-level lock of the family ``token_hash`` belongs to; False if
    there is no such token.

    Every change to a family (rotation, reuse revocation, RFC 7009 revocation)
    takes this lock first, so concurrent replays of one token queue up instead
    of locking the family's rows in different orders and deadlocking.
    """
    row = await conn.fetchrow(
        """SELECT pg_advisory_xact_lock(hashtext('bc_family:' || family_id::text))
             FROM refresh_tokens WHERE token_hash = $1""",
        token_hash,
    )
    return row is not None


async def rotate_refresh_token(
    conn: asyncpg.Connection, token_hash: bytes, client_id: str
) -> RefreshToken | None:
    """Spend a usable refresh token of ``client_id``; None unless this call spent it.

    One conditional statement: under concurrent use exactly one caller gets the row.
    """
    row = await conn.fetchrow(
        f"""UPDATE refresh_tokens r SET rotated_at = now()
              FROM users u
             WHERE r.token_hash = $1 AND r.client_id = $2
               AND r.rotated_at IS NULL AND r.revoked_at IS NULL AND r.expires_at > now()
               AND u.user_id = r.user_id AND u.disabled_at IS NULL
         RETURNING {_REFRESH_COLUMNS},
                   (SELECT a.acr FROM auth_requests a WHERE a.id = r.auth_request_id) AS acr,
                   (SELECT a.amr FROM auth_requests a WHERE a.id = r.auth_request_id) AS amr""",
        token_hash,
        client_id,
    )
    return _refresh(row) if row else None


async def select_refresh_token(conn: Queryable, token_hash: bytes) -> RefreshToken | None:
    row = await conn.fetchrow(
        f"""SELECT {_REFRESH_COLUMNS}
              FROM refresh_tokens r JOIN users u ON u.user_id = r.user_id
             WHERE r.token_hash = $1""",
        token_hash,
    )
    return _refresh(row) if row else None


async def select_access_token(conn: Queryable, jti: str) -> AccessTokenRecord | None:
    row = await conn.fetchrow(f"SELECT {_ACCESS_COLUMNS} FROM access_tokens WHERE jti = $1", jti)
    return _access(row) if row else None


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID) -> RevokedCount:
    """Revoke every refresh and access token of a family."""
    row = await conn.fetchrow(
        """WITH r AS (UPDATE refresh_tokens SET revoked_at = now()
                       WHERE family_id = $1 AND revoked_at IS NULL RETURNING 1),
                a AS (UPDATE access_tokens SET revoked_at = now()
                       WHERE family_id = $1 AND revoked_at IS NULL RETURNING 1)
           SELECT (SELECT count(*) FROM r) AS refresh, (SELECT count(*) FROM a) AS access""",
        family_id,
    )
    assert row is not None
    return RevokedCount(row["refresh"], row["access"])


async def revoke_access_token(conn: asyncpg.Connection, jti: str, client_id: str) -> int | None:
    """Revoke one access token of ``client_id``; its user_id if this call revoked it."""
    user_id: int | None = await conn.fetchval(
        """UPDATE access_tokens SET revoked_at = now()
            WHERE jti = $1 AND client_id = $2 AND revoked_at IS NULL
        RETURNING user_id""",
        jti,
        client_id,
    )
    return user_id


async def revoke_user_tokens(conn: asyncpg.Connection, user_id: int) -> RevokedCount:
    """Revoke every unexpired refresh and access token issued for a user."""
    row = await conn.fetchrow(
        """WITH r AS (UPDATE refresh_tokens SET revoked_at = now()
                       WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
                   RETURNING 1),
                a AS (UPDATE access_tokens SET revoked_at = now()
                       WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
                   RETURNING 1)
           SELECT (SELECT count(*) FROM r) AS refresh, (SELECT count(*) FROM a) AS access""",
        user_id,
    )
    assert row is not None
    return RevokedCount(row["refresh"], row["access"])


async def revoke_client_tokens(conn: asyncpg.Connection, client_id: str) -> RevokedCount:
    """Revoke every unexpired refresh and access token issued to a client."""
    row = await conn.fetchrow(
        """WITH r AS (UPDATE refresh_tokens SET revoked_at = now()
                       WHERE client_id = $1 AND revoked_at IS NULL AND expires_at > now()
                   RETURNING 1),
                a AS (UPDATE access_tokens SET revoked_at = now()
                       WHERE client_id = $1 AND revoked_at IS NULL AND expires_at > now()
                   RETURNING 1)
           SELECT (SELECT count(*) FROM r) AS refresh, (SELECT count(*) FROM a) AS access""",
        client_id,
    )
    assert row is not None
    return RevokedCount(row["refresh"], row["access"])
