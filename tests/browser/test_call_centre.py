"""The call-centre panel (examples/call_centre) in a desktop browser, the authenticator
in a phone-sized one: an agent logs in, starts a password reset, and sees the caller's
answer arrive without reloading. Screenshots (1280×800) land in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, expect

from backchannel.db.users import User
from backchannel.rp import ClientSecretBasic
from tests.browser.conftest import ARTIFACTS, AppPhone, Server
from tests.conftest import RegisteredClient
from tests.support.call_centre import AGENT, AGENT_PASSWORD, request_hash, running_panel

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("alice")]

DESKTOP: ViewportSize = {"width": 1280, "height": 800}


@pytest.fixture
def panel_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def panel(
    server: Server, make_client: Any, panel_options: dict[str, Any]
) -> AsyncIterator[str]:
    registered: RegisteredClient = await make_client(name="Example Bank support")
    assert registered.secret is not None
    auth = ClientSecretBasic(registered.client_id, registered.secret)
    async with running_panel(server.url, auth, **panel_options) as url:
        yield url


@pytest.fixture
async def agent(browser: Browser, panel: str) -> AsyncIterator[Page]:
    """The panel in a desktop browser; CSP and Trusted Types violations fail the test."""
    context = await browser.new_context(
        viewport=DESKTOP,
        locale="en-GB",
        timezone_id="Europe/London",
        base_url=panel,
    )
    context.set_default_timeout(10_000)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        print(f"[panel console.{message.type}] {message.text}")
        text = message.text.lower()
        if "content security policy" in text or "trusted" in text:
            problems.append(message.text)

    page.on("console", on_console)
    try:
        yield page
    finally:
        await context.close()
    assert not problems, f"the panel broke its own policy: {problems}"


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=False)


async def log_in(page: Page) -> None:
    await page.goto("/")
    await expect(page).to_have_url("/login")
    await page.get_by_label("Login name").fill(AGENT)
    await page.get_by_label("Password").fill(AGENT_PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_text("Logged in as Agent 42")).to_be_visible()


async def start_reset(page: Page, caller: str = "alice@example.com") -> str:
    """Start a password reset for ``caller``; the binding message the phone shows."""
    await page.get_by_label("Caller's email, phone or account number").fill(caller)
    await page.get_by_label("Reason for the call").select_option(label="Password reset")
    await page.get_by_role("button", name="Send to the caller's phone").click()
    status = page.get_by_role("status")
    await expect(status).to_contain_text("Waiting for the caller to approve on their phone.")
    message = await page.locator(".preview q").text_content()
    assert message is not None and message.startswith("Agent 42: password reset, code ")
    # Marks this page load: were the page reloaded, the mark would be gone.
    await page.evaluate("window.loadedOnce = true")
    return message


async def phone_ref(db: asyncpg.Connection, message: str) -> str:
    """What the phone knows the panel's request by (the hex SHA-256 of its auth_req_id)."""
    return (await request_hash(db, message)).hex()


async def no_reload_happened(page: Page) -> None:
    assert await page.evaluate("window.loadedOnce === true"), "the page was reloaded"


async def test_an_agent_verifies_a_caller_who_approves_on_their_phone_and_resets(
    agent: Page, phone: AppPhone, enrol_url: str, db: asyncpg.Connection, alice: User
) -> None:
    await phone.enrol(enrol_url)
    await log_in(agent)
    await screenshot(agent, "call-centre-desk-1280x800.png")
    message = await start_reset(agent)
    ref = await phone_ref(db, message)

    await phone.receive("prompt", ref)  # the push reached the caller's phone
    [notification] = await phone.notifications()
    assert message in notification["body"]
    await phone.open(f"#request={ref}")
    await expect(phone.page.get_by_text(message)).to_be_visible()
    countdown = agent.locator(".expiry .left")
    await expect(countdown).to_have_text(re.compile(r"\(\d:\d\d left\)"))
    await screenshot(agent, "call-centre-waiting-1280x800.png")

    await phone.page.get_by_role("button", name="Approve").click()
    status = agent.get_by_role("status")
    await expect(status).to_contain_text("Verified")
    await expect(status).to_contain_text("Identity verified.")
    await no_reload_happened(agent)
    identity = agent.locator(".identity")
    await expect(identity.get_by_role("heading", name="Verified identity")).to_be_visible()
    await expect(identity.locator('[data-field="subject"]')).to_have_text("alice")
    await expect(identity.locator('[data-field="name"]')).to_have_text("Alice Example")
    await expect(identity.locator('[data-field="verified_at"]')).to_have_text(
        re.compile(r"^\d\d:\d\d:\d\d$")
    )
    await expect(agent.locator(".expiry")).to_be_hidden()
    row = agent.locator("tbody tr").first
    await expect(row.locator(".badge")).to_have_text("Verified")
    await expect(agent).to_have_title("Verified · Caller verification")
    done = agent.get_by_role("button", name="Mark “Password reset done”")
    await expect(done).to_be_in_viewport()
    overflow = await agent.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0, "the desk must fit 1280 pixels"
    await screenshot(agent, "call-centre-verified-1280x800.png")

    await done.click()
    await expect(agent.get_by_text("Password reset done.")).to_be_visible()
    await expect(done).to_be_hidden()
    await expect(row.locator(".done-mark")).to_have_text("· Password reset done")
    await screenshot(agent, "call-centre-done-1280x800.png")


@pytest.mark.parametrize(
    ("button", "label", "sentence", "shot"),
    [
        ("Deny", "Denied", "The caller denied the request on their phone.", "denied"),
        ("This wasn't me", "Not the caller", "says it wasn't them", "not-me"),
    ],
)
async def test_a_caller_who_denies_or_says_it_was_not_them_is_shown_as_such(
    agent: Page,
    phone: AppPhone,
    enrol_url: str,
    db: asyncpg.Connection,
    button: str,
    label: str,
    sentence: str,
    shot: str,
) -> None:
    await phone.enrol(enrol_url)
    await log_in(agent)
    message = await start_reset(agent)
    await phone.open(f"#request={await phone_ref(db, message)}")
    await phone.page.get_by_role("button", name=button, exact=True).click()

    status = agent.get_by_role("status")
    await expect(status.locator(".badge")).to_have_text(label)
    await expect(status).to_contain_text(sentence)
    await no_reload_happened(agent)
    await expect(agent.locator(".identity")).to_be_hidden()
    await expect(agent.locator("tbody tr").first.locator(".badge")).to_have_text(label)
    await screenshot(agent, f"call-centre-{shot}-1280x800.png")


@pytest.mark.parametrize("panel_options", [{"request_expiry": 3}])
async def test_a_caller_who_never_answers_is_shown_as_expired(
    agent: Page, panel_options: dict[str, Any]
) -> None:
    await log_in(agent)
    await start_reset(agent)
    status = agent.get_by_role("status")
    await expect(status.locator(".badge")).to_have_text("Expired", timeout=20_000)
    await expect(status).to_contain_text("The request expired before the caller answered.")
    await no_reload_happened(agent)
    await screenshot(agent, "call-centre-expired-1280x800.png")


async def test_the_panel_lets_nobody_in_without_the_right_password(agent: Page, panel: str) -> None:
    await agent.goto("/attempts/some-attempt")
    await expect(agent).to_have_url("/login")
    events = await agent.request.get("/events")
    assert events.status == 401

    # By keyboard alone, as a screen reader user would; the focus is always visible.
    await agent.keyboard.press("Tab")  # the skip link
    await agent.keyboard.press("Tab")
    login = agent.get_by_label("Login name")
    await expect(login).to_be_focused()
    outline = await login.evaluate("(e) => getComputedStyle(e).outlineStyle")
    assert outline != "none", "a focused field must show it"
    await agent.keyboard.type(AGENT)
    await agent.keyboard.press("Tab")
    await agent.keyboard.type("not the password")
    await agent.keyboard.press("Enter")

    alert = agent.get_by_role("alert")
    await expect(alert).to_have_text("Wrong login name or password.")
    await expect(agent.get_by_label("Login name")).to_have_value(AGENT)
    await expect(agent.get_by_label("Password")).to_have_value("")
    await screenshot(agent, "call-centre-login-refused-1280x800.png")
    await agent.goto("/")
    await expect(agent).to_have_url("/login")
