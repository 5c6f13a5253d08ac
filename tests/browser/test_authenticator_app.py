"""The authenticator PWA in headless Chromium: enrolment, prompts, decisions, dismissal.

The relying party speaks to the real server over HTTP (client_secret_basic);
pushes go through the real outbox worker, VAPID and RFC 8291 encryption to a
local push service, and reach the service worker through CDP; the phone is
the real app in a 360x740 viewport. CDP cannot click a notification: a test
either opens the approval page at the URL a tap opens, or runs the worker's
``notificationclick`` handler from inside the worker (``click_notification``).
Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import expect

from backchannel.authenticator.enrolment import issue_enrolment_code
from backchannel.authenticator.messages import shown_digest
from backchannel.db.users import User
from backchannel.delivery.vapid import rotate_vapid_key
from backchannel.oauth.secrets import hash_secret
from tests.browser.conftest import AppPhone, Server, eventually
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, poll, start_auth_req_id, start_request
from tests.support.device import Phone, ref_of

pytestmark = pytest.mark.browser

BINDING_MESSAGE = "Pay 80 EUR at Acme Coffee ☕ 東京店"
TIME_LEFT = re.compile(r"^\d+:\d\d left$")


@pytest.fixture
async def relying_party(server: Server, rp: RegisteredClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=rp.basic_auth()) as http:
        yield http


async def start(relying_party: httpx.AsyncClient, **params: str) -> str:
    form = {"scope": "openid email profile", "binding_message": BINDING_MESSAGE, **params}
    return await start_auth_req_id(relying_party, {}, **form)


async def _no_notifications(phone: AppPhone) -> bool:
    return not await phone.notifications()


async def _notification_count(phone: AppPhone, count: int) -> list[dict[str, object]]:
    shown = await phone.notifications()
    return shown if len(shown) == count else []


async def test_enrolment_makes_the_phone_ready_and_spends_the_link(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    await phone.page.goto(enrol_url)
    # Named after the browser and platform (User-Agent Client Hints in Chromium).
    await expect(phone.page.get_by_label("Name this phone")).to_have_value("Chromium on Linux")
    await phone.screenshot("enrol-360x740.png")
    await phone.enrol(enrol_url)
    await expect(phone.page.locator(".user")).to_have_text("Alice Example")
    assert "#enrol" not in phone.page.url, "the one-time code must leave the address bar"
    device = await db.fetchrow("SELECT * FROM devices")
    assert device is not None
    assert device["name"] == "Alice's phone"
    assert device["push_endpoint"] == phone.subscription.endpoint
    await phone.screenshot("enrolled-360x740.png")
    await phone.page.get_by_role("button", name="Done").click()
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()
    with pytest.raises(AssertionError, match="already been used or has expired"):
        await phone.enrol(enrol_url)


async def test_push_prompt_then_approval_on_the_page_gives_the_relying_party_tokens(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party)
    ref = ref_of(auth_req_id)

    prompt = await phone.receive("prompt", ref)
    assert prompt["client_name"] == "Acme Coffee"
    assert prompt["binding_message"] == BINDING_MESSAGE
    shown = await eventually(phone.notifications)
    assert shown == [
        {
            "title": "Acme Coffee",
            "body": BINDING_MESSAGE,
            "tag": ref,
            "requireInteraction": True,
            # Approval needs the page: the notification can only refuse.
            "actions": ["deny", "not_me"],
            "actionTitles": ["Deny", "This wasn't me"],
        }
    ]

    # What a tap on the notification opens (CDP cannot click notifications).
    await phone.open(f"#request={ref}")
    page = phone.page
    await expect(page.locator(".approval .client")).to_have_text("Acme Coffee")
    await expect(page.locator(".approval .message")).to_have_text(BINDING_MESSAGE)
    await expect(page.locator(".scopes li")).to_have_text(
        ["Confirm it's you", "See your email address", "See your name and profile"]
    )
    left = page.locator(".timer .left")
    await expect(left).to_have_text(TIME_LEFT)
    first = await left.text_content()
    await expect(left).not_to_have_text(first or "", timeout=3000)  # it counts down
    for name in ("Approve", "Deny", "This wasn't me"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_in_viewport()
    await phone.screenshot("approval-360x740.png")
    await page.emulate_media(color_scheme="dark")
    await phone.screenshot("approval-dark-360x740.png")
    await page.emulate_media(color_scheme="light")

    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    await expect(page.locator(".outcome")).to_contain_text("You can go back to Acme Coffee.")
    await phone.screenshot("approved-360x740.png")
    tokens = await poll(relying_party, {}, auth_req_id)
    assert tokens.status_code == 200, tokens.text
    assert {"access_token", "id_token"} <= tokens.json().keys()
    assert await eventually(lambda: _no_notifications(phone)), "the prompt must be closed"


async def test_an_expired_request_is_dismissed_from_the_list_and_the_notifications(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    expiring = await start(relying_party, binding_message="Expires soon")
    staying = await start(relying_party, binding_message="Still waiting")
    for auth_req_id in (expiring, staying):
        await phone.receive("prompt", ref_of(auth_req_id))
    await eventually(lambda: _notification_count(phone, 2))
    await phone.open()
    await expect(phone.page.locator(".requests li")).to_have_count(2)

    await db.execute(
        "UPDATE auth_requests SET expires_at = now() - interval '1 second' WHERE id_hash = $1",
        hash_secret(expiring),
    )
    await phone.receive("dismiss", ref_of(expiring))
    await expect(phone.page.locator(".requests li")).to_have_count(1)
    await expect(phone.page.locator(".requests .message")).to_have_text("Still waiting")
    shown = await eventually(lambda: _notification_count(phone, 1))
    assert [n["tag"] for n in shown] == [ref_of(staying)]


async def test_a_request_decided_on_another_phone_leaves_the_approval_page(
    phone: AppPhone,
    enrol_url: str,
    relying_party: httpx.AsyncClient,
    server: Server,
    db: asyncpg.Connection,
    alice: User,
) -> None:
    await phone.enrol(enrol_url)
    other_code = await issue_enrolment_code(db, alice.user_id, "cli", 600, issuer=server.url)
    tablet = Phone(name="Tablet", issuer=server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await tablet.enrol(http, other_code.code)).status_code == 201
        auth_req_id = await start(relying_party)
        ref = ref_of(auth_req_id)
        await phone.receive("prompt", ref)
        await phone.open(f"#request={ref}")
        await expect(phone.page.get_by_role("button", name="Approve")).to_be_visible()
        [entry] = await tablet.pending(http)
        assert (await tablet.decide(http, entry, "approve")).status_code == 200

    await phone.receive("dismiss", ref)
    await expect(phone.page.locator(".notice")).to_have_text(
        "The request from Acme Coffee is no longer waiting for an answer."
    )
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()
    assert await eventually(lambda: _no_notifications(phone))


async def test_deny_from_the_notification_answers_access_denied_without_the_page(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party)
    ref = ref_of(auth_req_id)
    await phone.receive("prompt", ref)
    await eventually(phone.notifications)
    await phone.click_notification(ref, "deny")

    async def refused() -> bool:
        answer = await poll(relying_party, {}, auth_req_id)
        return answer.status_code == 400 and answer.json()["error"] == "access_denied"

    await eventually(refused)
    decided = await audit_events(db, "auth_request_decided")
    assert [e["detail"]["reason"] for e in decided] == ["user"]
    assert decided[0]["device_id"] == await db.fetchval("SELECT device_id FROM devices")
    assert await eventually(lambda: _no_notifications(phone))


async def test_tapping_the_notification_opens_its_request_in_the_open_app(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    await phone.page.get_by_role("button", name="Done").click()
    auth_req_id = await start(relying_party)
    ref = ref_of(auth_req_id)
    await phone.receive("prompt", ref)
    await expect(phone.page.locator(".requests li")).to_have_count(1)  # the worker told the page
    await eventually(phone.notifications)
    await phone.click_notification(ref)
    await expect(phone.page.locator(".approval .message")).to_have_text(BINDING_MESSAGE)
    assert phone.page.url.endswith(f"#request={ref}")


async def test_number_matching_approves_only_with_the_number_the_relying_party_shows(
    phone: AppPhone, enrol_url: str, server: Server, make_client: Any
) -> None:
    bank: RegisteredClient = await make_client(name="Acme Bank", number_matching=True)
    await phone.enrol(enrol_url)
    page = phone.page
    approve = page.get_by_role("button", name="Approve")
    choices = page.locator(".numbers button")
    async with httpx.AsyncClient(base_url=server.url, headers=bank.basic_auth()) as http:
        wrong_pick = (await start_request(http, {}, binding_message="Pay 80 EUR?")).json()
        await phone.open(f"#request={ref_of(wrong_pick['auth_req_id'])}")
        await expect(choices).to_have_count(3)
        await expect(approve).to_be_disabled()
        numbers = await choices.all_text_contents()
        assert wrong_pick["number_match"] in numbers
        wrong = next(n for n in numbers if n != wrong_pick["number_match"])
        await choices.filter(has_text=wrong).click()
        await approve.click()
        await expect(page.get_by_role("heading", name="Not approved")).to_be_visible()
        refused = await poll(http, {}, wrong_pick["auth_req_id"])
        assert refused.json()["error"] == "access_denied"

        right_pick = (await start_request(http, {}, binding_message="Pay 80 EUR?")).json()
        await phone.open(f"#request={ref_of(right_pick['auth_req_id'])}")
        await choices.filter(has_text=right_pick["number_match"]).click()
        await expect(approve).to_be_enabled()
        await phone.screenshot("approval-number-matching-360x740.png")
        await approve.click()
        await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
        tokens = await poll(http, {}, right_pick["auth_req_id"])
        assert tokens.status_code == 200, tokens.text


async def test_the_approval_page_leaves_when_the_countdown_runs_out(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party, requested_expiry="3")
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await expect(phone.page.locator(".timer .left")).to_have_text(TIME_LEFT)
    await expect(phone.page.locator(".notice")).to_have_text(
        "The request from Acme Coffee expired.", timeout=6000
    )
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()


DIGEST_CASES = [
    ("Acme Coffee", BINDING_MESSAGE, ["openid", "email"]),
    ('Caf\u00e9 "Ünï" \\ </script>', None, ["openid"]),
    ("家族 👩\u200d👩\u200d👧", "Total: 1\u202f234,50 € – ok? 🇬🇧\t", ["openid", "profile"]),
]


async def test_the_apps_shown_digest_matches_the_servers(phone: AppPhone) -> None:
    await phone.open()
    ref = "ab" * 32
    requests = [
        {"ref": ref, "client_name": name, "binding_message": message, "scope": scope}
        for name, message, scope in DIGEST_CASES
    ]
    digests = await phone.page.evaluate(
        """async (requests) => {
            const { shownDigest } = await import("./digest.js");
            return Promise.all(requests.map(shownDigest));
        }""",
        requests,
    )
    assert digests == [shown_digest(ref, *case) for case in DIGEST_CASES]


async def test_opening_the_app_lists_pending_requests_without_any_notification(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    await start(relying_party)
    await start(relying_party, binding_message="Sign in to Acme Coffee on a TV")
    await phone.open()
    items = phone.page.locator(".requests li")
    await expect(items).to_have_count(2)
    await expect(phone.page.get_by_role("heading", name="2 requests waiting")).to_be_visible()
    await expect(items.nth(0).locator(".client")).to_have_text("Acme Coffee")
    await expect(items.nth(0).locator(".message")).to_have_text(BINDING_MESSAGE)
    await expect(items.nth(1).locator(".message")).to_have_text("Sign in to Acme Coffee on a TV")
    await expect(items.nth(0).locator(".left")).to_have_text(TIME_LEFT)
    await phone.screenshot("pending-list-360x740.png")
    await items.nth(1).get_by_role("button").click()
    await expect(phone.page.locator(".approval .message")).to_have_text(
        "Sign in to Acme Coffee on a TV"
    )


async def test_deny_on_the_page_answers_the_relying_party_access_denied(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party)
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await phone.page.get_by_role("button", name="Deny", exact=True).click()
    await expect(phone.page.get_by_role("heading", name="Denied", exact=True)).to_be_visible()
    answer = await poll(relying_party, {}, auth_req_id)
    assert answer.status_code == 400
    assert answer.json()["error"] == "access_denied"


async def test_this_wasnt_me_denies_and_is_audited_as_not_me(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party)
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await phone.page.get_by_role("button", name="This wasn't me").click()
    await expect(phone.page.get_by_role("heading", name="Denied and reported")).to_be_visible()
    answer = await poll(relying_party, {}, auth_req_id)
    assert answer.json()["error"] == "access_denied"
    decided = await audit_events(db, "auth_request_decided")
    assert [e["detail"]["reason"] for e in decided] == ["not_me"]
    device_id = await db.fetchval("SELECT device_id FROM devices")
    assert decided[0]["device_id"] == device_id
    await phone.page.get_by_role("link", name="Activity").click()
    entry = phone.page.locator(".history li").first
    await expect(entry.locator(".decision")).to_have_text("Denied: this wasn't me")
    await expect(entry.locator(".message")).to_have_text(BINDING_MESSAGE)
    await phone.screenshot("activity-360x740.png")


async def test_answering_a_request_that_expired_meanwhile_goes_back_to_the_list(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start(relying_party)
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await expect(phone.page.get_by_role("button", name="Approve")).to_be_enabled()
    await db.execute("UPDATE auth_requests SET expires_at = now() - interval '1 second'")
    await phone.page.get_by_role("button", name="Approve").click()
    await expect(phone.page.locator(".notice")).to_have_text(
        "The request from Acme Coffee is no longer waiting for an answer."
    )
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()


async def test_a_new_vapid_key_makes_the_app_resubscribe_on_the_next_open(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    assert await phone.subscribe_calls() == 1
    old_kid = await db.fetchval("SELECT vapid_kid FROM devices")
    new_key = await rotate_vapid_key(db)
    await phone.open()
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()

    async def resubscribed() -> bool:
        kid = await db.fetchval("SELECT vapid_kid FROM devices")
        return bool(kid == new_key.kid)

    await eventually(resubscribed)
    assert old_kid != new_key.kid
    assert await phone.subscribe_calls() == 2
    await phone.open()
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()
    assert await phone.subscribe_calls() == 2, "an unchanged key must not resubscribe"


async def test_devices_lists_the_users_phones_and_removes_one(
    phone: AppPhone, enrol_url: str, server: Server, db: asyncpg.Connection, alice: User
) -> None:
    await phone.enrol(enrol_url, name="Work phone")
    other = await issue_enrolment_code(db, alice.user_id, "cli", 600, issuer=server.url)
    spare = Phone(name="Old phone", issuer=server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        enrolled = await spare.enrol(http, other.code)
        assert enrolled.status_code == 201, enrolled.text
    await phone.page.get_by_role("link", name="Devices").click()
    devices = phone.page.locator(".devices li")
    await expect(devices).to_have_count(2)
    mine = devices.filter(has_text="This phone")
    await expect(mine.locator(".client")).to_contain_text("Work phone")
    await phone.screenshot("devices-360x740.png")
    old = devices.filter(has_text="Old phone")
    await old.get_by_role("button", name="Remove").click()
    await old.get_by_role("button", name="Tap again to remove").click()
    await expect(phone.page.locator(".notice")).to_have_text("“Old phone” has been removed.")
    await expect(devices).to_have_count(1)
    assert await db.fetchval("SELECT count(*) FROM devices WHERE removed_at IS NULL") == 1
