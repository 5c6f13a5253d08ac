"""A payment approved on the phone (RFC 9396 authorization_details): what the bank sends
is what the phone shows, what the user's decision covers, what the receipt proves and
what the tokens carry; one character changed anywhere between breaks the approval."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.authenticator.messages import PUSH_PAYLOAD_BUDGET
from backchannel.db.users import User
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from tests.conftest import ISSUER, RegisteredClient, RunningApp
from tests.support.ciba import audit_events, poll, start_request
from tests.support.device import Phone, enrolled_phone, ref_of
from tests.support.payments import PAYMENT
from tests.support.user_verification import rules_in_force


@pytest.fixture
async def bank(make_client: Any) -> RegisteredClient:
    registered: RegisteredClient = await make_client(
        name="Example Bank", authorization_details_types=("payment_initiation",)
    )
    return registered


async def start_payment(
    http: httpx.AsyncClient, client: RegisteredClient, details: Any = None, **params: Any
) -> httpx.Response:
    text = json.dumps([PAYMENT] if details is None else details)
    return await start_request(
        http,
        client.basic_auth(),
        scope="openid offline_access",
        binding_message="Pay 80 EUR at Acme Coffee",
        authorization_details=text,
        **params,
    )


async def pending_entry(http: httpx.AsyncClient, phone: Phone, auth_req_id: str) -> dict[str, Any]:
    [entry] = [e for e in await phone.pending(http) if e["ref"] == ref_of(auth_req_id)]
    return entry


def claims_of(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


async def test_an_approved_payment_reaches_the_bank_with_exactly_the_details_the_user_saw(
    running: RunningApp, db: asyncpg.Connection, bank: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await enrolled_phone(http, db, alice.user_id)
    started = await start_payment(http, bank)
    assert started.status_code == 200, started.text
    auth_req_id = started.json()["auth_req_id"]

    # The phone is told the payment in its push and in its pending list.
    [prompt] = await db.fetch("SELECT payload FROM push_outbox WHERE kind = 'prompt'")
    assert prompt["payload"]["authorization_details"] == [PAYMENT]
    entry = await pending_entry(http, phone, auth_req_id)
    assert entry["authorization_details"] == [PAYMENT]

    decided = await phone.decide(http, entry, "approve")
    assert decided.status_code == 200, decided.text
    tokens = await poll(http, bank.basic_auth(), auth_req_id)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["authorization_details"] == [PAYMENT]
    # A payment is approved once: no refresh token outlives it, offline_access or not.
    assert "refresh_token" not in body
    assert claims_of(body["access_token"])["authorization_details"] == [PAYMENT]

    introspected = await http.post(
        "/introspect", data={"token": body["access_token"]}, headers=bank.basic_auth()
    )
    assert introspected.json()["active"] is True
    assert introspected.json()["authorization_details"] == [PAYMENT]

    receipt = await http.post(
        "/receipts", data={"auth_req_id": auth_req_id}, headers=bank.basic_auth()
    )
    assert receipt.status_code == 200, receipt.text
    shown = claims_of(receipt.text)["shown"]
    assert shown["authorization_details"] == [PAYMENT]
    device_claims = claims_of(claims_of(receipt.text)["device_jws"])
    assert device_claims["shown"] == shown["digest"]

    [requested] = await audit_events(db, "auth_request_issued")
    assert requested["detail"]["authorization_details"] == [PAYMENT]


@pytest.mark.parametrize(
    "change",
    [
        ("instructedAmount", "amount", "80.01"),
        ("instructedAmount", "currency", "GBP"),
        ("creditorName", None, "Acme Coffeee"),
        ("creditorAccount", "iban", "GB82WEST12345698765432"),
        ("remittanceInformationUnstructured", None, "Order 4712"),
    ],
)
async def test_a_decision_over_a_payment_other_than_the_requested_one_is_refused(
    running: RunningApp,
    db: asyncpg.Connection,
    bank: RegisteredClient,
    alice: User,
    change: tuple[str, str | None, str],
) -> None:
    http = running.http
    phone = await enrolled_phone(http, db, alice.user_id)
    started = await start_payment(http, bank)
    auth_req_id = started.json()["auth_req_id"]
    entry = await pending_entry(http, phone, auth_req_id)

    field, inner, value = change
    altered = copy.deepcopy(entry)
    [payment] = altered["authorization_details"]
    if inner is None:
        payment[field] = value
    else:
        payment[field][inner] = value
    refused = await phone.decide(
        http, entry, "approve", shown=phone.decision(altered, "approve")["shown"]
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    # The digest without the details (what an app unaware of them would sign) fails too.
    without = {k: v for k, v in entry.items() if k != "authorization_details"}
    bare = await phone.decide(
        http, entry, "approve", shown=phone.decision(without, "approve")["shown"]
    )
    assert bare.status_code == 400

    # Still pending: the genuine decision goes through.
    assert (await phone.decide(http, entry, "approve")).status_code == 200


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ([{**PAYMENT, "creditorAccount": {"iban": "DE89370400440532013001"}}], "check digits"),
        ([{**PAYMENT, "instructedAmount": {"currency": "EUR", "amount": 80.0}}], "amount"),
        ([{**PAYMENT, "creditorName": "Acme\u202eeeffoC"}], "displayed"),
        ([{**PAYMENT, "type": "account_information"}], "not allowed"),
        ([], "non-empty"),
        ({"type": "payment_initiation"}, "array"),
    ],
)
async def test_a_payment_the_phone_could_not_show_faithfully_is_refused_before_anything_is_stored(
    running: RunningApp,
    db: asyncpg.Connection,
    bank: RegisteredClient,
    alice: User,
    details: Any,
    reason: str,
) -> None:
    refused = await start_payment(running.http, bank, details)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_authorization_details"
    assert reason in refused.json()["error_description"]
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 0


async def test_a_client_not_registered_for_payments_cannot_send_one(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    refused = await start_payment(running.http, rp)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_authorization_details"


async def test_numbers_are_integers_a_browser_holds_exactly(
    running: RunningApp, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    """The phone digests the details as canonical JSON; JavaScript and Python write a
    fraction differently and lose integers past 2^53, so neither is accepted."""
    schema = {
        "type": "object",
        "required": ["type", "points"],
        "properties": {"type": {"const": "loyalty"}, "points": {"type": "number"}},
        "additionalProperties": False,
    }
    await db.execute(
        "INSERT INTO authorization_detail_types (type, schema) VALUES ('loyalty', $1)", schema
    )
    shop: RegisteredClient = await make_client(authorization_details_types=("loyalty",))
    for points, accepted in [(500, True), (2**53 - 1, True), (2**53, False), ("1.5", False)]:
        details = f'[{{"type":"loyalty","points":{points}}}]'
        answer = await start_request(running.http, shop.basic_auth(), authorization_details=details)
        assert (answer.status_code == 200) is accepted, (points, answer.text)


async def test_details_too_large_for_a_push_are_left_for_the_app_to_fetch(
    running: RunningApp, db: asyncpg.Connection, bank: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await enrolled_phone(http, db, alice.user_id)
    many = [
        {
            **PAYMENT,
            "creditorName": "Acme Coffee Roasters " + "y" * 110,
            "remittanceInformationUnstructured": f"Invoice {n}: " + "x" * 120,
        }
        for n in range(8)
    ]
    assert len(json.dumps(many)) > PUSH_PAYLOAD_BUDGET
    started = await start_payment(http, bank, many)
    assert started.status_code == 200, started.text

    [prompt] = await db.fetch("SELECT payload FROM push_outbox WHERE kind = 'prompt'")
    payload = prompt["payload"]
    assert "authorization_details" not in payload
    assert payload["authorization_details_omitted"] is True
    entry = await pending_entry(http, phone, started.json()["auth_req_id"])
    assert entry["authorization_details"] == many
    assert (await phone.decide(http, entry, "approve")).status_code == 200


async def test_discovery_lists_the_built_in_and_the_operators_types(
    running: RunningApp, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO authorization_detail_types (type, schema) VALUES ('loyalty', '{}')"
    )
    metadata = (await running.http.get("/.well-known/openid-configuration")).json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_details_types_supported"] == ["payment_initiation", "loyalty"]


async def test_a_payment_over_the_policy_amount_needs_the_users_fingerprint_face_or_pin(
    running: RunningApp, db: asyncpg.Connection, bank: RegisteredClient, alice: User
) -> None:
    await add_rule(
        db,
        parse_rule(
            {
                "name": "payments-over-50-eur",
                "effect": "require-uv",
                "mode": "enforce",
                "when": {"amount_over": {"currency": "EUR", "value": "50.00"}},
            }
        ),
    )
    await rules_in_force(running, "payments-over-50-eur")
    small = {**PAYMENT, "instructedAmount": {"currency": "EUR", "amount": "50.00"}}
    foreign = {**PAYMENT, "instructedAmount": {"currency": "GBP", "amount": "900.00"}}
    for details in ([PAYMENT], [small], [foreign]):
        started = await start_payment(running.http, bank, details)
        assert started.status_code == 200, started.text
    rows = await db.fetch("SELECT user_verification FROM auth_requests ORDER BY id")
    assert [r["user_verification"] for r in rows] == ["required", None, None]
    [issued, *_] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["policy"]["require_uv"] == ["payments-over-50-eur"]
