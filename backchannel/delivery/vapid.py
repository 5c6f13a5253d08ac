"""VAPID keys (RFC 8292): the server's identity towards push services.

One key is ``active``: new subscriptions are made with it (the browser's
``applicationServerKey``). After a rotation the former key is ``previous``:
subscriptions made with it keep working, since a push service only accepts
messages signed with the key the subscription was created for. ``retired``
keys have their private part erased. The partial unique index
``vapid_keys_one_active`` makes "one active key" a database rule.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid

from backchannel.db.audit import insert_audit_event
from backchannel.db.pool import Queryable
from backchannel.key_wrapping import NO_WRAPPING, KeyWrapper

# Serialises operator key changes across processes (a transaction-level advisory lock).
_CHANGE_LOCK = 0x6263_7661_7069  # "bcvapi"

_COLUMNS = """k.kid, k.public_key, k.status, k.created_at, k.superseded_at, k.retired_at,
              (SELECT count(*) FROM devices d
                WHERE d.vapid_kid = k.kid AND d.removed_at IS NULL
                  AND d.push_endpoint IS NOT NULL)::int AS devices"""


class VapidKeyInUse(ValueError):
    """A key still signs for subscribed devices; retiring it would cut them off."""


@dataclass(frozen=True)
class VapidKeyInfo:
    """What an operator may see of a VAPID key: never its private part."""

    kid: str
    public_key: str  # base64url uncompressed point: the applicationServerKey
    status: str  # active | previous | retired
    created_at: datetime
    superseded_at: datetime | None
    retired_at: datetime | None
    devices: int  # active devices whose subscription was made with this key

    def to_json(self) -> dict[str, Any]:
        def iso(at: datetime | None) -> str | None:
            return at.isoformat() if at else None

        return {
            "kid": self.kid,
            "public_key": self.public_key,
            "status": self.status,
            "created_at": iso(self.created_at),
            "superseded_at": iso(self.superseded_at),
            "retired_at": iso(self.retired_at),
            "devices": self.devices,
        }


def application_server_key(vapid: Vapid) -> str:
    """base64url (unpadded) of the uncompressed public point, as browsers want it."""
    point = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode("ascii")


def new_vapid_key() -> tuple[str, str, str]:
    """A fresh P-256 key: (kid, private PEM, applicationServerKey)."""
    vapid = Vapid()
    vapid.generate_keys()
    public_key = application_server_key(vapid)
    kid = hashlib.sha256(public_key.encode()).hexdigest()[:32]  # never starts with "-"
    return kid, vapid.private_pem().decode("ascii"), public_key


def vapid_row(kid: str) -> str:
    """What a wrapped VAPID key is bound to (backchannel/key_wrapping.py)."""
    return f"vapid_keys:{kid}"


def load_vapid(private_pem: str) -> Vapid:
    """A signing ``Vapid`` from a stored PEM (pywebpush wants the instance, not the PEM)."""
    return Vapid.from_pem(private_pem.encode("ascii"))


def _info(row: asyncpg.Record) -> VapidKeyInfo:
    return VapidKeyInfo(**dict(row))


async def _lock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHANGE_LOCK)


async def select_active_vapid_key(conn: Queryable) -> VapidKeyInfo | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM vapid_keys k WHERE k.status = 'active'")
    return _info(row) if row else None


async def ensure_vapid_key(conn: Queryable, wrapper: KeyWrapper = NO_WRAPPING) -> VapidKeyInfo:
    """The active key, created first if there is none; replicas racing here agree on one."""
    active = await select_active_vapid_key(conn)
    if active is not None:
        return active
    kid, pem, public_key = new_vapid_key()
    pem = wrapper.wrap(pem, vapid_row(kid))
    await conn.execute(
        """INSERT INTO vapid_keys (kid, private_pem, public_key, status)
           VALUES ($1, $2, $3, 'active')
           ON CONFLICT ((true)) WHERE status = 'active' DO NOTHING""",
        kid,
        pem,
        public_key,
    )
    active = await select_active_vapid_key(conn)
    assert active is not None
    return active


async def rotate_vapid_key(
    conn: asyncpg.Connection, wrapper: KeyWrapper = NO_WRAPPING, *, actor: str = "operator"
) -> VapidKeyInfo:
    """Make a new active key; the former one becomes ``previous`` and keeps signing
    for the subscriptions made with it until they are renewed."""
    kid, pem, public_key = new_vapid_key()
    pem = wrapper.wrap(pem, vapid_row(kid))
    async with conn.transaction():
        await _lock(conn)
        await conn.execute(
            """UPDATE vapid_keys SET status = 'previous', superseded_at = now()
                WHERE status = 'active'"""
        )
        await conn.execute(
            """INSERT INTO vapid_keys (kid, private_pem, public_key, status)
               VALUES ($1, $2, $3, 'active')""",
            kid,
            pem,
            public_key,
        )
        active = await select_active_vapid_key(conn)
        await insert_audit_event(conn, "vapid_key_rotated", detail={"actor": actor, "kid": kid})
    assert active is not None
    return active


async def retire_vapid_keys(
    conn: asyncpg.Connection,
    kids: Sequence[str] = (),
    *,
    force: bool = False,
    actor: str = "operator",
) -> list[VapidKeyInfo]:
    """Retire previous keys and erase their private part.

    Without ``kids``: every previous key no subscribed device uses any more.
    With ``kids``: those keys (each must be previous); :class:`VapidKeyInUse`
    if devices still use one, unless ``force`` (their pushes then fail until
    the app subscribes again).
    """
    async with conn.transaction():
        await _lock(conn)
        if kids:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM vapid_keys k WHERE k.kid = ANY($1::text[])", list(kids)
            )
            found = {r["kid"]: _info(r) for r in rows}
            problems = [f"no VAPID key {kid!r}" for kid in kids if kid not in found]
            problems += [
                f"key {k.kid} is {k.status}, not previous"
                for k in found.values()
                if k.status != "previous"
            ]
            if problems:
                raise ValueError("; ".join(problems))
            in_use = [k for k in found.values() if k.devices]
            if in_use and not force:
                raise VapidKeyInUse(
                    ", ".join(f"{k.kid} signs for {k.devices} device(s)" for k in in_use)
                )
            targets = list(found)
        else:
            targets = [
                r["kid"]
                for r in await conn.fetch(
                    f"""SELECT k.kid FROM (SELECT {_COLUMNS} FROM vapid_keys k
                                            WHERE k.status = 'previous') k
                         WHERE k.devices = 0"""
                )
            ]
        rows = await conn.fetch(
            f"""WITH retired AS (
                    UPDATE vapid_keys SET status = 'retired', retired_at = now(), private_pem = ''
                     WHERE kid = ANY($1::text[]) AND status = 'previous'
                 RETURNING *
                )
                SELECT {_COLUMNS} FROM retired k ORDER BY k.created_at""",
            targets,
        )
        if rows:
            await insert_audit_event(
                conn,
                "vapid_keys_retired",
                detail={"actor": actor, "kids": [r["kid"] for r in rows], "forced": force},
            )
    return [_info(r) for r in rows]


async def list_vapid_keys(conn: Queryable) -> list[VapidKeyInfo]:
    """Every key, the active one first, then the newest."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM vapid_keys k
          ORDER BY k.status = 'active' DESC, k.created_at DESC"""
    )
    return [_info(r) for r in rows]


async def select_usable_vapid_pems(conn: Queryable) -> dict[str, str]:
    """The stored private part of every active and previous key, by kid."""
    rows = await conn.fetch(
        "SELECT kid, private_pem FROM vapid_keys WHERE status IN ('active', 'previous')"
    )
    return {r["kid"]: r["private_pem"] for r in rows if r["private_pem"]}


async def update_vapid_pem(conn: asyncpg.Connection, kid: str, stored_pem: str) -> None:
    """Store ``kid``'s private part anew (wrapped by ``backchannel keys wrap``)."""
    await conn.execute(
        "UPDATE vapid_keys SET private_pem = $2 WHERE kid = $1 AND status <> 'retired'",
        kid,
        stored_pem,
    )


class VapidSigners:
    """Signing ``Vapid`` instances by kid, each loaded from its PEM once."""

    def __init__(self, wrapper: KeyWrapper = NO_WRAPPING) -> None:
        self._wrapper = wrapper
        self._loaded: dict[str, Vapid] = {}

    async def get(self, conn: Queryable, kid: str) -> Vapid | None:
        """The signer of an active or previous key; ``None`` if unknown or retired."""
        vapid = self._loaded.get(kid)
        if vapid is None:
            pem = await conn.fetchval(
                """SELECT private_pem FROM vapid_keys
                    WHERE kid = $1 AND status IN ('active', 'previous')""",
                kid,
            )
            if not pem:
                return None
            vapid = self._loaded[kid] = load_vapid(self._wrapper.unwrap(pem, vapid_row(kid)))
        return vapid

    def forget(self, kid: str) -> None:
        self._loaded.pop(kid, None)
