"""User provisioning: create users and attach the login hints that find them.

A login hint is written ``kind:value`` (``email:alice@example.com``,
``tel:+447700900123``, ``account:123``, ``username:alice``) and stored in the
normalised form that ``/bc-authorize`` looks up (CIBA §7.1 ``login_hint``).
A hint belongs to at most one user. A user's ``user_code`` (CIBA §7.1) is
stored as its SHA-256 only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

from backchannel.db.audit import insert_audit_event
from backchannel.db.users import (
    LoginHint,
    User,
    insert_login_hints,
    insert_user,
    select_user_by_subject,
)
from backchannel.oauth.login_hint_parsing import normalise_hint
from backchannel.oauth.user_codes import hash_user_code

# URI schemes a hint may be written with, as in a login_hint (RFC 3966 tel:, RFC 6068 mailto:).
_KIND_ALIASES = {"tel": "phone", "mailto": "email"}

# OpenID Connect Core §2: sub is at most 255 ASCII characters; no spaces keeps it copyable.
_SUBJECT = re.compile(r"^[\x21-\x7e]{1,255}$")


class ProvisioningError(ValueError):
    """The request cannot be carried out: bad input, taken subject or hint, unknown user."""


def parse_hint(text: str) -> LoginHint:
    """``kind:value`` as a normalised :class:`LoginHint`; raises ``ProvisioningError``."""
    kind, sep, value = text.partition(":")
    if not sep or not kind or not value:
        raise ProvisioningError(
            f"login hint {text!r}: write kind:value, e.g. email:alice@example.com, "
            "tel:+447700900123, account:123 or username:alice"
        )
    try:
        kind = kind.strip().lower()
        return normalise_hint(_KIND_ALIASES.get(kind, kind), value.strip())
    except ValueError as exc:
        raise ProvisioningError(f"login hint {text!r}: {exc}") from None


def describe_hint(hint: LoginHint) -> str:
    return f"{hint.kind}:{hint.value}"


async def create_user(
    conn: asyncpg.Connection,
    *,
    subject: str,
    display_name: str = "",
    hints: Sequence[LoginHint] = (),
    user_code: str | None = None,
    actor: str = "operator",
) -> User:
    """Create a user with its login hints, all or nothing; audited ``user_created``.

    The user's ``email`` and ``phone_number`` claims come from its first email
    and phone hints.
    """
    if not _SUBJECT.match(subject):
        raise ProvisioningError("subject: 1 to 255 printable ASCII characters, no spaces")
    if user_code is not None and not user_code.strip():
        raise ProvisioningError("user_code: must not be empty")
    _refuse_repeats(hints)
    email = next((h.value for h in hints if h.kind == "email"), None)
    phone = next((h.value for h in hints if h.kind == "phone"), None)
    async with conn.transaction():
        try:
            user = await insert_user(
                conn,
                subject=subject,
                display_name=display_name,
                email=email,
                phone_number=phone,
                user_code_hash=hash_user_code(user_code) if user_code is not None else None,
            )
        except asyncpg.UniqueViolationError:
            raise ProvisioningError(f"subject: a user {subject!r} already exists") from None
        await _attach(conn, user, hints)
        await insert_audit_event(
            conn,
            "user_created",
            user_id=user.user_id,
            detail={
                "actor": actor,
                "subject": subject,
                "hints": [describe_hint(h) for h in hints],
                "user_code": user_code is not None,
            },
        )
    return user


async def add_login_hint(
    conn: asyncpg.Connection, subject: str, hint: LoginHint, *, actor: str = "operator"
) -> User:
    """Attach one more hint to the user ``subject``; audited ``login_hint_added``."""
    async with conn.transaction():
        user = await select_user_by_subject(conn, subject)
        if user is None:
            raise ProvisioningError(f"no user with subject {subject!r}")
        await _attach(conn, user, [hint])
        await insert_audit_event(
            conn,
            "login_hint_added",
            user_id=user.user_id,
            detail={"actor": actor, "hint": describe_hint(hint)},
        )
    return user


def _refuse_repeats(hints: Sequence[LoginHint]) -> None:
    seen: set[LoginHint] = set()
    for hint in hints:
        if hint in seen:
            raise ProvisioningError(f"login hint {describe_hint(hint)} is given twice")
        seen.add(hint)


async def _attach(conn: asyncpg.Connection, user: User, hints: Sequence[LoginHint]) -> None:
    # One statement per hint, so that a taken hint is named in the error.
    for hint in hints:
        try:
            async with conn.transaction():
                await insert_login_hints(conn, user.user_id, [hint])
        except asyncpg.UniqueViolationError:
            raise ProvisioningError(
                f"login hint {describe_hint(hint)} already belongs to a user"
            ) from None
