"""The server's signing keys: creation, rotation, retirement, cross-replica reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwk

from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.db.pool import create_pool
from backchannel.db.signing_keys import insert_active_key, supersede_active_key
from backchannel.errors import InvalidRequest
from backchannel.key_wrapping import KeyWrapper
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.oauth.id_tokens import sign_id_token, verify_own_id_token
from backchannel.oauth.keys import (
    KeyStore,
    generate_signing_key,
    list_signing_keys,
    new_private_jwk,
    retire_signing_keys,
    rotate_signing_keys,
)
from backchannel.oauth.services import Services
from backchannel.settings import Settings
from tests.conftest import ISSUER, start_app

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}

PLAIN = KeyWrapper(None)  # no key-encryption key: keys stored as they are


async def eventually(check: Callable[[], bool]) -> None:
    """Wait up to five seconds for ``check`` to hold (a reload after a notification)."""
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def id_token_for(keys: KeyStore, client_id: str = "client-x", alg: str = "ES256") -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "alice", "aud": client_id, "iat": now, "exp": now + 60}
    return sign_id_token(keys, alg, claims)


async def active_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT kid, alg FROM signing_keys WHERE status = 'active' ORDER BY alg")


async def test_first_load_creates_one_active_key_per_algorithm(
    services: Services, db: asyncpg.Connection, http: httpx.AsyncClient
) -> None:
    rows = await active_rows(db)
    assert [r["alg"] for r in rows] == sorted(SIGNING_ALGS)
    published = (await http.get("/jwks")).json()["keys"]
    assert {k["kid"] for k in published} == {r["kid"] for r in rows}
    for key in published:
        assert key["use"] == "sig"
        assert key["kty"] == ("EC" if key["alg"] == "ES256" else "RSA")
        assert not PRIVATE_MEMBERS & set(key)
        assert jwk.import_key(key).thumbprint() == key["kid"]
    ps256, rs256 = services.keys.signing_key("PS256"), services.keys.signing_key("RS256")
    assert ps256.kid != rs256.kid
    assert ps256.as_dict(private=False)["n"] != rs256.as_dict(private=False)["n"]


async def test_loading_again_reuses_the_stored_keys(
    services: Services, settings: Settings, db: asyncpg.Connection
) -> None:
    again = await KeyStore.load(services.pool, settings)
    for alg in SIGNING_ALGS:
        assert again.signing_key(alg).kid == services.keys.signing_key(alg).kid
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == len(SIGNING_ALGS)


async def test_concurrent_first_loads_agree_on_one_active_key_per_algorithm(
    settings: Settings, db: asyncpg.Connection
) -> None:
    assert settings.database_url is not None
    pools = [await create_pool(settings.database_url, min_size=1, max_size=2) for _ in range(4)]
    try:
        stores = await asyncio.gather(*(KeyStore.load(pool, settings) for pool in pools))
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == len(SIGNING_ALGS)
    for alg in SIGNING_ALGS:
        assert len({store.signing_key(alg).kid for store in stores}) == 1


async def test_rotation_keeps_the_previous_key_published_and_verifiable(
    services: Services, db: asyncpg.Connection, http: httpx.AsyncClient
) -> None:
    keys = services.keys
    old_kid = keys.signing_key("ES256").kid
    old_token = id_token_for(keys)

    [info] = await rotate_signing_keys(db, PLAIN, ["ES256"])
    assert info.alg == "ES256" and info.status == "active" and info.kid != old_kid
    await eventually(lambda: keys.signing_key("ES256").kid == info.kid)

    published = {k["kid"] for k in (await http.get("/jwks")).json()["keys"]}
    assert {old_kid, info.kid} <= published
    claims = verify_own_id_token(keys, old_token, issuer=ISSUER, client_id="client-x")
    assert claims["sub"] == "alice"
    new_token = id_token_for(keys)
    assert verify_own_id_token(keys, new_token, issuer=ISSUER, client_id="client-x")
    statuses = {k.kid: k.status for k in await list_signing_keys(db)}
    assert statuses[old_kid] == "previous"
    assert statuses[info.kid] == "active"


async def test_retirement_stops_publishing_the_previous_key(
    services: Services, db: asyncpg.Connection, http: httpx.AsyncClient
) -> None:
    keys = services.keys
    old_kid = keys.signing_key("RS256").kid
    old_token = id_token_for(keys, alg="RS256")
    [info] = await rotate_signing_keys(db, PLAIN, ["RS256"])
    await eventually(lambda: keys.signing_key("RS256").kid == info.kid)

    assert await retire_signing_keys(db, 3600) == []
    retired = await retire_signing_keys(db, 0)
    assert [(k.kid, k.status) for k in retired] == [(old_kid, "retired")]
    await eventually(lambda: old_kid not in {k["kid"] for k in keys.public_jwks()["keys"]})

    published = {k["kid"] for k in (await http.get("/jwks")).json()["keys"]}
    assert old_kid not in published and info.kid in published
    with pytest.raises(InvalidRequest):
        verify_own_id_token(keys, old_token, issuer=ISSUER, client_id="client-x")
    stored = await db.fetchval("SELECT private_jwk FROM signing_keys WHERE kid = $1", old_kid)
    assert not PRIVATE_MEMBERS & set(stored)


async def test_another_replica_sees_a_rotation_without_restart(
    services: Services, settings: Settings, db: asyncpg.Connection
) -> None:
    replica = start_app(settings)
    other = (await anext(replica)).services.keys
    try:
        assert other.signing_key("PS256").kid == services.keys.signing_key("PS256").kid
        [info] = await rotate_signing_keys(db, PLAIN, ["PS256"])
        await eventually(lambda: other.signing_key("PS256").kid == info.kid)
        await eventually(lambda: services.keys.signing_key("PS256").kid == info.kid)
        token = id_token_for(services.keys, alg="PS256")
        assert verify_own_id_token(other, token, issuer=ISSUER, client_id="client-x")
    finally:
        await replica.aclose()


async def test_rotating_every_algorithm_replaces_each_active_key(
    services: Services, db: asyncpg.Connection
) -> None:
    before = {alg: services.keys.signing_key(alg).kid for alg in SIGNING_ALGS}
    rotated = await rotate_signing_keys(db, PLAIN)
    assert sorted(k.alg for k in rotated) == sorted(SIGNING_ALGS)
    await eventually(lambda: all(services.keys.signing_key(k.alg).kid == k.kid for k in rotated))
    assert len(services.keys.public_jwks()["keys"]) == 2 * len(SIGNING_ALGS)
    assert all(before[k.alg] != k.kid for k in rotated)


async def test_concurrent_rotations_leave_one_active_key(
    services: Services, settings: Settings, db: asyncpg.Connection
) -> None:
    async def rotate() -> Any:
        async with services.pool.acquire() as conn:
            return await generate_signing_key(conn, "ES256", PLAIN)

    results = await asyncio.gather(rotate(), rotate(), rotate())
    assert len({r.kid for r in results}) == 3
    rows = await db.fetch("SELECT status FROM signing_keys WHERE alg = 'ES256'")
    assert sorted(r["status"] for r in rows) == ["active", "previous", "previous", "previous"]


async def test_operator_listing_never_shows_private_parameters(
    services: Services, db: asyncpg.Connection
) -> None:
    listed = [k.to_json() for k in await list_signing_keys(db)]
    assert len(listed) == len(SIGNING_ALGS)
    for entry in listed:
        assert set(entry) == {"kid", "alg", "status", "created_at", "superseded_at", "retired_at"}
        assert entry["status"] == "active" and entry["superseded_at"] is None


async def test_unknown_algorithms_are_refused(services: Services, db: asyncpg.Connection) -> None:
    with pytest.raises(ValueError):
        await generate_signing_key(db, "HS256", PLAIN)
    with pytest.raises(ValueError):
        await rotate_signing_keys(db, PLAIN, ["ES256", "none"])
    with pytest.raises(ValueError):
        services.keys.signing_key("EdDSA")
    assert await db.fetchval("SELECT count(*) FROM signing_keys") == len(SIGNING_ALGS)


async def test_a_scheduled_reload_catches_up_on_a_missed_notification(
    services: Services, db: asyncpg.Connection
) -> None:
    keys = services.keys
    data = new_private_jwk("ES256")
    marks: list[str] = []
    services.listener.subscribe(CONFIG_CHANNEL, marks.append)
    async with db.transaction():  # a change whose notification was lost
        await supersede_active_key(db, "ES256")
        await insert_active_key(db, data["kid"], "ES256", data)
    # A notification sent after the change arrives after anything the change sent,
    # and any reload that would have started has then ended.
    await notify(db, CONFIG_CHANNEL, "mark")
    await eventually(lambda: "mark" in marks)
    await keys.wait_reloaded()
    assert keys.signing_key("ES256").kid != data["kid"]
    keys.schedule_reload()
    await keys.wait_reloaded()
    assert keys.signing_key("ES256").kid == data["kid"]
