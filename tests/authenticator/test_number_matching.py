"""Number matching: approval needs the number the relying party shows."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.authenticator.number_matching import CHOICES, new_number_match
from backchannel.db.users import User
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, poll, start_request
from tests.support.device import Phone, enrolled_phone, ref_of


@pytest.fixture
async def matching_rp(make_client: Any) -> RegisteredClient:
    client: RegisteredClient = await make_client(name="Acme Coffee", number_matching=True)
    return client


async def _start(http: httpx.AsyncClient, rp: RegisteredClient) -> tuple[str, str]:
    response = await start_request(http, rp.basic_auth(), binding_message="Pay 80 EUR?")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["auth_req_id"], body["number_match"]


async def _entry(http: httpx.AsyncClient, phone: Phone, auth_req_id: str) -> dict[str, Any]:
    [entry] = [e for e in await phone.pending(http) if e["ref"] == ref_of(auth_req_id)]
    return entry


def test_choices_are_distinct_two_digit_numbers_including_the_right_one() -> None:
    for _ in range(200):
        numbers = new_number_match()
        assert len(set(numbers.choices)) == CHOICES
        assert numbers.number in numbers.choices
        assert all(len(c) == 2 and c.isdigit() for c in numbers.choices)


async def test_the_relying_party_gets_the_number_and_the_phone_only_the_choices(
    http: httpx.AsyncClient, db: asyncpg.Connection, matching_rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id, number = await _start(http, matching_rp)
    entry = await _entry(http, phone, auth_req_id)
    assert number in entry["number_choices"]
    assert len(entry["number_choices"]) == CHOICES
    prompt = await db.fetchval("SELECT payload FROM push_outbox WHERE kind = 'prompt'")
    assert prompt is None or prompt["number_choices"] == entry["number_choices"]


async def test_picking_the_right_number_approves(
    http: httpx.AsyncClient, db: asyncpg.Connection, matching_rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id, number = await _start(http, matching_rp)
    entry = await _entry(http, phone, auth_req_id)
    decided = await phone.decide(http, entry, "approve", number=number)
    assert decided.json()["status"] == "approved"
    tokens = await poll(http, matching_rp.basic_auth(), auth_req_id)
    assert tokens.status_code == 200, tokens.text


async def test_a_wrong_pick_denies_and_is_audited(
    http: httpx.AsyncClient, db: asyncpg.Connection, matching_rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id, number = await _start(http, matching_rp)
    entry = await _entry(http, phone, auth_req_id)
    wrong = next(c for c in entry["number_choices"] if c != number)
    decided = await phone.decide(http, entry, "approve", number=wrong)
    assert decided.status_code == 200
    assert decided.json()["status"] == "denied"
    answer = await poll(http, matching_rp.basic_auth(), auth_req_id)
    assert answer.json()["error"] == "access_denied"
    [failed] = await audit_events(db, "number_match_failed")
    assert failed["client_id"] == matching_rp.client_id
    assert failed["device_id"] == phone.device_id
    assert await db.fetchval("SELECT denial_reason FROM auth_requests") == "number_mismatch"


async def test_approving_without_a_number_is_refused_and_the_request_stays_pending(
    http: httpx.AsyncClient, db: asyncpg.Connection, matching_rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id, _number = await _start(http, matching_rp)
    entry = await _entry(http, phone, auth_req_id)
    refused = await phone.decide(http, entry, "approve")
    assert refused.status_code == 400
    assert await db.fetchval("SELECT status FROM auth_requests") == "pending"


async def test_deny_needs_no_number(
    http: httpx.AsyncClient, db: asyncpg.Connection, matching_rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    auth_req_id, _number = await _start(http, matching_rp)
    entry = await _entry(http, phone, auth_req_id)
    assert (await phone.decide(http, entry, "deny")).json()["status"] == "denied"


async def test_clients_without_number_matching_get_no_number(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    phone = await enrolled_phone(http, db, alice.user_id)
    response = await start_request(http, rp.basic_auth())
    assert "number_match" not in response.json()
    entry = await _entry(http, phone, response.json()["auth_req_id"])
    assert "number_choices" not in entry
