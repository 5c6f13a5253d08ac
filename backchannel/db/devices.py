"""The ``devices`` table, and what a device reads: its user's pending requests and its history.

A device is a phone holding a non-extractable P-256 key (``public_jwk``) and,
when its browser could subscribe, a Web Push subscription (``push_endpoint`` is
NULL otherwise: the phone then fetches its pending requests itself). Removal
sets ``removed_at``; the row stays so that a ``dismiss`` can still reach the
phone and the audit trail keeps its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from backchannel.db.pool import Queryable
from backchannel.db.push_outbox import OUTBOX_CHANNEL


@dataclass(frozen=True)
class Device:
    device_id: str
    user_id: int
    name: str
    public_jwk: dict[str, Any]
    jwk_thumbprint: str
    push_endpoint: str | None
    created_at: datetime
    last_seen_at: datetime | None
    removed_at: datetime | None

    @property
    def removed(self) -> bool:
        return self.removed_at is not None


@dataclass(frozen=True)
class Subscription:
    """A browser ``PushSubscription``, validated."""

    endpoint: str
    p256dh: str
    auth: str


@dataclass(frozen=True)
class NewDevice:
    device_id: str
    user_id: int
    name: str
    public_jwk: dict[str, Any]
    jwk_thumbprint: str
    subscription: Subscription | None  # None: enrolled without push


@dataclass(frozen=True)
class PendingRequest:
    """A pending, unexpired request as its user's device lists it."""

    id: int
    id_hash: bytes
    client_name: str
    binding_message: str | None
    scope: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    expires_in: int
    challenge: str | None
    number_choices: tuple[str, ...] | None = None
    client_id: str = ""
    user_verification: str | None = None  # 'required' | 'would_require' | None
    # RFC 9396 details the user approves, as the relying party sent them.
    authorization_details: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class DecisionTarget:
    """What a decision on a request is checked against."""

    id: int
    user_id: int
    client_name: str
    binding_message: str | None
    scope: tuple[str, ...]
    state: str  # pending, approved, denied, redeemed, expired
    challenge: str | None
    number_match: str | None = None
    client_id: str = ""
    user_verification: str | None = None  # 'required' | 'would_require' | None
    # RFC 9396 details the user approves, as the relying party sent them.
    authorization_details: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class PastDecision:
    id_hash: bytes
    client_name: str
    binding_message: str | None
    status: str
    denial_reason: str | None
    decided_at: datetime


_COLUMNS = (
    "device_id, user_id, name, public_jwk, jwk_thumbprint, push_endpoint, "
    "created_at, last_seen_at, removed_at"
)


def _device(row: asyncpg.Record) -> Device:
    return Device(**dict(row))


async def insert_device(conn: asyncpg.Connection, device: NewDevice, vapid_kid: str | None) -> None:
    """Store a new device; ``UniqueViolationError`` if its key is enrolled already."""
    subscription = device.subscription
    await conn.execute(
        """INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint,
                                push_endpoint, push_p256dh, push_auth, vapid_kid, last_seen_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())""",
        device.device_id,
        device.user_id,
        device.name,
        device.public_jwk,
        device.jwk_thumbprint,
        subscription.endpoint if subscription else None,
        subscription.p256dh if subscription else None,
        subscription.auth if subscription else None,
        vapid_kid if subscription else None,
    )


async def select_device(conn: Queryable, device_id: str) -> Device | None:
    """The device, active or removed; ``None`` if unknown."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM devices WHERE device_id = $1", device_id)
    return _device(row) if row else None


async def select_active_devices(
    conn: Queryable, *, user_id: int | None = None
) -> list[tuple[Device, str]]:
    """Active devices (of one user, or all) with their user's subject, oldest first."""
    rows = await conn.fetch(
        f"""SELECT {", ".join("d." + c for c in _COLUMNS.split(", "))}, u.subject
              FROM devices d JOIN users u ON u.user_id = d.user_id
             WHERE d.removed_at IS NULL AND ($1::bigint IS NULL OR d.user_id = $1)
          ORDER BY d.created_at, d.device_id""",
        user_id,
    )
    result = []
    for row in rows:
        values = dict(row)
        subject = values.pop("subject")
        result.append((Device(**values), subject))
    return result


@dataclass(frozen=True)
class RecordedCall:
    fresh: bool  # the jti was not remembered (no replay)
    active: bool  # the device is known and not removed
    target: DecisionTarget | None = None  # the request read with the call, if asked


async def record_device_call(
    conn: Queryable,
    device_id: str,
    *,
    purpose: str,
    jti: str,
    expires_at: datetime,
    target: bytes | None = None,
) -> RecordedCall:
    """Spend a device call's ``jti`` (remembered until ``expires_at``) and, if it was
    fresh, record that the device called, in one statement; with ``target`` (an id
    hash), the same statement reads the request it names (``select_decision_target``).

    ``fresh`` is False when the jti is remembered already (a replay; the device is
    not touched), ``active`` False when the device is unknown or removed. The jti is
    spent as ``insert_jti`` does, with the device as issuer.
    """
    row = await conn.fetchrow(
        f"""WITH spent AS (
               INSERT INTO used_jtis (issuer, purpose, jti, expires_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (issuer, purpose, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE used_jtis.expires_at < now()
               RETURNING true AS fresh
           ), touched AS (
               UPDATE devices SET last_seen_at = now()
                WHERE device_id = $1 AND removed_at IS NULL AND EXISTS (SELECT 1 FROM spent)
            RETURNING true
           )
           SELECT EXISTS (SELECT 1 FROM spent) AS fresh,
                  EXISTS (SELECT 1 FROM touched) AS active, t.*
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL ({_TARGET} WHERE r.id_hash = $5) t ON true""",
        device_id,
        purpose,
        jti,
        expires_at,
        target,
    )
    assert row is not None
    values = dict(row)
    fresh, active = bool(values.pop("fresh")), bool(values.pop("active"))
    return RecordedCall(fresh, active, _target(values) if values["id"] is not None else None)


async def update_subscription(
    conn: Queryable,
    device_id: str,
    subscription: Subscription,
    vapid_kid: str | None,
) -> bool:
    """Replace an active device's push subscription; False if it is unknown or removed."""
    updated = await conn.fetchval(
        """UPDATE devices
              SET push_endpoint = $2, push_p256dh = $3, push_auth = $4, vapid_kid = $5,
                  last_seen_at = now()
            WHERE device_id = $1 AND removed_at IS NULL
        RETURNING true""",
        device_id,
        subscription.endpoint,
        subscription.p256dh,
        subscription.auth,
        vapid_kid,
    )
    return bool(updated)


async def mark_device_removed(conn: asyncpg.Connection, device_id: str) -> Device | None:
    """Remove an active device; ``None`` if it is unknown or already removed."""
    row = await conn.fetchrow(
        f"""UPDATE devices SET removed_at = now()
             WHERE device_id = $1 AND removed_at IS NULL
         RETURNING {_COLUMNS}""",
        device_id,
    )
    return _device(row) if row else None


async def withdraw_device_prompts(
    conn: asyncpg.Connection, device_id: str, *, dismiss_grace: float
) -> int:
    """Withdraw a (removed) device's prompts for its user's pending requests.

    Prompts never tried are dropped; for each request whose prompt may have
    reached the phone (sent, or tried and awaiting a retry) a ``dismiss`` is
    queued under the prompt's topic, worth sending until ``dismiss_grace``
    seconds after the request's expiry. Returns the number of dismisses.
    """
    row = await conn.fetchrow(
        """WITH prompts AS (
               SELECT o.id, o.auth_request_id, o.topic, o.withdrawal, o.status, o.attempts,
                      o.leased_until, r.expires_at
                 FROM push_outbox o JOIN auth_requests r ON r.id = o.auth_request_id
                WHERE o.device_id = $1 AND o.kind = 'prompt'
                  AND r.status = 'pending' AND r.expires_at > now()
                  AND r.prompts_withdrawn_at IS NULL
           ), unsent AS (
               UPDATE push_outbox o SET status = 'dropped', last_error = 'device_removed'
                 FROM prompts p
                WHERE o.id = p.id AND o.status = 'queued' AND o.attempts = 0
                  AND (o.leased_until IS NULL OR o.leased_until <= now())
            RETURNING o.id
           ), dismissed AS (
               INSERT INTO push_outbox (device_id, auth_request_id, kind, topic, payload,
                                        deliver_before)
               SELECT DISTINCT ON (p.auth_request_id)
                      $1, p.auth_request_id, 'dismiss', p.topic, p.withdrawal,
                      greatest(p.expires_at, now()) + make_interval(secs => $2)
                 FROM prompts p JOIN devices d ON d.device_id = $1
                WHERE p.status IN ('queued', 'sent')
                  AND p.id NOT IN (SELECT id FROM unsent)
                  AND d.push_endpoint IS NOT NULL
             ORDER BY p.auth_request_id
            RETURNING id
           ), notified AS (
               SELECT pg_notify($3, '') WHERE EXISTS (SELECT 1 FROM dismissed)
           )
           SELECT (SELECT count(*) FROM dismissed) AS dismisses,
                  (SELECT count(*) FROM notified) AS _n""",
        device_id,
        float(dismiss_grace),
        OUTBOX_CHANNEL,
    )
    assert row is not None
    return int(row["dismisses"])


async def assign_missing_challenges(conn: Queryable, challenges: dict[int, str]) -> None:
    """Give each request (by id) its challenge unless it has one already."""
    await conn.execute(
        """UPDATE auth_requests r SET device_challenge = c.challenge
             FROM unnest($1::bigint[], $2::text[]) AS c (id, challenge)
            WHERE r.id = c.id AND r.device_challenge IS NULL""",
        list(challenges),
        list(challenges.values()),
    )


async def select_pending_requests(conn: Queryable, user_id: int) -> list[PendingRequest]:
    """The user's pending, unexpired requests, oldest first."""
    rows = await conn.fetch(
        """SELECT r.id, r.id_hash, c.name AS client_name, r.binding_message, r.scope,
                  r.created_at, r.expires_at,
                  greatest(0, ceil(extract(epoch FROM r.expires_at - now())))::int AS expires_in,
                  r.device_challenge AS challenge, r.number_choices, r.client_id,
                  r.user_verification, r.authorization_details
             FROM auth_requests r JOIN clients c ON c.client_id = r.client_id
            WHERE r.user_id = $1 AND r.status = 'pending' AND r.expires_at > now()
         ORDER BY r.created_at, r.id""",
        user_id,
    )
    return [
        PendingRequest(
            **{
                **dict(r),
                "id_hash": bytes(r["id_hash"]),
                "scope": tuple(r["scope"]),
                "number_choices": tuple(r["number_choices"]) if r["number_choices"] else None,
                "authorization_details": _details(r["authorization_details"]),
            }
        )
        for r in rows
    ]


_TARGET = """SELECT r.id, r.user_id, c.name AS client_name, r.binding_message, r.scope,
                  CASE WHEN r.status IN ('pending', 'approved') AND r.expires_at <= now()
                       THEN 'expired' ELSE r.status END AS state,
                  r.device_challenge AS challenge, r.number_match, r.client_id,
                  r.user_verification, r.authorization_details
             FROM auth_requests r JOIN clients c ON c.client_id = r.client_id"""


async def select_decision_target(conn: Queryable, id_hash: bytes) -> DecisionTarget | None:
    """The request a decision names, with what its user was shown; ``None`` if unknown."""
    row = await conn.fetchrow(_TARGET + " WHERE r.id_hash = $1", id_hash)
    return _target(dict(row)) if row is not None else None


def _target(values: dict[str, Any]) -> DecisionTarget:
    return DecisionTarget(
        **{
            **values,
            "scope": tuple(values["scope"]),
            "authorization_details": _details(values["authorization_details"]),
        }
    )


def _details(value: list[dict[str, Any]] | None) -> tuple[dict[str, Any], ...] | None:
    return tuple(value) if value is not None else None


async def select_device_history(conn: Queryable, device_id: str, limit: int) -> list[PastDecision]:
    """Requests this device decided, newest first."""
    rows = await conn.fetch(
        """SELECT r.id_hash, c.name AS client_name, r.binding_message, r.status,
                  r.denial_reason, r.decided_at
             FROM auth_requests r JOIN clients c ON c.client_id = r.client_id
            WHERE r.decided_by_device = $1 AND r.decided_at IS NOT NULL
         ORDER BY r.decided_at DESC, r.id DESC
            LIMIT $2""",
        device_id,
        limit,
    )
    return [PastDecision(**{**dict(r), "id_hash": bytes(r["id_hash"])}) for r in rows]


async def select_active_vapid_key(
    conn: Queryable,
) -> tuple[str, str] | None:
    """(kid, public_key) of the active VAPID key, if one was generated."""
    row = await conn.fetchrow(
        "SELECT kid, public_key FROM vapid_keys WHERE status = 'active' LIMIT 1"
    )
    return (row["kid"], row["public_key"]) if row else None
