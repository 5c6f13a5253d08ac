"""Housekeeping deletes rows that have outlived their use, and nothing else."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from backchannel import housekeeping
from backchannel.db.pool import create_pool
from backchannel.housekeeping import Housekeeper
from backchannel.settings import Settings
from tests.conftest import start_app
from tests.support.factories import create_user


async def purge(settings: Settings) -> dict[str, int]:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        return await Housekeeper(pool, settings).purge_once()
    finally:
        await pool.close()


async def add_jti(db: asyncpg.Connection, jti: str, expires_in: int) -> None:
    await db.execute(
        """INSERT INTO used_jtis (issuer, purpose, jti, expires_at)
           VALUES ('rp', 'client_assertion', $1, now() + make_interval(secs => $2))""",
        jti,
        expires_in,
    )


async def test_expired_replay_cache_entries_are_deleted_and_live_ones_kept(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await add_jti(db, "expired", -5)
    await add_jti(db, "live", 300)
    deleted = await purge(settings)
    assert deleted["used_jtis"] == 1
    assert [r["jti"] for r in await db.fetch("SELECT jti FROM used_jtis")] == ["live"]


async def test_settled_push_messages_past_retention_are_deleted_and_queued_ones_kept(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await create_user(db, subject="house-1")
    await db.execute(
        """INSERT INTO devices (device_id, user_id, name, public_jwk, jwk_thumbprint)
           VALUES ('dev-1', $1, 'Phone', '{}'::jsonb, 'thumb-1')""",
        user.user_id,
    )
    rows = [
        ("sent", 2 * 86400),
        ("failed", 2 * 86400),
        ("dropped", 2 * 86400),
        ("queued", 2 * 86400),
        ("sent", 60),
    ]
    for status, age in rows:
        await db.execute(
            """INSERT INTO push_outbox (device_id, kind, topic, payload, withdrawal,
                                        deliver_before, status, created_at)
               VALUES ('dev-1', 'prompt', 't', $1, $4, now(), $2,
                       now() - make_interval(secs => $3))""",
            json.dumps({"type": "prompt"}),
            status,
            age,
            json.dumps({"type": "dismiss"}),
        )
    deleted = await purge(settings.replace(push_outbox_retention=86400))
    assert deleted["push_outbox"] == 3
    left = await db.fetch("SELECT status FROM push_outbox ORDER BY id")
    assert [r["status"] for r in left] == ["queued", "sent"]


async def test_enrolment_codes_are_deleted_a_day_after_they_expire(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await create_user(db, subject="house-2")
    for code, expired_ago in ((b"old", 2 * 86400), (b"recent", 3600), (b"valid", -600)):
        await db.execute(
            """INSERT INTO enrolment_codes (code_hash, user_id, issued_by, expires_at)
               VALUES ($1, $2, 'cli', now() - make_interval(secs => $3))""",
            code,
            user.user_id,
            expired_ago,
        )
    deleted = await purge(settings)
    assert deleted["enrolment_codes"] == 1
    left = await db.fetch("SELECT code_hash FROM enrolment_codes ORDER BY code_hash")
    assert sorted(bytes(r["code_hash"]) for r in left) == [b"recent", b"valid"]


async def test_a_round_deletes_more_than_one_batch(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "BATCH", 3)
    for i in range(7):
        await add_jti(db, f"old-{i}", -5)
    deleted = await purge(settings)
    assert deleted["used_jtis"] == 7
    assert await db.fetchval("SELECT count(*) FROM used_jtis") == 0


async def test_the_running_app_keeps_house_in_the_background(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await add_jti(db, "stale", -5)
    async for _running in start_app(settings):
        for _ in range(100):  # the first round runs as the app starts
            if not await db.fetchval("SELECT count(*) FROM used_jtis"):
                break
            await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT count(*) FROM used_jtis") == 0
