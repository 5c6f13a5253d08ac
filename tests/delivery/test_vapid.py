"""VAPID keys: one active key, created race-free; rotation keeps the previous key
signing for the devices subscribed with it; retirement erases private parts."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import asyncpg
import pytest
from py_vapid import Vapid

from backchannel.cli import main
from backchannel.db.pool import connect
from backchannel.delivery.vapid import (
    VapidKeyInUse,
    VapidSigners,
    application_server_key,
    ensure_vapid_key,
    list_vapid_keys,
    load_vapid,
    retire_vapid_keys,
    rotate_vapid_key,
)
from tests.support import factories
from tests.support.push_service import b64url_decode, insert_device, run_push_service


async def test_the_first_key_is_created_once_even_by_racing_replicas(
    database_url: str, db: asyncpg.Connection
) -> None:
    conns = [await connect(database_url) for _ in range(6)]
    try:
        keys = await asyncio.gather(*(ensure_vapid_key(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert len({k.kid for k in keys}) == 1
    assert [(k.kid, k.status) for k in await list_vapid_keys(db)] == [(keys[0].kid, "active")]
    assert (await ensure_vapid_key(db)).kid == keys[0].kid


async def test_the_public_key_is_the_uncompressed_point_browsers_take(
    db: asyncpg.Connection,
) -> None:
    key = await ensure_vapid_key(db)
    point = b64url_decode(key.public_key)
    assert len(point) == 65 and point[0] == 4
    assert "=" not in key.public_key
    pem = await db.fetchval("SELECT private_pem FROM vapid_keys WHERE kid = $1", key.kid)
    vapid = load_vapid(pem)
    assert application_server_key(vapid) == key.public_key
    # The loaded key signs RFC 8292 tokens that verify with the published key.
    header = vapid.sign({"aud": "https://push.example", "sub": "mailto:a@example.com"})
    assert Vapid.verify(header["Authorization"])
    assert header["Authorization"].endswith("k=" + key.public_key)


async def test_rotation_keeps_the_previous_key_for_its_devices(db: asyncpg.Connection) -> None:
    old = await ensure_vapid_key(db)
    user = await factories.create_user(db)
    async with run_push_service() as service:
        await insert_device(db, user.user_id, service.subscribe(), vapid_kid=old.kid)
    new = await rotate_vapid_key(db)

    keys = {k.kid: k for k in await list_vapid_keys(db)}
    assert keys[new.kid].status == "active" and keys[new.kid].devices == 0
    assert keys[old.kid].status == "previous" and keys[old.kid].devices == 1
    assert keys[old.kid].superseded_at is not None
    signers = VapidSigners()
    old_signer = await signers.get(db, old.kid)
    assert old_signer is not None and application_server_key(old_signer) == old.public_key
    assert await signers.get(db, old.kid) is old_signer  # loaded once


async def test_retire_erases_only_keys_no_device_uses(db: asyncpg.Connection) -> None:
    used = await ensure_vapid_key(db)
    user = await factories.create_user(db)
    await insert_device(db, user.user_id, None, vapid_kid=used.kid)  # no subscription: unused
    async with run_push_service() as service:
        await insert_device(db, user.user_id, service.subscribe(), vapid_kid=used.kid)
    unused = await rotate_vapid_key(db)
    active = await rotate_vapid_key(db)

    retired = await retire_vapid_keys(db)

    assert [k.kid for k in retired] == [unused.kid]
    rows = await db.fetch("SELECT kid, status, private_pem FROM vapid_keys")
    state = {r["kid"]: (r["status"], bool(r["private_pem"])) for r in rows}
    assert state == {
        used.kid: ("previous", True),
        unused.kid: ("retired", False),
        active.kid: ("active", True),
    }
    assert await VapidSigners().get(db, unused.kid) is None


async def test_retiring_a_key_devices_still_use_needs_force(db: asyncpg.Connection) -> None:
    used = await ensure_vapid_key(db)
    user = await factories.create_user(db)
    async with run_push_service() as service:
        await insert_device(db, user.user_id, service.subscribe(), vapid_kid=used.kid)
    active = await rotate_vapid_key(db)

    with pytest.raises(VapidKeyInUse):
        await retire_vapid_keys(db, [used.kid])
    with pytest.raises(ValueError, match="not previous"):
        await retire_vapid_keys(db, [active.kid], force=True)
    retired = await retire_vapid_keys(db, [used.kid], force=True)
    assert [(k.kid, k.status) for k in retired] == [(used.kid, "retired")]


async def test_the_vapid_cli_lists_generates_rotates_and_retires(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_") and name != "BACKCHANNEL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", database_url)
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(tmp_path))

    async def cli(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        return code, capsys.readouterr().out

    code, out = await cli("vapid", "list", "--json")
    assert (code, json.loads(out)) == (0, {"keys": []})

    code, out = await cli("vapid", "generate", "--json")
    first = json.loads(out)
    assert code == 0 and first["created"] is True and first["status"] == "active"
    assert "private_pem" not in first
    code, out = await cli("vapid", "generate", "--json")
    assert json.loads(out)["kid"] == first["kid"] and json.loads(out)["created"] is False

    code, out = await cli("vapid", "rotate", "--json")
    second = json.loads(out)
    assert code == 0 and second["kid"] != first["kid"]

    code, out = await cli("vapid", "list")
    assert code == 0 and first["kid"] in out and second["public_key"] in out

    code, out = await cli("vapid", "retire", "--json")
    assert code == 0
    assert [k["kid"] for k in json.loads(out)["keys"]] == [first["kid"]]

    code, _ = await cli("vapid", "retire", second["kid"])
    assert code == 2  # the active key cannot be retired
