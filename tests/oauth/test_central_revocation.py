"""Central revocation by user, device and client, and its cascades, seen through HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.authenticator.device_management import revoke_device
from backchannel.cli import main
from backchannel.db.users import User
from backchannel.oauth.central_revocation import revoke_client, revoke_user
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret
from backchannel.oauth.services import Services
from backchannel.policy.fatigue import NotMeLimits
from tests.conftest import RegisteredClient
from tests.support import factories
from tests.support.ciba import (
    audit_events,
    decide,
    poll,
    poll_is_held,
    start_auth_req_id,
    start_request,
)
from tests.support.cli import clean_environment
from tests.support.waiting import eventually


async def approved_tokens(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    client: RegisteredClient,
    *,
    device_id: str = "phone-a",
    login_hint: str = "alice@example.com",
) -> dict[str, Any]:
    """Tokens from a real flow: request, approval by ``device_id``, poll."""
    auth_req_id = await start_auth_req_id(http, client.basic_auth(), login_hint=login_hint)
    await decide(db, auth_req_id, "approved", device_id=device_id)
    response = await poll(http, client.basic_auth(), auth_req_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(
    http: httpx.AsyncClient, client: RegisteredClient, refresh_token: str
) -> httpx.Response:
    return await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        headers=client.basic_auth(),
    )


async def introspect(http: httpx.AsyncClient, client: RegisteredClient, token: str) -> bool:
    response = await http.post("/introspect", data={"token": token}, headers=client.basic_auth())
    assert response.status_code == 200, response.text
    active: bool = response.json()["active"]
    return active


async def userinfo_status(http: httpx.AsyncClient, access_token: str) -> int:
    response = await http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return response.status_code


async def assert_dead(
    http: httpx.AsyncClient, client: RegisteredClient, tokens: dict[str, Any]
) -> None:
    assert not await introspect(http, client, tokens["access_token"])
    assert await userinfo_status(http, tokens["access_token"]) == 401
    refused = await refresh(http, client, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def assert_alive(
    http: httpx.AsyncClient, client: RegisteredClient, tokens: dict[str, Any]
) -> None:
    assert await introspect(http, client, tokens["access_token"])
    assert await userinfo_status(http, tokens["access_token"]) == 200
    assert await introspect(http, client, tokens["refresh_token"])


def error_of(response: httpx.Response) -> str:
    error: str = response.json().get("error", "")
    return error


async def run_cli(monkeypatch: pytest.MonkeyPatch, tmp: Any, dsn: str, *argv: str) -> int:
    clean_environment(monkeypatch, tmp / "data")
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", dsn)
    code: int = await asyncio.to_thread(main, list(argv))
    return code


async def test_revoking_a_user_kills_their_tokens_and_ends_their_requests(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    tokens = await approved_tokens(http, db, rp)
    pending = await start_auth_req_id(http, rp.basic_auth())
    approved = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, approved, "approved", device_id="phone-a")
    await assert_alive(http, rp, tokens)

    summary = await revoke_user(db, alice.user_id, actor="test")

    assert (summary.refresh_tokens, summary.access_tokens, summary.requests) == (1, 1, 2)
    await assert_dead(http, rp, tokens)
    assert error_of(await poll(http, rp.basic_auth(), pending)) == "access_denied"
    assert error_of(await poll(http, rp.basic_auth(), approved)) == "access_denied"
    reasons = await db.fetch(
        "SELECT status, denial_reason FROM auth_requests WHERE status <> 'redeemed'"
    )
    assert {(r["status"], r["denial_reason"]) for r in reasons} == {("denied", "revoked")}
    [event] = await audit_events(db, "revoked")
    assert event["user_id"] == alice.user_id
    assert event["detail"] == {
        "scope": "user",
        "actor": "test",
        "counts": {"refresh_tokens": 1, "access_tokens": 1, "requests": 2, "dismisses": 0},
    }


async def test_revoking_a_user_leaves_other_users_tokens_alive(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await factories.create_user(db, subject="bob", email="bob@example.com")
    bobs = await approved_tokens(http, db, rp, login_hint="bob@example.com")
    await revoke_user(db, alice.user_id, actor="test")
    await assert_alive(http, rp, bobs)


async def test_a_held_long_poll_is_answered_access_denied_at_once_on_revocation(
    http: httpx.AsyncClient,
    services: Services,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, services.waiters))
    assert not held.done()
    await revoke_user(db, alice.user_id, actor="test")
    # Long before the 25 s wait runs out: the revocation woke the held poll.
    response = await asyncio.wait_for(held, 12)
    assert error_of(response) == "access_denied"


async def test_revoking_a_user_withdraws_the_prompts_of_ended_requests(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    from tests.support.device import enrolled_phone

    phone = await enrolled_phone(http, db, alice.user_id)
    await start_auth_req_id(http, rp.basic_auth())
    await start_auth_req_id(http, rp.basic_auth())
    # The prompts reached the phone: withdrawing them needs a dismiss each.
    await db.execute("UPDATE push_outbox SET status = 'sent' WHERE kind = 'prompt'")

    summary = await revoke_user(db, alice.user_id, actor="test")

    assert summary.dismisses == 2  # counted over both ended requests
    dismisses = await db.fetch("SELECT * FROM push_outbox WHERE kind = 'dismiss'")
    # Queued, and possibly already tried by the app's outbox worker (its push service is
    # unreachable here): what matters is that the withdrawal queued them for this phone.
    assert [d["device_id"] for d in dismisses] == [phone.device_id] * 2
    assert all(d["status"] in ("queued", "sent", "failed") for d in dismisses)
    assert await db.fetchval("SELECT bool_and(prompts_withdrawn_at IS NOT NULL) FROM auth_requests")
    assert await phone.pending(http) == []


async def test_revoking_a_client_kills_its_tokens_and_requests_only(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    other = await make_client()
    tokens = await approved_tokens(http, db, rp)
    others = await approved_tokens(http, db, other)
    pending = await start_auth_req_id(http, rp.basic_auth())
    other_pending = await start_auth_req_id(http, other.basic_auth())

    summary = await revoke_client(db, rp.client_id, actor="test")

    assert (summary.refresh_tokens, summary.access_tokens, summary.requests) == (1, 1, 1)
    await assert_dead(http, rp, tokens)
    assert error_of(await poll(http, rp.basic_auth(), pending)) == "access_denied"
    await assert_alive(http, other, others)
    assert error_of(await poll(http, other.basic_auth(), other_pending)) == (
        "authorization_pending"
    )
    [event] = await audit_events(db, "revoked")
    assert event["client_id"] == rp.client_id and event["detail"]["scope"] == "client"


async def test_disabling_a_client_on_the_cli_revokes_and_refuses_it(
    http: httpx.AsyncClient,
    services: Services,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    tokens = await approved_tokens(http, db, rp)
    pending = await start_auth_req_id(http, rp.basic_auth())
    held = asyncio.create_task(poll(http, rp.basic_auth(), pending, {"Prefer": "wait=25"}))
    await eventually(lambda: poll_is_held(db, services.waiters))

    assert (
        await run_cli(monkeypatch, tmp_path, database_url, "client", "disable", rp.client_id) == 0
    )

    # Woken long before the 25 s wait runs out.
    assert error_of(await asyncio.wait_for(held, 12)) == "access_denied"
    assert await db.fetchval("SELECT count(*) FROM access_tokens WHERE revoked_at IS NULL") == 0
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    for _ in range(100):  # the config notification reaches the app asynchronously
        refused = await start_request(http, rp.basic_auth())
        if refused.status_code == 401:
            break
        await asyncio.sleep(0.02)
    assert refused.status_code == 401 and error_of(refused) == "invalid_client"
    [event] = await audit_events(db, "revoked")
    assert event["detail"]["actor"] == "cli" and event["detail"]["scope"] == "client"
    del tokens


async def test_revoking_a_device_kills_tokens_of_its_approvals_only(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    from tests.support.device import enrolled_phone

    lost = await enrolled_phone(http, db, alice.user_id, name="Lost phone")
    kept = await enrolled_phone(http, db, alice.user_id, name="Kept phone")
    assert lost.device_id and kept.device_id
    # A client without refresh: its access token has no family, only its request.
    no_refresh = await make_client(grant_types=("urn:openid:params:grant-type:ciba",))
    from_lost = await approved_tokens(http, db, rp, device_id=lost.device_id)
    refreshed = (await refresh(http, rp, from_lost["refresh_token"])).json()
    lone = await approved_tokens(http, db, no_refresh, device_id=lost.device_id)
    assert "refresh_token" not in lone
    from_kept = await approved_tokens(http, db, rp, device_id=kept.device_id)
    unredeemed = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, unredeemed, "approved", device_id=lost.device_id)
    pending = await start_auth_req_id(http, rp.basic_auth())
    dismisses = "SELECT count(*) FROM push_outbox WHERE kind = 'dismiss'"
    dismissed_before = await db.fetchval(dismisses)

    summary = await revoke_device(db, lost.device_id, actor="test")

    assert summary is not None
    # The family's rotated and current refresh tokens; three access tokens.
    assert (summary.refresh_tokens, summary.access_tokens, summary.requests) == (2, 3, 1)
    await assert_dead(http, rp, refreshed)
    assert not await introspect(http, rp, from_lost["access_token"])
    assert not await introspect(http, no_refresh, lone["access_token"])
    await assert_alive(http, rp, from_kept)
    assert error_of(await poll(http, rp.basic_auth(), unredeemed)) == "access_denied"
    # Pending requests stay answerable by the user's other devices.
    assert [e["ref"] for e in await kept.pending(http)] == [hash_secret(pending).hex()]
    assert (await lost.call(http, "/device/requests")).status_code == 401
    [event] = await audit_events(db, "revoked")
    assert event["device_id"] == lost.device_id and event["detail"]["scope"] == "device"
    assert event["user_id"] == alice.user_id
    assert event["detail"]["counts"] == summary.counts()
    # Every dismiss queued is counted: the ended requests' in the summary, and the removed
    # device's own (a prompt the outbox worker had already tried) in its audit event.
    [removed] = await audit_events(db, "device_removed")
    queued = await db.fetchval(dismisses) - dismissed_before
    assert summary.dismisses + removed["detail"]["dismissed"] == queued
    assert await db.fetchval(
        "SELECT prompts_withdrawn_at IS NOT NULL FROM auth_requests WHERE id_hash = $1",
        hash_secret(unredeemed),
    )
    assert await revoke_device(db, "no-such-device", actor="test") is None


async def test_removing_a_device_through_the_device_api_revokes_its_approvals(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    from tests.support.device import enrolled_phone

    phone = await enrolled_phone(http, db, alice.user_id)
    lost = await enrolled_phone(http, db, alice.user_id, name="Lost phone")
    assert lost.device_id and phone.device_id
    from_lost = await approved_tokens(http, db, rp, device_id=lost.device_id)
    from_phone = await approved_tokens(http, db, rp, device_id=phone.device_id)

    removed = await phone.call(http, "/device/remove", device_id=lost.device_id)
    assert removed.status_code == 200, removed.text

    await assert_dead(http, rp, from_lost)
    await assert_alive(http, rp, from_phone)
    [event] = await audit_events(db, "revoked")
    assert event["detail"]["actor"] == "device" and event["detail"]["scope"] == "device"


async def test_auto_suspension_after_not_me_reports_revokes_the_clients_tokens(
    http: httpx.AsyncClient,
    services: Services,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
) -> None:
    tokens = await approved_tokens(http, db, rp)
    pending = await start_auth_req_id(http, rp.basic_auth())
    reported = await start_auth_req_id(http, rp.basic_auth())
    limits = NotMeLimits(mute_seconds=0, suspend_after=1, suspend_window=86400)

    await record_decision(
        db, hash_secret(reported), "denied", reason="not_me", not_me_limits=limits
    )

    assert await db.fetchval("SELECT disabled_at IS NOT NULL FROM clients")

    # The suspension reaches this replica's client cache by NOTIFY, a moment after commit.
    async def suspended_here() -> bool:
        cached = await services.clients.get(rp.client_id)
        return cached is not None and cached.disabled

    await eventually(suspended_here)
    assert error_of(await poll(http, rp.basic_auth(), pending)) == "invalid_client"
    status = await db.fetchval(
        "SELECT denial_reason FROM auth_requests WHERE id_hash = $1", hash_secret(pending)
    )
    assert status == "revoked"
    assert await db.fetchval("SELECT count(*) FROM access_tokens WHERE revoked_at IS NULL") == 0
    assert await userinfo_status(http, tokens["access_token"]) == 401
    [event] = await audit_events(db, "revoked")
    assert event["detail"]["actor"] == "not_me_suspension"


async def test_the_revoke_cli_revokes_a_user_by_subject(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = await approved_tokens(http, db, rp)
    capsys.readouterr()
    code = await run_cli(monkeypatch, tmp_path, database_url, "revoke", "user", "alice", "--json")
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "scope": "user",
        "target": "alice",
        "refresh_tokens": 1,
        "access_tokens": 1,
        "requests": 0,
        "dismisses": 0,
    }
    await assert_dead(http, rp, tokens)
    for argv in (("user", "nobody"), ("device", "nothing"), ("client", "nobody")):
        assert await run_cli(monkeypatch, tmp_path, database_url, "revoke", *argv) == 2


async def test_a_redemption_racing_a_revocation_either_loses_or_has_its_tokens_revoked(
    settings: Any, db: asyncpg.Connection, rp: RegisteredClient, alice: User, database_url: str
) -> None:
    """Both start together, queued behind a lock on the request's row, over many trials."""
    from backchannel.db.pool import connect
    from tests.conftest import start_app

    revoker = await connect(database_url)
    uncapped = settings.replace(fatigue_max_pending=0, fatigue_max_prompts=0)
    try:
        async for app in start_app(uncapped):
            outcomes = set()
            for _ in range(12):
                auth_req_id = await start_auth_req_id(app.http, rp.basic_auth())
                await decide(db, auth_req_id, "approved")
                async with db.transaction():
                    await db.execute(
                        "SELECT 1 FROM auth_requests WHERE id_hash = $1 FOR UPDATE",
                        hash_secret(auth_req_id),
                    )
                    redemption = asyncio.create_task(poll(app.http, rp.basic_auth(), auth_req_id))
                    revocation = asyncio.create_task(
                        revoke_user(revoker, alice.user_id, actor="test")
                    )
                    await eventually(lambda: _lock_waiters(db, 2), within=15)
                answer = await redemption
                await revocation
                live = await db.fetchval(
                    """SELECT count(*) FROM access_tokens a JOIN auth_requests r
                           ON r.id = a.auth_request_id
                        WHERE r.id_hash = $1 AND a.revoked_at IS NULL""",
                    hash_secret(auth_req_id),
                )
                assert live == 0, "a redemption kept tokens the revocation should have killed"
                outcomes.add(answer.status_code)
            assert outcomes <= {200, 400}
    finally:
        await revoker.close()


async def _lock_waiters(db: asyncpg.Connection, count: int) -> bool:
    waiting = await db.fetchval(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'"""
    )
    return bool(waiting >= count)
