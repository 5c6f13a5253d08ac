"""The ``users`` and ``user_login_hints`` tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backchannel.db.pool import Queryable


@dataclass(frozen=True)
class User:
    user_id: int
    subject: str
    display_name: str
    email: str | None
    phone_number: str | None
    # argon2id (or "sha256:<hex>" for a code stored before argon2id was used)
    user_code_hash: str | None
    created_at: datetime
    disabled_at: datetime | None
    user_code_locked_until: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class LoginHint:
    kind: str  # email | phone | account | username
    value: str  # normalised


_COLUMNS = (
    "user_id, subject, display_name, email, phone_number, user_code_hash, created_at, disabled_at,"
    " user_code_locked_until"
)


def _user(row: asyncpg.Record) -> User:
    return User(**dict(row))


async def insert_user(
    conn: asyncpg.Connection,
    *,
    subject: str,
    display_name: str = "",
    email: str | None = None,
    phone_number: str | None = None,
    user_code_hash: str | None = None,
) -> User:
    row = await conn.fetchrow(
        f"""INSERT INTO users (subject, display_name, email, phone_number, user_code_hash)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}""",
        subject,
        display_name,
        email,
        phone_number,
        user_code_hash,
    )
    assert row is not None
    return _user(row)


async def insert_login_hints(
    conn: asyncpg.Connection, user_id: int, hints: list[LoginHint]
) -> None:
    """Attach hints to a user; raises ``UniqueViolationError`` if one is taken."""
    await conn.executemany(
        "INSERT INTO user_login_hints (kind, value, user_id) VALUES ($1, $2, $3)",
        [(h.kind, h.value, user_id) for h in hints],
    )


async def select_user_by_hint(conn: Queryable, hints: list[LoginHint]) -> User | None:
    """The enabled user holding the first of ``hints`` (in the order given) that matches."""
    if not hints:
        return None
    row = await conn.fetchrow(
        f"""SELECT {", ".join("u." + c.strip() for c in _COLUMNS.split(","))}
              FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS h (kind, value, rank)
              JOIN user_login_hints l ON l.kind = h.kind AND l.value = h.value
              JOIN users u ON u.user_id = l.user_id
             WHERE u.disabled_at IS NULL
          ORDER BY h.rank
             LIMIT 1""",
        [h.kind for h in hints],
        [h.value for h in hints],
    )
    return _user(row) if row else None


async def select_user_by_subject(conn: Queryable, subject: str) -> User | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE subject = $1", subject)
    return _user(row) if row else None


async def select_user(conn: Queryable, user_id: int) -> User | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE user_id = $1", user_id)
    return _user(row) if row else None


async def select_users_with_hints(
    conn: Queryable,
) -> list[tuple[User, list[LoginHint]]]:
    rows = await conn.fetch(
        f"""SELECT {", ".join("u." + c.strip() for c in _COLUMNS.split(","))},
                   coalesce(array_agg(l.kind ORDER BY l.kind, l.value)
                            FILTER (WHERE l.kind IS NOT NULL), '{{}}') AS hint_kinds,
                   coalesce(array_agg(l.value ORDER BY l.kind, l.value)
                            FILTER (WHERE l.kind IS NOT NULL), '{{}}') AS hint_values
              FROM users u LEFT JOIN user_login_hints l ON l.user_id = u.user_id
          GROUP BY u.user_id ORDER BY u.user_id"""
    )
    result = []
    for row in rows:
        values = dict(row)
        kinds, hint_values = values.pop("hint_kinds"), values.pop("hint_values")
        result.append(
            (User(**values), [LoginHint(k, v) for k, v in zip(kinds, hint_values, strict=True)])
        )
    return result
