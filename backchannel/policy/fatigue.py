"""Push-fatigue limits and "this wasn't me" (docs/policy.md).

Before a request is stored, the user must not be muted, must have fewer than
``max_pending`` pending requests, and fewer than ``max_prompts`` requests in
the last ``window`` seconds. A refused request is never stored, so the user
gets no prompt.

The counts are read in one statement before the insert, without a lock: a
burst of N concurrent requests for one user can overshoot a cap by at most
N - 1. Making it exact would need a per-user lock held across check and
insert (a transaction of four round trips instead of one statement) on the
hottest endpoint, for limits that protect attention rather than secrets.

When the user reports a request as "not me", the decision's transaction also
mutes the user's prompts for ``mute_seconds`` and counts the distinct users
who reported that client within ``suspend_window``; at ``suspend_after`` the
client is disabled on every replica, and the decision's caller revokes its
tokens and open requests in the same transaction (``revoke_client``). That count is exact: it
runs under a per-client advisory lock (this is the device's decision path,
not a hot one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.audit import insert_audit_event
from backchannel.db.auth_requests import Decision
from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.db.prompt_limits import (
    PromptState,
    insert_prompt_mute,
    lock_client_reports,
    suspend_client_on_reports,
)
from backchannel.settings import Settings

NOT_ME = "not_me"


@dataclass(frozen=True)
class FatigueLimits:
    """Caps checked at /bc-authorize; 0 turns a cap off."""

    max_pending: int
    max_prompts: int
    window: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FatigueLimits:
        return cls(
            settings.fatigue_max_pending, settings.fatigue_max_prompts, settings.fatigue_window
        )

    @property
    def active(self) -> bool:
        return self.max_pending > 0 or self.max_prompts > 0


@dataclass(frozen=True)
class NotMeLimits:
    """What a "not me" report does; 0 turns the mute or the suspension off."""

    mute_seconds: int
    suspend_after: int
    suspend_window: int

    @classmethod
    def from_settings(cls, settings: Settings) -> NotMeLimits:
        return cls(
            settings.not_me_mute, settings.not_me_suspend_after, settings.not_me_suspend_window
        )

    @classmethod
    def defaults(cls) -> NotMeLimits:
        """The limits of default settings (for callers that have no settings at hand)."""
        return cls.from_settings(Settings())


@dataclass(frozen=True)
class Refusal:
    """Why a request may not prompt the user: the audit event, its detail, the answer."""

    event: str
    description: str
    detail: dict[str, Any]


def fatigue_refusal(state: PromptState, limits: FatigueLimits) -> Refusal | None:
    """The first limit ``state`` breaks, or ``None``; a mute comes first."""
    if state.muted_until is not None:
        return Refusal(
            "prompt_muted_refused",
            "sign-in requests to this user are paused for a while",
            {"muted_until": _iso(state.muted_until)},
        )
    if limits.max_pending and state.pending >= limits.max_pending:
        return Refusal(
            "fatigue_refused",
            "too many pending requests for this user",
            {"cap": "pending", "limit": limits.max_pending, "count": state.pending},
        )
    if limits.max_prompts and state.recent >= limits.max_prompts:
        return Refusal(
            "fatigue_refused",
            "too many requests for this user recently; try again later",
            {
                "cap": "window",
                "limit": limits.max_prompts,
                "window": limits.window,
                "count": state.recent,
            },
        )
    return None


async def record_not_me(conn: asyncpg.Connection, decided: Decision, limits: NotMeLimits) -> bool:
    """Audit a "not me" report, mute the user, suspend the client at the threshold.

    Runs inside the decision's transaction. True when this report suspended the
    client: the caller then revokes what the client holds in the same transaction.
    """
    ids: dict[str, Any] = {
        "client_id": decided.client_id,
        "user_id": decided.user_id,
        "auth_request_id": decided.id,
    }
    await insert_audit_event(conn, "user_reported_not_me", **ids)
    if limits.mute_seconds:
        until = await insert_prompt_mute(
            conn,
            decided.user_id,
            limits.mute_seconds,
            reason=NOT_ME,
            client_id=decided.client_id,
            auth_request_id=decided.id,
        )
        await insert_audit_event(
            conn,
            "prompts_muted",
            **ids,
            detail={"until": _iso(until), "reason": NOT_ME, "seconds": limits.mute_seconds},
        )
    if not limits.suspend_after:
        return False
    await lock_client_reports(conn, decided.client_id)
    count = await suspend_client_on_reports(
        conn, decided.client_id, threshold=limits.suspend_after, window=limits.suspend_window
    )
    if count.suspended_at is None:
        return False
    await insert_audit_event(
        conn,
        "client_suspended",
        client_id=decided.client_id,
        auth_request_id=decided.id,
        detail={
            "reason": "not_me_reports",
            "reporters": count.reporters,
            "threshold": limits.suspend_after,
            "window": limits.suspend_window,
        },
    )
    # Every replica drops its cached client: from now on it fails authentication.
    await notify(conn, CONFIG_CHANNEL, f"client:{decided.client_id}")
    return True


def _iso(moment: datetime) -> str:
    return moment.isoformat()
