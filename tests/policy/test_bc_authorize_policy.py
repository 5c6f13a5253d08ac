"""Policy rules at /bc-authorize, through HTTP against the app."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.groups import insert_user_group
from backchannel.db.users import User
from backchannel.oauth.admission import admit_request
from backchannel.oauth.authentication_request import AuthenticationRequest
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule, set_rule_enabled
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient, RunningApp, start_app
from tests.support import factories
from tests.support.ciba import audit_events, poll, start_request


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Fatigue limits off: these tests are about rules alone."""
    return settings.replace(fatigue_max_pending=0, fatigue_max_prompts=0)


async def rules_in_force(running: RunningApp, names: Iterable[str]) -> None:
    """Wait until the app's cached rule set is exactly ``names`` (notifications are async)."""
    wanted = set(names)
    for _ in range(200):
        current = await running.services.policy.current()
        if {r.name for r in current.rules} == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the app never saw the rules {sorted(wanted)}")


async def install(db: asyncpg.Connection, running: RunningApp, *documents: dict[str, Any]) -> None:
    for document in documents:
        await add_rule(db, parse_rule({"mode": "enforce", **document}))
    await rules_in_force(running, [d["name"] for d in documents])


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error", "")


async def test_explicit_deny_wins_over_an_allow_rule(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await install(
        db,
        running,
        {"name": "rp-may-prompt", "effect": "allow", "target": {"clients": [rp.client_id]}},
        {"name": "not-alice", "effect": "deny", "when": {"users": ["alice"]}},
    )
    response = await start_request(running.http, rp.basic_auth())
    assert error_of(response) == (403, "access_denied")
    # Neutral: the client learns nothing about the rules.
    assert "not-alice" not in response.text
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 0
    [row] = await audit_events(db, "policy_decision")
    assert (row["client_id"], row["user_id"]) == (rp.client_id, alice.user_id)
    detail = row["detail"]
    assert detail["outcome"] == "deny" and detail["mode"] == "enforce"
    assert detail["reason"] == "denied_by_rule"
    [ref] = detail["rules"]
    assert ref["name"] == "not-alice" and ref["effect"] == "deny" and ref["mode"] == "enforce"
    assert isinstance(ref["id"], int)


async def test_a_group_allow_list_lets_only_the_listed_client_prompt_its_members(
    running: RunningApp,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    desk: RegisteredClient = await make_client(client_id="support-desk", name="Support")
    await factories.create_user(db, subject="bob", email="bob@example.com")
    await insert_user_group(db, alice.user_id, "retail")
    await install(
        db,
        running,
        {
            "name": "retail-via-desk",
            "effect": "allow",
            "target": {"groups": ["retail"]},
            "when": {"clients": ["support-desk"]},
        },
    )
    assert (await start_request(running.http, desk.basic_auth())).status_code == 200
    refused = await start_request(running.http, rp.basic_auth())
    assert error_of(refused) == (403, "access_denied")
    # Bob is not in retail: the allow list is not about him.
    bob = await start_request(running.http, rp.basic_auth(), login_hint="bob@example.com")
    assert bob.status_code == 200
    [row] = await audit_events(db, "policy_decision")
    assert row["detail"]["reason"] == "not_allow_listed"
    assert [r["name"] for r in row["detail"]["rules"]] == ["retail-via-desk"]
    [issued, _] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["policy"] == {"allowed_by": ["retail-via-desk"]}


async def test_a_time_of_day_rule_follows_the_clock(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    office = {"days": ["mon-fri"], "from": "08:00", "to": "18:00", "tz": "Europe/London"}
    await install(
        db, running, {"name": "office-hours", "effect": "deny", "when": {"outside": office}}
    )
    store = running.services.policy
    store.clock = lambda: datetime(2026, 6, 10, 9, 30, tzinfo=UTC)  # Wednesday 10:30 BST
    assert (await start_request(running.http, rp.basic_auth())).status_code == 200
    store.clock = lambda: datetime(2026, 6, 10, 19, 0, tzinfo=UTC)  # Wednesday 20:00 BST
    assert error_of(await start_request(running.http, rp.basic_auth())) == (403, "access_denied")
    store.clock = lambda: datetime(2026, 6, 13, 9, 30, tzinfo=UTC)  # Saturday
    assert error_of(await start_request(running.http, rp.basic_auth())) == (403, "access_denied")
    [first, _] = await audit_events(db, "policy_decision")
    assert first["detail"]["request"]["at"] == "2026-06-10T19:00:00+00:00"


async def test_an_ip_range_rule_sees_the_callers_address(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await install(
        db,
        running,
        {"name": "office-network", "effect": "deny", "when": {"ip_not_in": ["203.0.113.0/24"]}},
    )
    transport = httpx.ASGITransport(app=running.app, client=("203.0.113.5", 1234))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as office:
        assert (await start_request(office, rp.basic_auth())).status_code == 200
    # The default test client calls from 127.0.0.1.
    assert error_of(await start_request(running.http, rp.basic_auth())) == (403, "access_denied")
    [row] = await audit_events(db, "policy_decision")
    assert row["detail"]["request"]["caller_ip"] == "127.0.0.1"


async def test_a_requested_expiry_limit_refuses_long_lived_requests(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await install(
        db, running, {"name": "short-lived", "effect": "deny", "when": {"expiry_over": 120}}
    )
    short = await start_request(running.http, rp.basic_auth(), requested_expiry="60")
    assert short.status_code == 200 and short.json()["expires_in"] == 60
    long = await start_request(running.http, rp.basic_auth(), requested_expiry="600")
    assert error_of(long) == (403, "access_denied")
    # Without requested_expiry the request gets the default 300 s: too long as well.
    assert error_of(await start_request(running.http, rp.basic_auth())) == (403, "access_denied")


async def test_a_scope_rule_refuses_only_the_scopes_it_names(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await install(
        db,
        running,
        {
            "name": "no-email-for-rp",
            "effect": "deny",
            "target": {"clients": [rp.client_id]},
            "when": {"scopes_any": ["email"]},
        },
    )
    refused = await start_request(running.http, rp.basic_auth(), scope="email openid")
    assert error_of(refused) == (403, "access_denied")
    assert (await start_request(running.http, rp.basic_auth(), scope="openid")).status_code == 200


async def test_a_report_only_rule_leaves_the_flow_untouched_but_audits_would_deny(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await install(db, running, {"name": "trial-block", "effect": "deny", "mode": "report-only"})
    response = await start_request(running.http, rp.basic_auth())
    assert response.status_code == 200, response.text
    pending = await poll(running.http, rp.basic_auth(), response.json()["auth_req_id"])
    assert error_of(pending) == (400, "authorization_pending")
    [row] = await audit_events(db, "policy_decision")
    assert row["detail"]["outcome"] == "would_deny"
    assert row["detail"]["mode"] == "report-only"
    assert [r["name"] for r in row["detail"]["rules"]] == ["trial-block"]
    [issued] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["policy"] == {"would_deny": ["trial-block"]}


@pytest.fixture
async def second(settings: Settings) -> AsyncIterator[RunningApp]:
    async for app in start_app(settings):
        yield app


async def test_a_rule_change_on_one_instance_reaches_another_without_restart(
    running: RunningApp, second: RunningApp, rp: RegisteredClient, alice: User
) -> None:
    assert (await start_request(second.http, rp.basic_auth())).status_code == 200
    rule = parse_rule({"name": "stop", "effect": "deny", "mode": "enforce"})
    async with running.services.pool.acquire() as conn:
        await add_rule(conn, rule)  # type: ignore[arg-type]
    await rules_in_force(second, ["stop"])
    assert error_of(await start_request(second.http, rp.basic_auth())) == (403, "access_denied")
    async with running.services.pool.acquire() as conn:
        await set_rule_enabled(conn, "stop", False)  # type: ignore[arg-type]
    await rules_in_force(second, [])
    assert (await start_request(second.http, rp.basic_auth())).status_code == 200


class _NoDatabase:
    """A pool that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name})")


async def test_without_rules_or_limits_admission_costs_no_database_round_trip(
    running: RunningApp, rp: RegisteredClient, alice: User
) -> None:
    services = dataclasses.replace(
        running.services,
        pool=_NoDatabase(),  # type: ignore[arg-type]
        settings=running.services.settings.replace(not_me_mute=0),
    )
    await services.policy.current()  # loaded at start; nothing stale
    request = AuthenticationRequest(
        scope=("openid",),
        hint_kind="login_hint",
        hint="alice@example.com",
        binding_message=None,
        user_code=None,
        requested_expiry=None,
        expires_in=300,
        acr_values=None,
        client_notification_token=None,
    )
    admitted = await admit_request(services, rp.client, alice, request, "127.0.0.1")
    assert admitted.audit_detail == {} and admitted.user_verification is None
