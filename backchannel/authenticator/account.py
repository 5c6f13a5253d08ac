"""Whose phone this is: the account a device shows on its home screen.

The app shows the user's name and a masked email address (``a•••e@example.com``):
enough to tell two accounts apart on a shared or lost phone, not enough to read
the address off its screen. The masking is done here, once, so every answer of
the device API masks alike and the full address never reaches the phone.
"""

from __future__ import annotations

from typing import Any

from backchannel.db.pool import Queryable
from backchannel.db.users import select_user

MASK = "\u2022\u2022\u2022"  # three bullets


def masked_email(email: str | None) -> str | None:
    """``a•••e@example.com`` for ``alice@example.com``; the domain stays as it is.

    A local part of one or two characters keeps only its first (``b•••@example.com``),
    so that no address is shown whole. ``None`` without an address (or one without a
    local part and a domain).
    """
    if not email:
        return None
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    shown = local[0] + MASK + (local[-1] if len(local) > 2 else "")
    return f"{shown}@{domain}"


def account_fields(display_name: str, email: str | None) -> dict[str, Any]:
    """The ``account`` object of the device API: ``{"display_name", "masked_email"}``."""
    return {"display_name": display_name, "masked_email": masked_email(email)}


async def device_account(conn: Queryable, user_id: int) -> dict[str, Any] | None:
    """The account object for the device's user; ``None`` if the user is gone."""
    user = await select_user(conn, user_id)
    return account_fields(user.display_name, user.email) if user is not None else None
