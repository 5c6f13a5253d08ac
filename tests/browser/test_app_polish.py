"""What the authenticator shows and how it reads, asserted on the DOM: the account on the
home screen, initials avatars, tab icons, a back control, a distinct disabled Approve,
relative times, device names from the platform, valid list markup, accessible names,
announcements, the notification badge, and the layout at phone and desktop widths (with
screenshots in light and dark in test-artifacts/)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect

from backchannel.db.users import User
from tests.browser.conftest import (
    DESKTOP,
    LARGE_PHONE,
    AppPhone,
    MakePhone,
    Server,
    eventually,
)
from tests.conftest import RegisteredClient
from tests.support.ciba import start_auth_req_id, start_request
from tests.support.device import Phone, ref_of

pytestmark = pytest.mark.browser

SIZES = pytest.mark.parametrize("viewport", [LARGE_PHONE, DESKTOP], ids=["390x844", "1280x800"])

# Content-model checks the HTML parser does not make for DOM built by script: only
# phrasing content and nothing interactive inside a button, lists holding only <li>,
# no block inside <p>, unique ids.
MARKUP_PROBLEMS = """() => {
  const phrasing = new Set(("a abbr b bdi bdo br cite code data dfn em i kbd mark q s samp "
    + "small span strong sub sup time u var wbr img svg path circle rect line g").split(" "));
  const interactive = new Set(["a", "button", "input", "select", "textarea", "details", "label"]);
  const problems = [];
  for (const button of document.querySelectorAll("button")) {
    for (const inner of button.querySelectorAll("*")) {
      const tag = inner.tagName.toLowerCase();
      if (!phrasing.has(tag)) problems.push(`<${tag}> inside <button>`);
      if (interactive.has(tag)) problems.push(`interactive <${tag}> inside <button>`);
    }
  }
  for (const p of document.querySelectorAll("p")) {
    for (const inner of p.querySelectorAll("*")) {
      if (!phrasing.has(inner.tagName.toLowerCase())) problems.push(`<${inner.tagName}> in <p>`);
    }
  }
  for (const li of document.querySelectorAll("li")) {
    const parent = li.parentElement.tagName;
    if (!["UL", "OL", "MENU"].includes(parent)) problems.push("<li> outside a list");
  }
  for (const list of document.querySelectorAll("ul, ol")) {
    for (const child of list.children) {
      if (child.tagName !== "LI") problems.push(`<${child.tagName}> directly in <${list.tagName}>`);
    }
  }
  const ids = [...document.querySelectorAll("[id]")].map((e) => e.id);
  if (new Set(ids).size !== ids.length) problems.push("duplicate ids");
  return problems;
}"""


@pytest.fixture
async def relying_party(server: Server, rp: RegisteredClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=rp.basic_auth()) as http:
        yield http


async def markup_problems(page: Page) -> list[str]:
    problems: list[str] = await page.evaluate(MARKUP_PROBLEMS)
    return problems


async def screenshots(phone: AppPhone, name: str, viewport: ViewportSize) -> None:
    size = f"{viewport['width']}x{viewport['height']}"
    for scheme in ("light", "dark"):
        await phone.page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await phone.screenshot(f"{name}-{scheme}-{size}.png")
    await phone.page.emulate_media(color_scheme="light")


async def box(page: Page, selector: str) -> dict[str, float]:
    found = await page.locator(selector).bounding_box()
    assert found is not None, selector
    return dict(found)


@SIZES
async def test_the_home_screen_names_the_account_and_lists_requests_with_avatars(
    make_phone: MakePhone,
    enrol_url: str,
    relying_party: httpx.AsyncClient,
    viewport: ViewportSize,
) -> None:
    phone = await make_phone(viewport=viewport)
    await phone.enrol(enrol_url)
    await expect(phone.page.locator(".ready .email")).to_have_text("a•••e@example.com")
    page = phone.page
    await page.get_by_role("button", name="Done").click()
    await expect(page.get_by_role("heading", name="No requests waiting")).to_be_visible()
    for message in ("Pay 80 EUR at Acme Coffee", "Sign in on the TV"):
        auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=message)
        await phone.receive("prompt", ref_of(auth_req_id))
    items = page.locator(".requests li")
    await expect(items).to_have_count(2)

    account = page.get_by_role("region", name="Account")
    await expect(account.locator(".account-name")).to_have_text("Alice Example")
    await expect(account.locator(".account-email")).to_have_text("a•••e@example.com")
    await expect(account.locator(".avatar")).to_have_text("AE")
    await expect(account.locator(".push-state")).to_have_text("Notifications on")

    # Each request: the relying party's name with its initials, as one button.
    await expect(items.locator(".avatar")).to_have_text(["AC", "AC"])
    await expect(items.first.locator(".avatar")).to_have_attribute("aria-hidden", "true")
    await expect(items.first.get_by_role("button")).to_have_accessible_name(
        "Acme Coffee Pay 80 EUR at Acme Coffee 5:00 left"
    )
    # Tabs: an icon (hidden from screen readers) and a name each; the count of waiting ones.
    tabs = page.get_by_role("navigation", name="Sections")
    await expect(tabs.locator("a svg[aria-hidden='true']")).to_have_count(3)
    for name in ("Requests 2 waiting", "Activity", "Devices"):
        await expect(tabs.get_by_role("link", name=name, exact=True)).to_be_visible()
    assert await markup_problems(page) == []

    # A phone-width column, centred on a desktop with its tab bar.
    app, bar = await box(page, ".app"), await box(page, ".tabs")
    width = min(viewport["width"], 480)
    assert app["width"] == width
    assert app["x"] == (viewport["width"] - width) / 2
    # The tab bar spans the column (inside its 1px side borders on a desktop).
    assert app["x"] <= bar["x"] <= app["x"] + 1
    assert bar["width"] == pytest.approx(app["width"], abs=2)
    assert bar["y"] + bar["height"] == pytest.approx(viewport["height"], abs=1)
    await screenshots(phone, "home", viewport)


@SIZES
async def test_the_request_screen_has_a_back_control_and_a_distinct_disabled_approve(
    make_phone: MakePhone,
    enrol_url: str,
    server: Server,
    make_client: Any,
    viewport: ViewportSize,
) -> None:
    bank: RegisteredClient = await make_client(name="Acme Bank", number_matching=True)
    phone = await make_phone(viewport=viewport)
    await phone.enrol(enrol_url)
    async with httpx.AsyncClient(base_url=server.url, headers=bank.basic_auth()) as http:
        started = (await start_request(http, {}, binding_message="Sign in to Acme Bank")).json()
    await phone.open(f"#request={ref_of(started['auth_req_id'])}")
    page = phone.page
    await expect(page.locator(".rp .avatar")).to_have_text("AB")
    await expect(page.locator(".rp .client")).to_have_text("Acme Bank")

    approve = page.get_by_role("button", name="Approve")
    await expect(approve).to_be_disabled()
    await expect(approve).to_have_accessible_description(
        "Pick the number Acme Bank shows to approve."
    )
    disabled_look = await approve.evaluate(
        "(b) => { const s = getComputedStyle(b); "
        "return [s.backgroundColor, s.borderTopStyle, s.opacity]; }"
    )
    assert disabled_look[1:] == ["dashed", "1"]
    await screenshots(phone, "approval-disabled", viewport)

    await page.locator(".numbers button").filter(has_text=started["number_match"]).click()
    await expect(approve).to_be_enabled()
    await expect(page.locator(".why")).to_be_hidden()
    enabled_look = await approve.evaluate(
        "(b) => { const s = getComputedStyle(b); "
        "return [s.backgroundColor, s.borderTopStyle, s.opacity]; }"
    )
    assert enabled_look[0] != disabled_look[0], "the disabled Approve must not look green"
    assert enabled_look[1] != "dashed"
    await screenshots(phone, "approval-ready", viewport)
    assert await markup_problems(page) == []

    await page.get_by_role("button", name="Back to requests").click()
    await expect(page.get_by_role("heading", name="1 request waiting")).to_be_visible()


async def test_activity_and_devices_say_when_in_relative_times(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message="Sign in")
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await phone.page.get_by_role("button", name="Deny", exact=True).click()
    await expect(phone.page.get_by_role("heading", name="Denied", exact=True)).to_be_visible()
    await db.execute("UPDATE auth_requests SET decided_at = now() - interval '2 minutes'")

    page = phone.page
    await page.get_by_role("link", name="Activity").click()
    entry = page.locator(".history li").first
    when = entry.locator("time")
    await expect(when).to_have_text("2 min ago")
    assert (await when.get_attribute("datetime") or "").endswith("Z")
    assert await when.get_attribute("title"), "the full date is one hover away"
    await expect(entry.locator(".avatar")).to_have_text("AC")
    await expect(entry.locator(".decision")).to_have_text("Denied")
    assert await markup_problems(page) == []
    await phone.screenshot("activity-relative-360x740.png")

    await page.get_by_role("link", name="Devices").click()
    await expect(page.locator(".devices li time").first).to_have_text("Added just now")

    cases = [0, 20, 50, 119, 125, 3599, 3600, 7300, 86_400 + 10, 3 * 86_400, -30]
    words = await page.evaluate(
        """async (offsets) => {
            const { ago } = await import("./words.js");
            const now = Date.parse("2026-03-01T12:00:00Z");
            return offsets.map((s) => ago(new Date(now - s * 1000).toISOString(), now));
        }""",
        cases,
    )
    assert words == [
        "just now",
        "just now",
        "1 min ago",
        "2 min ago",
        "2 min ago",
        "1 hour ago",
        "1 hour ago",
        "2 hours ago",
        "yesterday",
        "3 days ago",
        "just now",
    ]


async def test_remove_buttons_say_which_device(
    phone: AppPhone, enrol_url: str, server: Server, db: asyncpg.Connection, alice: User
) -> None:
    from backchannel.authenticator.enrolment import issue_enrolment_code

    await phone.enrol(enrol_url, name="Work phone")
    other = await issue_enrolment_code(db, alice.user_id, "cli", 600, issuer=server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        enrolled = await Phone(name="Old phone", issuer=server.url).enrol(http, other.code)
        assert enrolled.status_code == 201, enrolled.text
    page = phone.page
    await page.get_by_role("link", name="Devices").click()
    for name in ("Work phone", "Old phone"):
        await expect(page.get_by_role("button", name=f"Remove {name}", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Remove Old phone", exact=True).click()
    await expect(
        page.get_by_role("button", name="Tap again to remove Old phone", exact=True)
    ).to_be_visible()
    await expect(page.locator(".devices .push").first).to_have_text("Notifications: on")
    assert await markup_problems(page) == []


async def test_status_changes_are_announced_in_a_live_region(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    live = phone.page.locator("#announcer")
    await expect(live).to_have_attribute("aria-live", "polite")
    await phone.announced("This phone is ready.")
    await phone.page.get_by_role("button", name="Done").click()
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()

    auth_req_id = await start_auth_req_id(relying_party, {})
    await phone.receive("prompt", ref_of(auth_req_id))
    await phone.announced("New request from Acme Coffee.")
    await phone.page.locator(".requests li").get_by_role("button").click()
    await phone.page.get_by_role("button", name="Approve").click()
    await phone.announced("Approved")


ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)
USER_AGENTS = {
    ANDROID_CHROME: "Chrome on Android",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1": "Safari on iPhone",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/130.0 Mobile/15E148 Safari/604.1": "Chrome on iPhone",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0": "Edge on Windows",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.6; rv:131.0) Gecko/20100101 Firefox/131.0": (
        "Firefox on Mac"
    ),
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36": "Samsung Internet on Android",
    "Something else entirely": "My phone",
}


async def test_the_device_name_is_prefilled_from_the_platform(
    make_phone: MakePhone, enrol_url: str
) -> None:
    phone = await make_phone()
    # Chrome on an Android phone, User-Agent Client Hints included.
    await phone.cdp.send(
        "Emulation.setUserAgentOverride",
        {
            "userAgent": ANDROID_CHROME,
            "userAgentMetadata": {
                "brands": [{"brand": "Google Chrome", "version": "156"}],
                "platform": "Android",
                "platformVersion": "14",
                "architecture": "",
                "model": "Pixel 8",
                "mobile": True,
            },
        },
    )
    await phone.page.goto(enrol_url)
    await expect(phone.page.get_by_label("Name this phone")).to_have_value("Chrome on Android")
    names = await phone.page.evaluate(
        """async (agents) => {
            const { describeBrowser } = await import("./platform.js");
            return agents.map((agent) => describeBrowser(agent));
        }""",
        list(USER_AGENTS),
    )
    assert names == list(USER_AGENTS.values())
    hinted = await phone.page.evaluate(
        """async () => {
            const { describeBrowser } = await import("./platform.js");
            const hints = (brand, platform) => ({ brands: [{ brand }], platform });
            return [
              describeBrowser("", hints("Google Chrome", "Windows")),
              describeBrowser("", hints("Microsoft Edge", "macOS")),
              describeBrowser("", hints("Chromium", "Linux")),
            ];
        }"""
    )
    assert hinted == ["Chrome on Windows", "Edge on Mac", "Chromium on Linux"]


def png_pixels(body: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, colour type, raw scanlines) of a PNG whose rows use filter 0."""
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _depth, colour_type = struct.unpack(">IIBB", body[16:26])
    offset, data = 8, b""
    while offset < len(body):
        (length,) = struct.unpack(">I", body[offset : offset + 4])
        kind = body[offset + 4 : offset + 8]
        if kind == b"IDAT":
            data += body[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return width, height, colour_type, zlib.decompress(data)


async def test_notifications_carry_a_monochrome_badge(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, server: Server
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start_auth_req_id(relying_party, {})
    await phone.receive("prompt", ref_of(auth_req_id))
    [shown] = await eventually(phone.worker_notifications)
    assert shown["badge"] == phone.app_url + "icons/badge-96.png"
    assert shown["icon"] == phone.app_url + "icons/icon-192.png"

    async with httpx.AsyncClient() as http:
        badge = await http.get(shown["badge"])
    assert badge.status_code == 200 and badge.headers["content-type"] == "image/png"
    width, height, colour_type, raw = png_pixels(badge.content)
    assert (width, height, colour_type) == (96, 96, 6)  # RGBA
    row_bytes = 1 + 4 * width
    pixels = [
        raw[y * row_bytes + 1 + 4 * x : y * row_bytes + 5 + 4 * x]
        for y in range(height)
        for x in range(width)
    ]
    assert {p[:3] for p in pixels} == {b"\xff\xff\xff"}, "one colour: only the alpha draws"
    alphas = {p[3] for p in pixels}
    assert 0 in alphas and 255 in alphas
