"""GET /metrics and what the app records in it (backchannel/observability/metrics.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backchannel.app import create_app
from backchannel.db.auth_requests import PollVerdict
from backchannel.db.users import User
from backchannel.delivery.vapid import ensure_vapid_key
from backchannel.observability.metrics import Metrics
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient, RunningApp, start_app
from tests.support.ciba import poll, rewind, start_auth_req_id, start_request
from tests.support.device import enrolled_phone
from tests.support.push_service import LocalPushService, insert_device, run_push_service

METRICS_TOKEN = "m3trics-token-for-tests-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def requests(samples: Samples, route: str, status: str, outcome: str) -> float:
    return value(
        samples, "backchannel_http_requests_total", route=route, status=status, outcome=outcome
    )


async def test_metrics_count_a_whole_poll_flow(
    running: RunningApp, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    http = running.http
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    pending = await poll(http, rp.basic_auth(), auth_req_id)
    assert pending.json()["error"] == "authorization_pending"
    too_fast = await poll(http, rp.basic_auth(), auth_req_id)
    assert too_fast.json()["error"] == "slow_down"
    [entry] = await phone.pending(http)
    assert (await phone.decide(http, entry, "approve")).status_code == 200
    await rewind(db, auth_req_id, 30)
    tokens = await poll(http, rp.basic_auth(), auth_req_id)
    assert tokens.status_code == 200, tokens.text

    samples = await scrape(http)
    assert requests(samples, "/bc-authorize", "2xx", "ok") == 1
    assert requests(samples, "/token", "4xx", "authorization_pending") == 1
    assert requests(samples, "/token", "4xx", "slow_down") == 1
    assert requests(samples, "/token", "2xx", "ok") == 1
    assert requests(samples, "/device/decision", "2xx", "ok") == 1
    assert value(samples, "backchannel_http_request_duration_seconds_count", route="/token") == 3
    polls = {v: value(samples, "backchannel_token_polls_total", verdict=v) for v in PollVerdict}
    assert polls == {v: 0 for v in PollVerdict} | {"pending": 1, "slow_down": 1, "approved": 1}
    assert value(samples, "backchannel_auth_requests_admitted_total") == 1
    assert value(samples, "backchannel_user_pending_requests_at_admission_count") == 1
    assert value(samples, "backchannel_user_pending_requests_at_admission_sum") == 0
    assert value(samples, "backchannel_decision_seconds_count", decision="approved") == 1
    decided_in = value(samples, "backchannel_decision_seconds_sum", decision="approved")
    assert 0 <= decided_in < 60
    # No identifier of a client, user or request is ever a label value.
    text = (await http.get("/metrics")).text
    for identifier in (rp.client_id, "alice", auth_req_id, entry["ref"]):
        assert identifier not in text


async def test_poll_lockouts_are_counted_by_verdict(
    running: RunningApp, rp: RegisteredClient, alice: User
) -> None:
    lock_after = running.services.settings.poll_lock_after
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    for _ in range(lock_after + 2):
        await poll(running.http, rp.basic_auth(), auth_req_id)
    samples = await scrape(running.http)
    assert value(samples, "backchannel_token_polls_total", verdict="pending") == 1
    assert value(samples, "backchannel_token_polls_total", verdict="slow_down") == lock_after - 1
    assert value(samples, "backchannel_token_polls_total", verdict="lock") == 1
    assert value(samples, "backchannel_token_polls_total", verdict="locked") == 1
    assert requests(samples, "/token", "5xx", "temporarily_unavailable") == 2


@pytest.fixture
def fatigue_settings(settings: Settings) -> Settings:
    return settings.replace(fatigue_max_pending=2)


async def test_fatigue_refusals_and_pending_counts_are_recorded(
    fatigue_settings: Settings, rp: RegisteredClient, alice: User
) -> None:
    async for running in start_app(fatigue_settings):
        for _ in range(3):
            await start_request(running.http, rp.basic_auth())
        samples = await scrape(running.http)
    assert value(samples, "backchannel_auth_requests_admitted_total") == 2
    # The first found 0 pending requests, the second 1.
    assert value(samples, "backchannel_user_pending_requests_at_admission_sum") == 1
    assert value(samples, "backchannel_fatigue_refusals_total", reason="pending") == 1
    assert value(samples, "backchannel_fatigue_refusals_total", reason="muted") == 0
    assert requests(samples, "/bc-authorize", "4xx", "access_denied") == 1


async def test_policy_decisions_are_counted_by_mode_and_outcome(
    running: RunningApp, rp: RegisteredClient, alice: User, db: asyncpg.Connection
) -> None:
    watch = {"mode": "report-only", "effect": "deny", "when": {"users": ["alice"]}}
    no_email = {"mode": "enforce", "effect": "deny", "when": {"scopes_any": ["email"]}}
    await add_rule(db, parse_rule({"name": "watch-alice", **watch}))
    await add_rule(db, parse_rule({"name": "no-email", **no_email}))
    for _ in range(200):  # the app hears about new rules by notification
        if len((await running.services.policy.current()).rules) == 2:
            break
        await asyncio.sleep(0.01)
    assert (await start_request(running.http, rp.basic_auth())).status_code == 200
    refused = await start_request(running.http, rp.basic_auth(), scope="openid email")
    assert refused.status_code == 403
    samples = await scrape(running.http)
    decisions = "backchannel_policy_decisions_total"
    assert value(samples, decisions, mode="enforce", outcome="allow") == 1
    assert value(samples, decisions, mode="enforce", outcome="deny") == 1
    assert value(samples, decisions, mode="report_only", outcome="would_deny") == 1


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    async with run_push_service() as service:
        yield service


async def test_push_delivery_latency_and_failures_are_recorded(
    settings: Settings,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
    push_service: LocalPushService,
) -> None:
    vapid = await ensure_vapid_key(db)
    for behaviour in ("normal", "gone"):
        subscription = push_service.subscribe(behaviour, server_key=vapid.public_key)
        await insert_device(db, alice.user_id, subscription, vapid_kid=vapid.kid)
    push_settings = settings.replace(push_allow_loopback=True, push_timeout=2.0)
    async for running in start_app(push_settings):
        await start_auth_req_id(running.http, rp.basic_auth())
        deadline = time.monotonic() + 10
        while True:
            samples = await scrape(running.http)
            delivered = value(samples, "backchannel_push_delivery_seconds_count", kind="prompt")
            gone = value(samples, "backchannel_push_failures_total", kind="prompt", reason="gone")
            if (delivered, gone) == (1, 1) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert (delivered, gone) == (1, 1)
    assert 0 <= value(samples, "backchannel_push_delivery_seconds_sum", kind="prompt") < 10


async def test_metrics_are_refused_to_a_remote_caller_without_a_token(
    running: RunningApp,
) -> None:
    transport = httpx.ASGITransport(app=running.app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as remote:
        response = await remote.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    assert "backchannel_" not in response.text


@pytest.fixture
def token_settings(settings: Settings) -> Settings:
    return settings.replace(metrics_token=METRICS_TOKEN)


async def test_metrics_need_the_bearer_token_when_one_is_set(token_settings: Settings) -> None:
    async for running in start_app(token_settings):
        transport = httpx.ASGITransport(app=running.app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as remote:
            allowed = await remote.get(
                "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
            wrong = await remote.get("/metrics", headers={"Authorization": "Bearer nope"})
            missing = await remote.get("/metrics")
        # With a token set, loopback alone is not enough.
        local = await running.http.get("/metrics")
    assert allowed.status_code == 200
    assert "backchannel_http_requests_total" in allowed.text
    for refused in (wrong, missing, local):
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'


async def test_two_apps_in_one_process_keep_separate_registries(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    transport = httpx.ASGITransport(app=first)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        for _ in range(3):
            assert (await http.get("/no-such-page")).status_code == 404
    labels = {"route": "unmatched", "status": "4xx", "outcome": "not_found"}
    name = "backchannel_http_requests_total"
    first_metrics: Metrics = first.metrics  # type: ignore[attr-defined]
    second_metrics: Metrics = second.metrics  # type: ignore[attr-defined]
    assert first_metrics.registry is not second_metrics.registry
    assert first_metrics.registry.get_sample_value(name, labels) == 3
    assert second_metrics.registry.get_sample_value(name, labels) is None
