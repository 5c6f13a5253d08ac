"""The pending list, decisions signed on the phone, and the phone's history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.errors import RequestNotPending
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp, start_app
from tests.support import factories
from tests.support.ciba import (
    audit_events,
    decide,
    poll,
    rewind,
    start_auth_req_id,
    start_request,
)
from tests.support.device import Phone, enrolled_phone, ref_of, shown
from tests.support.waiting import eventually

DECISION = "/device/decision"


@pytest.fixture
async def relaxed_http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app without push-fatigue caps or "not me" mutes, for many requests of one user."""
    relaxed = settings.replace(fatigue_max_pending=0, fatigue_max_prompts=0, not_me_mute=0)
    async for running in start_app(relaxed):
        yield running.http


async def _bob(db: asyncpg.Connection) -> User:
    return await factories.create_user(
        db, subject="bob", email="bob@example.com", display_name="Bob Example"
    )


async def _pending_entry(http: httpx.AsyncClient, phone: Phone, auth_req_id: str) -> dict[str, Any]:
    [entry] = [e for e in await phone.pending(http) if e["ref"] == ref_of(auth_req_id)]
    return entry


async def test_pending_list_shows_exactly_the_users_pending_unexpired_requests(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    bank: RegisteredClient = await make_client(name="Example Bank")
    await _bob(db)
    phone = await enrolled_phone(http, db, alice.user_id)
    first = await start_auth_req_id(
        http, rp.basic_auth(), scope="openid email", binding_message="Order 42: 3 flat whites"
    )
    second = await start_auth_req_id(http, bank.basic_auth())
    decided = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, decided, "denied")
    expired = await start_auth_req_id(http, rp.basic_auth())
    await rewind(db, expired, 301)
    await start_auth_req_id(http, rp.basic_auth(), login_hint="bob@example.com")

    response = await phone.call(http, "/device/requests")
    assert response.status_code == 200
    entries = response.json()["requests"]
    assert [e["ref"] for e in entries] == [ref_of(first), ref_of(second)]
    one, two = entries
    assert set(one) == {
        "ref",
        "client_id",
        "client_name",
        "binding_message",
        "scope",
        "created_at",
        "expires_at",
        "expires_in",
        "challenge",
        "user_verification",
    }
    assert one["client_id"] == rp.client_id
    assert one["user_verification"] == "none"
    assert one["client_name"] == "Acme Coffee"
    assert one["binding_message"] == "Order 42: 3 flat whites"
    assert one["scope"] == ["openid", "email"]
    assert 295 <= one["expires_in"] <= 300
    assert one["expires_at"].endswith("Z") and one["created_at"].endswith("Z")
    created = datetime.fromisoformat(one["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(one["expires_at"].replace("Z", "+00:00"))
    assert 299 <= (expires - created).total_seconds() <= 301
    assert isinstance(one["challenge"], str) and len(one["challenge"]) >= 16
    assert two["client_name"] == "Example Bank"
    assert two["binding_message"] is None
    assert two["challenge"] != one["challenge"]
    # The auth_req_id itself never reaches the phone.
    assert first not in response.text and second not in response.text


async def test_pending_list_gives_a_challenge_to_a_request_without_one(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await db.execute("UPDATE auth_requests SET device_challenge = NULL")
    entry = await _pending_entry(http, phone, auth_req_id)
    assert entry["challenge"]
    assert (await _pending_entry(http, phone, auth_req_id))["challenge"] == entry["challenge"]
    assert (await phone.decide(http, entry, "approve")).status_code == 200


async def test_approval_on_the_phone_gives_the_relying_party_its_tokens(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message="Pay 80 EUR")
    pending = await poll(http, rp.basic_auth(), auth_req_id)
    assert pending.json()["error"] == "authorization_pending"
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 200, response.text
    assert response.json() == {"ref": ref_of(auth_req_id), "status": "approved"}
    await rewind(db, auth_req_id, 6)  # past the poll interval
    tokens = await poll(http, rp.basic_auth(), auth_req_id)
    assert tokens.status_code == 200, tokens.text
    assert {"access_token", "id_token"} <= set(tokens.json())
    row = await db.fetchrow("SELECT status, decided_by_device FROM auth_requests")
    assert row["decided_by_device"] == phone.device_id
    [event] = await audit_events(db, "auth_request_decided")
    assert event["device_id"] == phone.device_id
    assert event["detail"]["decision"] == "approved"
    assert await phone.pending(http) == []


async def test_a_phones_decision_reads_its_request_with_the_calls_jti_statement(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The statement that spends the call's jti also reads the request the call names:
    the decision needs no statement of its own to look it up."""
    from backchannel.authenticator import decisions

    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message="Pay 80 EUR")
    entry = await _pending_entry(http, phone, auth_req_id)

    async def read_again(*_: object) -> None:
        raise AssertionError("the decision looked its request up again")

    monkeypatch.setattr(decisions, "select_decision_target", read_again)
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 200, response.text
    assert await db.fetchval("SELECT status FROM auth_requests") == "approved"


async def test_a_held_long_poll_is_answered_by_the_phones_approval(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    held = asyncio.create_task(poll(http, rp.basic_auth(), auth_req_id, {"Prefer": "wait=25"}))

    async def holding() -> bool:
        polled = await db.fetchval("SELECT poll_count FROM auth_requests")
        return bool(polled == 1) and running.services.waiters.held == 1

    await eventually(holding)
    assert (await phone.decide(http, entry, "approve")).status_code == 200
    # Long before the 25 s wait ends: the approval woke it.
    response = await asyncio.wait_for(held, 12)
    assert response.status_code == 200, response.text


async def test_denial_on_the_phone_answers_access_denied(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "deny")
    assert response.json() == {"ref": ref_of(auth_req_id), "status": "denied"}
    polled = await poll(http, rp.basic_auth(), auth_req_id)
    assert polled.status_code == 400
    assert polled.json() == {
        "error": "access_denied",
        "error_description": "the request was denied",
    }
    assert await db.fetchval("SELECT denial_reason FROM auth_requests") == "user"


async def test_not_me_denies_and_is_audited_as_a_report(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "not_me")
    assert response.json() == {"ref": ref_of(auth_req_id), "status": "denied"}
    polled = await poll(http, rp.basic_auth(), auth_req_id)
    # The relying party can tell the report from a plain denial (docs/relying-parties.md).
    assert polled.status_code == 400
    assert polled.json() == {
        "error": "access_denied",
        "error_description": "the user reported this request as not theirs",
    }
    assert await db.fetchval("SELECT denial_reason FROM auth_requests") == "not_me"
    [event] = await audit_events(db, "auth_request_decided")
    assert event["detail"]["reason"] == "not_me"
    assert event["detail"]["reported"] is True
    assert event["device_id"] == phone.device_id


async def test_not_me_pauses_the_users_prompts_as_configured(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    assert (await phone.decide(http, entry, "not_me")).status_code == 200
    refused = await start_request(http, rp.basic_auth())
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "access_denied"


async def test_not_me_mute_follows_the_settings(
    relaxed_http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = relaxed_http
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    assert (await phone.decide(http, entry, "not_me")).status_code == 200
    assert (await start_request(http, rp.basic_auth())).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"binding_message": "Pay 8000 EUR"},
        {"binding_message": None},
        {"client_name": "Example Bank"},
        {"scope": ["openid", "email", "phone"]},
        {"scope": ["email", "openid"]},
    ],
)
async def test_a_decision_over_something_else_than_the_request_shows_is_refused(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    change: dict[str, Any],
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(
        http, rp.basic_auth(), scope="openid email", binding_message="Pay 80 EUR"
    )
    entry = await _pending_entry(http, phone, auth_req_id)
    tampered = {**entry, **change}
    response = await phone.decide(http, entry, "approve", shown=_shown(tampered))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert (await poll(http, rp.basic_auth(), auth_req_id)).json()["error"] == (
        "authorization_pending"
    )
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


def _shown(entry: dict[str, Any]) -> str:
    return shown(entry["ref"], entry["client_name"], entry["binding_message"], entry["scope"])


async def test_the_shown_digest_covers_unicode_binding_messages(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    message = 'Zahlung "Café" 80 € 🙂 \\ / 東京'
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message=message)
    entry = await _pending_entry(http, phone, auth_req_id)
    assert entry["binding_message"] == message
    assert (await phone.decide(http, entry, "approve")).status_code == 200


async def test_a_wrong_challenge_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "approve", challenge="guessed")
    assert response.status_code == 400
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


async def test_a_decision_on_another_users_request_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await _bob(db)
    phone = await enrolled_phone(http, db, alice.user_id)
    bobs = await start_auth_req_id(
        http, rp.basic_auth(), login_hint="bob@example.com", binding_message="Bob pays"
    )
    challenge = await db.fetchval("SELECT device_challenge FROM auth_requests")
    entry = {
        "ref": ref_of(bobs),
        "client_name": "Acme Coffee",
        "binding_message": "Bob pays",
        "scope": ["openid"],
        "challenge": challenge,
    }
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


async def test_a_decision_on_an_unknown_request_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    entry = {
        "ref": "ab" * 32,
        "client_name": "x",
        "binding_message": None,
        "scope": ["openid"],
        "challenge": "c",
    }
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 404


async def test_a_second_decision_is_refused_with_conflict(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    assert (await phone.decide(http, entry, "approve")).status_code == 200
    again = await phone.decide(http, entry, "deny")
    assert again.status_code == 409
    assert await db.fetchval("SELECT status FROM auth_requests") == "approved"


async def test_concurrent_decisions_have_one_winner(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    other = await enrolled_phone(http, db, alice.user_id, name="Tablet")
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    responses = await asyncio.gather(
        phone.decide(http, entry, "approve"),
        other.decide(http, entry, "deny"),
        phone.decide(http, entry, "not_me"),
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409]
    assert len(await audit_events(db, "auth_request_decided")) == 1


async def test_a_decision_on_an_expired_request_is_refused_with_conflict(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    await rewind(db, auth_req_id, 301)
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("iat", "exp", "status", "description"),
    [
        (0, 121, 400, "exp must be within 120 seconds after iat"),  # more than two minutes
        (0, 0, 400, "exp must be within 120 seconds after iat"),  # not after iat
        (0, -1, 400, "exp must be within 120 seconds after iat"),
        (-100, -90, 401, "the JWS is stale or from the future (iat)"),  # past
        (0, None, 400, "exp must be a number"),
        (0, "soon", 400, "exp must be a number"),
    ],
)
async def test_a_decision_outside_its_short_lifetime_is_refused(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    iat: int,
    exp: Any,
    status: int,
    description: str,
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    now = int(time.time())
    exp = now + exp if isinstance(exp, int) else exp
    response = await phone.decide(http, entry, "approve", iat=now + iat, exp=exp)
    assert response.status_code == status, response.text
    assert response.json()["error_description"] == description
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


@pytest.mark.parametrize("lifetime", [1, 120])
async def test_a_decision_at_either_end_of_its_allowed_lifetime_is_taken(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    lifetime: int,
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    now = int(time.time())
    response = await phone.decide(http, entry, "approve", iat=now, exp=now + lifetime)
    assert response.status_code == 200, response.text
    assert await db.fetchval("SELECT status FROM auth_requests") == "approved"


@pytest.mark.parametrize(
    "overrides",
    [
        {"ref": None},
        {"ref": "AB" * 32},
        {"ref": "ab" * 31},
        {"ref": 12},
        {"decision": None},
        {"decision": "approved"},
        {"decision": ["approve"]},
        {"decision": {"x": 1}},
        {"shown": None},
        {"shown": 5},
        {"challenge": None},
        {"challenge": ""},
        {"challenge": "c" * 1000},
    ],
)
async def test_a_malformed_decision_is_refused(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    overrides: dict[str, Any],
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    overrides = dict(overrides)
    decision = overrides.pop("decision", "approve")
    response = await phone.decide(http, entry, decision, **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("ref", [None, 12, "AB" * 32, "ab" * 31, "ab" * 32 + "a"])
async def test_a_ref_other_than_64_lower_case_hex_digits_is_refused_as_such(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    ref: Any,
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "approve", ref=ref)
    assert response.status_code == 400, response.text
    assert response.json()["error_description"] == "ref must be 64 lower-case hex digits"


NOT_SHOWN = "the decision was made over something the request does not show"


@pytest.mark.parametrize(
    ("field", "value", "description"),
    [
        ("shown", "", "shown and challenge are required"),
        ("challenge", "", "shown and challenge are required"),
        ("shown", "s" * 257, "shown and challenge are required"),
        ("challenge", "c" * 257, "shown and challenge are required"),
        # 256 characters pass the length check and fail only the comparison.
        ("challenge", "c" * 256, "the challenge does not match the request"),
        ("shown", "s" * 256, NOT_SHOWN),
    ],
)
async def test_shown_and_challenge_are_one_to_256_characters(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    field: str,
    value: str,
    description: str,
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await _pending_entry(http, phone, auth_req_id)
    response = await phone.decide(http, entry, "approve", **{field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error_description"] == description
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


async def test_history_lists_this_devices_decisions_newest_first(
    relaxed_http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = relaxed_http
    phone = await enrolled_phone(http, db, alice.user_id)
    other = await enrolled_phone(http, db, alice.user_id, name="Tablet")
    ids = [
        await start_auth_req_id(http, rp.basic_auth(), binding_message=f"Order {n}")
        for n in range(4)
    ]
    for auth_req_id, device, decision in zip(
        ids, [phone, phone, phone, other], ["approve", "deny", "not_me", "approve"], strict=True
    ):
        entry = await _pending_entry(http, device, auth_req_id)
        assert (await device.decide(http, entry, decision)).status_code == 200
    await start_auth_req_id(http, rp.basic_auth())  # undecided: not in the history
    await rewind(db, ids[0], 6)  # past the poll interval
    assert (await poll(http, rp.basic_auth(), ids[0])).status_code == 200  # redeemed

    response = await phone.call(http, "/device/history")
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert [(d["ref"], d["decision"]) for d in decisions] == [
        (ref_of(ids[2]), "not_me"),
        (ref_of(ids[1]), "deny"),
        (ref_of(ids[0]), "approve"),
    ]
    assert decisions[0]["client_name"] == "Acme Coffee"
    assert decisions[0]["binding_message"] == "Order 2"
    assert decisions[0]["decided_at"].endswith("Z")
    other_history = (await other.call(http, "/device/history")).json()["decisions"]
    assert [d["ref"] for d in other_history] == [ref_of(ids[3])]


async def test_history_holds_at_most_twenty_decisions(
    relaxed_http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = relaxed_http
    phone = await enrolled_phone(http, db, alice.user_id)
    for _ in range(22):
        auth_req_id = await start_auth_req_id(http, rp.basic_auth())
        await decide(db, auth_req_id, "denied", device_id=phone.device_id)
    decisions = (await phone.call(http, "/device/history")).json()["decisions"]
    assert len(decisions) == 20


async def test_phone_approval_leaves_a_receipt_the_relying_party_can_verify(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    from backchannel.authenticator.receipts import verify_receipt

    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(
        http, rp.basic_auth(), binding_message="Pay 80 EUR at Acme Coffee?"
    )
    entry = await _pending_entry(http, phone, auth_req_id)
    assert (await phone.decide(http, entry, "approve")).status_code == 200

    response = await http.post(
        "/receipts", data={"auth_req_id": auth_req_id}, headers=rp.basic_auth()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/jwt")
    jwks = (await http.get("/jwks")).json()
    claims = verify_receipt(response.text, jwks, auth_req_id=auth_req_id)
    assert claims["decision"] == "approve"
    assert claims["shown"]["binding_message"] == "Pay 80 EUR at Acme Coffee?"
    assert claims["device"]["device_id"] == phone.device_id
    assert claims["device_jws"].count(".") == 2


async def test_a_decision_that_comes_too_late_says_how_the_request_ended(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    """The one decision path names the state a request left ``pending`` for."""

    async def refusal(auth_req_id: str) -> str:
        with pytest.raises(RequestNotPending) as refused:
            await decide(db, auth_req_id, "denied")
        return refused.value.state

    approved = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, approved, "approved")
    assert await refusal(approved) == "already approved"

    denied = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, denied, "denied")
    assert await refusal(denied) == "already denied"

    redeemed = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, redeemed, "approved")
    await rewind(db, redeemed, 6)  # past the poll interval
    assert (await poll(http, rp.basic_auth(), redeemed)).status_code == 200
    assert await refusal(redeemed) == "already used"

    expired = await start_auth_req_id(http, rp.basic_auth())
    await rewind(db, expired, 301)
    assert await refusal(expired) == "expired"

    assert await refusal("never-issued") == "unknown"
