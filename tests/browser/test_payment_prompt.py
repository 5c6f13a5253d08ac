"""A payment (RFC 9396 authorization_details) on the phone: the app shows amount, payee,
account and reference as the bank sent them, digests them as the server does, and an
approval gives the bank tokens for exactly that payment."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import expect

from backchannel.authenticator.messages import shown_digest, uv_challenge
from backchannel.db.users import User
from tests.browser.conftest import AppPhone, Server, eventually
from tests.conftest import RegisteredClient
from tests.support.ciba import poll, start_auth_req_id
from tests.support.device import ref_of

pytestmark = pytest.mark.browser

PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"currency": "EUR", "amount": "1250.00"},
    "creditorName": "Acme Coffee Roasters GmbH",
    "creditorAccount": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
    "remittanceInformationUnstructured": "Invoice 2026-4711",
}
LARGE_PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def bank(
    server: Server, make_client: Any, db: asyncpg.Connection
) -> AsyncIterator[httpx.AsyncClient]:
    await db.execute(
        """INSERT INTO authorization_detail_types (type, schema)
           VALUES ('loyalty_redemption', '{"type": "object"}')"""
    )
    client: RegisteredClient = await make_client(
        name="Example Bank",
        authorization_details_types=("payment_initiation", "loyalty_redemption"),
    )
    async with httpx.AsyncClient(base_url=server.url, headers=client.basic_auth()) as http:
        yield http


async def start_payment(bank: httpx.AsyncClient, details: list[dict[str, Any]]) -> str:
    return await start_auth_req_id(
        bank,
        {},
        scope="openid",
        binding_message="Card payment at the till",
        authorization_details=json.dumps(details),
    )


DETAIL_CASES: list[list[dict[str, Any]]] = [
    [PAYMENT],
    # Keys the two sorts could disagree on: UTF-16 order puts an astral character
    # (a surrogate pair, 0xD83D...) before U+FF21; code-point order would not.
    [{"type": "t", "\uff21": 1, "\U0001f600": 2, "é": True, "Z": None, "a": [-3, 0]}],
    [{"type": "t", "text": 'quote " back \\ tab \t newline \n nbsp \u00a0 東京 🇬🇧'}],
    [{"type": "t", "big": 2**53 - 1, "negative": -(2**53 - 1)}, {"type": "u", "nested": {"b": {}}}],
]


async def test_the_apps_digests_over_details_match_the_servers(phone: AppPhone) -> None:
    await phone.open()
    requests = [
        {
            "ref": "ef" * 32,
            "client_id": "bank",
            "client_name": "Example Bank",
            "binding_message": "Card payment",
            "scope": ["openid"],
            "challenge": "n0nce",
            "authorization_details": details,
        }
        for details in DETAIL_CASES
    ]
    digests = await phone.page.evaluate(
        """async (requests) => {
            const { shownDigest, uvChallenge } = await import("./digest.js");
            return Promise.all(requests.map(async (request) => [
                await shownDigest(request),
                Array.from(await uvChallenge(request)),
            ]));
        }""",
        requests,
    )
    expected = [
        [
            shown_digest(r["ref"], r["client_name"], r["binding_message"], r["scope"], details),
            list(
                uv_challenge(
                    ref=r["ref"],
                    client_id=r["client_id"],
                    client_name=r["client_name"],
                    binding_message=r["binding_message"],
                    scope=r["scope"],
                    authorization_details=details,
                    nonce=r["challenge"],
                )
            ),
        ]
        for r, details in zip(requests, DETAIL_CASES, strict=True)
    ]
    assert digests == expected


async def test_a_payment_is_shown_as_sent_and_its_approval_gives_the_bank_that_payment(
    phone: AppPhone, enrol_url: str, bank: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start_payment(bank, [PAYMENT])
    ref = ref_of(auth_req_id)

    prompt = await phone.receive("prompt", ref)
    assert prompt["authorization_details"] == [PAYMENT]
    [notification] = await eventually(phone.notifications)
    assert notification["body"] == (
        "Pay 1\u2009250.00 EUR to Acme Coffee Roasters GmbH\nCard payment at the till"
    )
    assert notification["actions"] == ["deny", "not_me"]

    page = phone.page
    await page.set_viewport_size(LARGE_PHONE)
    await phone.open()
    await expect(page.locator(".requests .detail-summary")).to_have_text(
        "Pay 1\u2009250.00 EUR to Acme Coffee Roasters GmbH"
    )
    await phone.open(f"#request={ref}")
    card = page.locator(".approval .detail.payment")
    await expect(card.locator(".amount")).to_have_text("1\u2009250.00 EUR")
    await expect(card.locator(".payee")).to_have_text("Acme Coffee Roasters GmbH")
    # Only the first and last four characters of the IBAN are shown (the digest and the
    # approval still cover the full details: the bank gets exactly PAYMENT below).
    account = card.locator(".account")
    await expect(account).to_have_text("DE89 •••• •••• •••• ••30 00")
    await expect(account).to_have_attribute("aria-label", "IBAN starting DE89, ending 3000")
    text = await page.locator("main").inner_text()
    assert "0532" not in text and "3704" not in text
    await expect(card.locator(".reference")).to_have_text("Invoice 2026-4711")
    for part in (".amount", ".payee", ".account", ".reference"):
        await expect(card.locator(part)).to_be_in_viewport()
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, "the card must fit the phone's width"
    await phone.screenshot("payment-390x844.png")
    await page.emulate_media(color_scheme="dark")
    await phone.screenshot("payment-dark-390x844.png")
    await page.emulate_media(color_scheme="light")

    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    tokens = await poll(bank, {}, auth_req_id)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["authorization_details"] == [PAYMENT]


async def test_details_too_large_for_the_push_are_read_in_the_app_and_not_refused_blind(
    phone: AppPhone, enrol_url: str, bank: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    many = [
        {
            **PAYMENT,
            "creditorName": f"Supplier {n} " + "y" * 120,
            "remittanceInformationUnstructured": f"Invoice {n}: " + "x" * 120,
        }
        for n in range(8)
    ]
    auth_req_id = await start_payment(bank, many)
    ref = ref_of(auth_req_id)
    prompt = await phone.receive("prompt", ref)
    assert prompt["authorization_details_omitted"] is True
    [notification] = await eventually(phone.notifications)
    assert notification["body"].startswith("Open the app to see the details.")
    # No Deny from the notification: a decision covers details the worker has not got.
    assert notification["actions"] == []

    await phone.open(f"#request={ref}")
    await expect(phone.page.locator(".approval .detail.payment")).to_have_count(8)
    await phone.page.get_by_role("button", name="Deny", exact=True).click()
    await expect(phone.page.get_by_role("heading", name="Denied", exact=True)).to_be_visible()
    assert (await poll(bank, {}, auth_req_id)).json()["error"] == "access_denied"


async def test_an_operators_own_type_is_shown_field_by_field(
    phone: AppPhone, enrol_url: str, bank: httpx.AsyncClient, alice: User
) -> None:
    await phone.enrol(enrol_url)
    redemption = {
        "type": "loyalty_redemption",
        "points": 500,
        "reward": {"name": "Free flat white"},
    }
    auth_req_id = await start_payment(bank, [redemption])
    await phone.open(f"#request={ref_of(auth_req_id)}")
    card = phone.page.locator(".approval .detail.other")
    await expect(card.locator(".eyebrow")).to_have_text("loyalty_redemption")
    await expect(card.locator("dt")).to_have_text(["points", "reward › name"])
    await expect(card.locator("dd")).to_have_text(["500", "Free flat white"])
    await phone.page.get_by_role("button", name="Approve").click()
    await expect(phone.page.get_by_role("heading", name="Approved")).to_be_visible()
    tokens = await poll(bank, {}, auth_req_id)
    assert tokens.json()["authorization_details"] == [redemption]
