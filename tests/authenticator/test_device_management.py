"""The user's devices: listing, removal (which withdraws prompts), subscription refresh, CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.authenticator.messages import push_topic
from backchannel.cli import main
from backchannel.db.users import User
from tests.conftest import RegisteredClient
from tests.support import factories
from tests.support.ciba import audit_events, decide, start_auth_req_id
from tests.support.device import enrolled_phone, new_subscription, ref_of


async def test_devices_lists_the_users_active_devices(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id, name="Pixel")
    tablet = await enrolled_phone(http, db, alice.user_id, name="iPad")
    gone = await enrolled_phone(http, db, alice.user_id, name="Old phone")
    await db.execute("UPDATE devices SET removed_at = now() WHERE device_id = $1", gone.device_id)
    bob = await factories.create_user(db, subject="bob", email="bob@example.com")
    await enrolled_phone(http, db, bob.user_id, name="Bob's phone")

    response = await phone.call(http, "/device/devices")
    assert response.status_code == 200
    devices = response.json()["devices"]
    assert [(d["device_id"], d["name"], d["this_device"]) for d in devices] == [
        (phone.device_id, "Pixel", True),
        (tablet.device_id, "iPad", False),
    ]
    assert set(devices[0]) == {
        "device_id",
        "name",
        "created_at",
        "last_seen_at",
        "this_device",
        "user_verification_keys",
        "push",
    }
    assert devices[0]["user_verification_keys"] == 0
    assert devices[0]["push"] is True
    assert devices[0]["created_at"].endswith("Z") and devices[0]["last_seen_at"].endswith("Z")


async def test_removing_this_device_blocks_its_later_calls(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    response = await phone.call(http, "/device/remove")
    assert response.status_code == 200
    assert response.json() == {"device_id": phone.device_id, "removed": True}
    assert await db.fetchval("SELECT removed_at IS NOT NULL FROM devices") is True
    for path in ("/device/requests", "/device/devices", "/device/remove", "/device/history"):
        refused = await phone.call(http, path)
        assert refused.status_code == 401, path
    [event] = await audit_events(db, "device_removed")
    assert event["device_id"] == phone.device_id and event["user_id"] == alice.user_id


async def test_a_device_removes_another_device_of_its_user(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    lost = await enrolled_phone(http, db, alice.user_id, name="Lost phone")
    response = await phone.call(http, "/device/remove", device_id=lost.device_id)
    assert response.json() == {"device_id": lost.device_id, "removed": True}
    assert (await lost.call(http, "/device/requests")).status_code == 401
    assert (await phone.call(http, "/device/requests")).status_code == 200
    again = await phone.call(http, "/device/remove", device_id=lost.device_id)
    assert again.status_code == 404


async def test_a_device_cannot_remove_another_users_device(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    bob = await factories.create_user(db, subject="bob", email="bob@example.com")
    bobs = await enrolled_phone(http, db, bob.user_id, name="Bob's phone")
    response = await phone.call(http, "/device/remove", device_id=bobs.device_id)
    assert response.status_code == 403
    assert (await bobs.call(http, "/device/requests")).status_code == 200
    unknown = await phone.call(http, "/device/remove", device_id="no-such-device")
    assert unknown.status_code == 404
    mistyped = await phone.call(http, "/device/remove", device_id=["x"])
    assert mistyped.status_code == 400


async def _prompts(db: asyncpg.Connection, device_id: str | None) -> dict[int, dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM push_outbox WHERE device_id = $1 AND kind = 'prompt'", device_id
    )
    return {r["auth_request_id"]: dict(r) for r in rows}


async def _set_prompt(db: asyncpg.Connection, prompt_id: int, status: str, attempts: int) -> None:
    # Held back from the outbox worker: the test decides each prompt's fate.
    await db.execute(
        """UPDATE push_outbox SET status = $2, attempts = $3, leased_until = NULL,
                  next_attempt_at = now() + interval '1 hour'
            WHERE id = $1""",
        prompt_id,
        status,
        attempts,
    )


async def test_removing_a_device_withdraws_its_prompts(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    other = await enrolled_phone(http, db, alice.user_id, name="Tablet")
    # Decided elsewhere: its withdrawal is the decision's business, not the removal's.
    decided = await start_auth_req_id(http, rp.basic_auth(), binding_message="decided")
    await decide(db, decided, "approved", device_id=other.device_id)
    # Three pending requests: the push-fatigue cap allows no more.
    sent = await start_auth_req_id(http, rp.basic_auth(), binding_message="sent")
    retrying = await start_auth_req_id(http, rp.basic_auth(), binding_message="retrying")
    await start_auth_req_id(http, rp.basic_auth(), binding_message="untried")
    ids = {
        name: await db.fetchval("SELECT id FROM auth_requests WHERE binding_message = $1", name)
        for name in ("sent", "retrying", "untried", "decided")
    }
    prompts = await _prompts(db, phone.device_id)
    assert set(prompts) == set(ids.values())  # the delivery side prompted every device
    await _set_prompt(db, prompts[ids["sent"]]["id"], "sent", 1)
    await _set_prompt(db, prompts[ids["retrying"]]["id"], "queued", 2)
    await _set_prompt(db, prompts[ids["untried"]]["id"], "queued", 0)

    assert (await phone.call(http, "/device/remove")).status_code == 200

    dismisses = await db.fetch(
        """SELECT * FROM push_outbox WHERE device_id = $1 AND kind = 'dismiss'
                AND auth_request_id <> $2 ORDER BY auth_request_id""",
        phone.device_id,
        ids["decided"],
    )
    assert [d["auth_request_id"] for d in dismisses] == [ids["sent"], ids["retrying"]]
    for row, auth_req_id in zip(dismisses, [sent, retrying], strict=True):
        ref = ref_of(auth_req_id)
        assert row["topic"] == push_topic(ref)
        assert row["payload"] == {"type": "dismiss", "ref": ref}
        # The app's outbox worker may already have tried it (this test's push host
        # is not on the allow-list, so it fails without any traffic).
        assert row["status"] in ("queued", "failed")
        expires_at = await db.fetchval(
            "SELECT expires_at FROM auth_requests WHERE id = $1", row["auth_request_id"]
        )
        assert row["deliver_before"] >= expires_at
    untried_prompt = await db.fetchrow(
        "SELECT status FROM push_outbox WHERE id = $1", prompts[ids["untried"]]["id"]
    )
    assert untried_prompt["status"] == "dropped"
    # The other device keeps its prompts.
    assert len(await _prompts(db, other.device_id)) == 4
    assert (
        await db.fetchval(
            "SELECT count(*) FROM push_outbox WHERE device_id = $1 AND kind = 'dismiss'"
            " AND auth_request_id <> $2",
            other.device_id,
            ids["decided"],
        )
        == 0
    )
    [event] = await audit_events(db, "device_removed")
    assert event["detail"]["dismissed"] == 2


async def test_subscription_refresh_replaces_the_push_endpoint(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    fresh = new_subscription("fcm.googleapis.com")
    response = await phone.call(http, "/device/subscription", subscription=fresh)
    assert response.status_code == 200, response.text
    assert response.json() == {"device_id": phone.device_id}
    row = await db.fetchrow("SELECT * FROM devices WHERE device_id = $1", phone.device_id)
    assert row["push_endpoint"] == fresh["endpoint"]
    assert row["push_p256dh"] == fresh["keys"]["p256dh"]
    assert row["push_auth"] == fresh["keys"]["auth"]


@pytest.mark.parametrize(
    "subscription",
    [
        None,
        {"endpoint": "http://fcm.googleapis.com/x", "keys": {}},
        {"endpoint": "https://10.0.0.1/x", "keys": {}},
        {"endpoint": "https://user@fcm.googleapis.com/x", "keys": {}},
        "https://fcm.googleapis.com/x",
        {"endpoint": 5, "keys": {}},
    ],
)
async def test_subscription_refresh_refuses_unsafe_or_malformed_subscriptions(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, subscription: Any
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    endpoint = phone.subscription["endpoint"]
    if isinstance(subscription, dict):
        subscription = {**subscription, "keys": new_subscription()["keys"]}
    response = await phone.call(http, "/device/subscription", subscription=subscription)
    assert response.status_code == 400, response.text
    stored = await db.fetchval("SELECT push_endpoint FROM devices")
    assert stored == endpoint


async def test_subscription_refresh_accepts_loopback_only_with_the_loopback_push_setting(
    settings: Any, db: asyncpg.Connection, alice: User
) -> None:
    from tests.conftest import start_app

    local = {"endpoint": "http://127.0.0.1:9999/push/abc", "keys": new_subscription()["keys"]}
    for loopback, status in ((False, 400), (True, 200)):
        changed = settings.replace(allow_insecure_urls=True, push_allow_loopback=loopback)
        async for running in start_app(changed):
            phone = await enrolled_phone(running.http, db, alice.user_id)
            response = await phone.call(running.http, "/device/subscription", subscription=local)
            assert response.status_code == status, response.text


# --- backchannel device list|remove ---------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_") and name != "BACKCHANNEL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", database_url)


@pytest.mark.usefixtures("cli_env")
async def test_cli_lists_and_removes_devices(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id, name="Pixel")
    bob = await factories.create_user(db, subject="bob", email="bob@example.com")
    bobs = await enrolled_phone(http, db, bob.user_id, name="Bob's phone")

    code, output = await asyncio.to_thread(run_cli, "device", "list", "--json")
    assert code == 0, output
    listed = json.loads(output)["devices"]
    assert [(d["device_id"], d["subject"], d["name"]) for d in listed] == [
        (phone.device_id, "alice", "Pixel"),
        (bobs.device_id, "bob", "Bob's phone"),
    ]
    code, output = await asyncio.to_thread(run_cli, "device", "list", "--user", "bob")
    assert code == 0 and bobs.device_id in output and phone.device_id not in output
    code, output = await asyncio.to_thread(run_cli, "device", "list", "--user", "nobody")
    assert code == 2

    assert phone.device_id is not None
    code, output = await asyncio.to_thread(run_cli, "device", "remove", phone.device_id)
    assert code == 0, output
    assert (await phone.call(http, "/device/requests")).status_code == 401
    [event] = await audit_events(db, "device_removed")
    assert event["detail"]["by"] == "cli"
    code, output = await asyncio.to_thread(run_cli, "device", "remove", phone.device_id)
    assert code == 1 and "no active device" in output


async def test_a_subscription_refresh_to_a_push_service_off_the_allow_list_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    before = await db.fetchval("SELECT push_endpoint FROM devices")
    response = await phone.call(
        http, "/device/subscription", subscription=new_subscription("push.attacker.example")
    )
    assert response.status_code == 400
    assert "push service is not allowed" in response.json()["error_description"]
    assert await db.fetchval("SELECT push_endpoint FROM devices") == before
