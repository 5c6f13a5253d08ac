"""The authenticator without a push service: enrolment without a subscription, plain
words for every browser failure, requests fetched while the app is open, push turned on
later, a renewed or lost subscription (``pushsubscriptionchange``), and a notification
tapped while no window of the app is open.

Where the browser itself must fail, it is made to: a ``subscribe()`` that never settles
or rejects (the push stub's modes), notifications blocked through CDP
(``Browser.setPermission``), Chromium's own ``subscribe()`` in an incognito-like context
(rejected as in a private window), features taken away by an init script, and the
network switched off (``context.set_offline``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from playwright.async_api import ViewportSize, expect

from backchannel.oauth.secrets import hash_secret
from tests.browser.conftest import (
    DESKTOP,
    LARGE_PHONE,
    AppPhone,
    MakePhone,
    Server,
    eventually,
)
from tests.conftest import RegisteredClient
from tests.support.ciba import decide, poll, start_auth_req_id
from tests.support.device import ref_of

pytestmark = pytest.mark.browser

RAW_BROWSER_TEXT = "Registration failed"


@pytest.fixture
async def relying_party(server: Server, rp: RegisteredClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=rp.basic_auth()) as http:
        yield http


async def push_endpoint(db: asyncpg.Connection) -> str | None:
    endpoint: str | None = await db.fetchval("SELECT push_endpoint FROM devices")
    return endpoint


async def code_spent(db: asyncpg.Connection, enrol_url: str) -> bool:
    code = enrol_url.split("#enrol=", 1)[1]
    used = await db.fetchval(
        "SELECT used_at FROM enrolment_codes WHERE code_hash = $1", hash_secret(code)
    )
    return used is not None


async def expect_enrolled_without_push(phone: AppPhone, *parts: str) -> None:
    """The ready screen says notifications are off, why, and what to do, in plain words."""
    page = phone.page
    status = page.locator(".push-status.off")
    await expect(status).to_contain_text("Notifications are off.")
    for part in parts:
        await expect(status).to_contain_text(part)
    assert RAW_BROWSER_TEXT not in await page.locator("main").inner_text()


async def test_a_subscribe_that_hangs_enrols_without_push_and_the_open_app_polls(
    phone: AppPhone,
    enrol_url: str,
    relying_party: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:
    await phone.set_push_mode("hang")
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(
        phone,
        "can't reach its notification service right now",
        "Requests show up here while this app is open.",
    )
    await phone.announced(
        "This phone is ready. Notifications are off. This browser can't reach its notification "
        "service right now. Requests show up here while this app is open. Try turning "
        "notifications on again later in Devices."
    )
    assert await push_endpoint(db) is None
    assert await code_spent(db, enrol_url)
    await phone.screenshot("enrolled-without-push-360x740.png")

    page = phone.page
    await page.get_by_role("button", name="Done").click()
    await expect(page.get_by_role("heading", name="No requests waiting")).to_be_visible()
    await expect(page.locator(".account-card .push-state")).to_have_text("Notifications off")
    await expect(page.locator(".push-note")).to_contain_text(
        "new requests show up here while the app is open"
    )
    # No push reaches this phone: the open app finds the request by asking.
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message="Sign in on the TV")
    item = page.locator(".requests li")
    await expect(item).to_have_count(1)
    await expect(item.locator(".message")).to_have_text("Sign in on the TV")
    await phone.announced("New request from Acme Coffee.")
    await expect(page.get_by_role("link", name="Requests 1 waiting")).to_be_visible()
    assert phone.push_service.received == []
    await phone.screenshot("polled-request-360x740.png")

    await item.get_by_role("button").click()
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    tokens = await poll(relying_party, {}, auth_req_id)
    assert tokens.status_code == 200, tokens.text


async def test_a_request_answered_elsewhere_leaves_the_screen_without_any_push(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.set_push_mode("fail")
    await phone.enrol(enrol_url)
    auth_req_id = await start_auth_req_id(relying_party, {})
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await expect(phone.page.get_by_role("button", name="Approve")).to_be_visible()
    await decide(db, auth_req_id, "denied")  # answered on another device, say
    await expect(phone.page.locator(".notice.info")).to_have_text(
        "The request from Acme Coffee is no longer waiting for an answer."
    )
    await expect(phone.page.get_by_role("heading", name="No requests waiting")).to_be_visible()


async def test_blocked_notifications_enrol_without_push_and_say_how_to_allow_them(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    await phone.open()
    await phone.deny_notifications()
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(
        phone, "Notifications are blocked for this app.", "site settings", "Devices"
    )
    assert await push_endpoint(db) is None
    assert await phone.subscribe_calls() == 0

    page = phone.page
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator(".account-card .push-state")).to_have_text("Notifications off")
    await page.get_by_role("link", name="Devices").click()
    mine = page.locator(".devices li").filter(has_text="This phone")
    await expect(mine.locator(".push")).to_have_text("Notifications: off")
    await mine.get_by_role("button", name="Turn on notifications").click()
    await expect(page.locator(".notice.error")).to_have_text(
        "Notifications were not turned on. Notifications are blocked for this app. Allow them "
        "in the site settings (the icon beside the web address) or in your phone's settings, "
        "then choose Turn on notifications below. Requests show up here while this app is open."
    )
    assert await push_endpoint(db) is None


async def test_a_private_window_enrols_without_push_in_plain_words(
    make_phone: MakePhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    # Chromium's own subscribe(): in an incognito context it rejects with
    # "Registration failed - permission denied" although notifications read "granted".
    phone = await make_phone(stub_push=False)
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(
        phone,
        "private (incognito) windows don't allow them",
        "Open the app in a normal window to get notifications.",
    )
    assert await push_endpoint(db) is None


@pytest.mark.parametrize(
    ("answer", "init_script", "expected"),
    [
        # Headless Chromium answers the prompt itself, with a refusal.
        (
            "blocked",
            None,
            "Notifications are blocked for this app. Allow them in the site settings",
        ),
        # The user closed the prompt without choosing.
        (
            "dismissed",
            "Notification.requestPermission = async () => 'default';",
            "Notifications weren't allowed. Choose Turn on notifications in Devices, then Allow.",
        ),
    ],
)
async def test_notifications_not_allowed_at_the_prompt_enrol_without_push(
    make_phone: MakePhone,
    enrol_url: str,
    db: asyncpg.Connection,
    answer: str,
    init_script: str | None,
    expected: str,
) -> None:
    phone = await make_phone(notifications=False, init_script=init_script)
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(phone, expected)
    assert await push_endpoint(db) is None, answer


@pytest.mark.parametrize(
    ("feature", "init_script", "expected"),
    [
        (
            "no service worker",
            "delete Navigator.prototype.serviceWorker;",
            "This browser can't run the part of the app that receives notifications.",
        ),
        (
            "no Web Push",
            "delete window.PushManager;",
            "This browser can't receive notifications from web apps. On iPhone or iPad, add "
            "this app to your Home Screen",
        ),
    ],
)
async def test_a_browser_without_push_enrols_and_says_what_to_do(
    make_phone: MakePhone,
    enrol_url: str,
    db: asyncpg.Connection,
    relying_party: httpx.AsyncClient,
    feature: str,
    init_script: str,
    expected: str,
) -> None:
    phone = await make_phone(stub_push=False, init_script=init_script)
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(phone, expected)
    assert await push_endpoint(db) is None, feature
    await phone.page.get_by_role("button", name="Done").click()
    await start_auth_req_id(relying_party, {})
    await expect(phone.page.locator(".requests li")).to_have_count(1)


async def test_offline_enrolment_says_so_and_keeps_the_link(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    page = phone.page
    await page.goto(enrol_url)
    await expect(page.get_by_role("button", name="Set up this phone")).to_be_enabled()
    await phone.context.set_offline(True)
    await page.get_by_role("button", name="Set up this phone").click()
    await expect(page.locator(".status .notice.error")).to_have_text(
        "You're offline. Connect to the internet, then try again."
    )
    await expect(page.get_by_role("button", name="Set up this phone")).to_be_enabled()
    assert not await code_spent(db, enrol_url)
    await phone.screenshot("enrol-offline-360x740.png")

    await phone.context.set_offline(False)
    await page.get_by_role("button", name="Set up this phone").click()
    await expect(page.get_by_role("heading", name="This phone is ready")).to_be_visible()


async def test_going_offline_in_the_app_is_said_and_announced(
    phone: AppPhone, enrol_url: str
) -> None:
    await phone.enrol(enrol_url)
    await phone.page.get_by_role("button", name="Done").click()
    await phone.context.set_offline(True)
    await expect(phone.page.locator("#banner")).to_contain_text("You're offline.")
    await phone.announced("You're offline.")
    await phone.context.set_offline(False)
    await phone.announced("You're back online.")
    await expect(phone.page.locator("#banner")).to_be_hidden()


async def test_a_browser_that_keeps_nothing_is_told_before_the_link_is_spent(
    make_phone: MakePhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    phone = await make_phone(
        init_script="Object.defineProperty(window, 'indexedDB', { value: undefined });"
    )
    await phone.page.goto(enrol_url)
    await expect(phone.page.locator(".notice.error")).to_have_text(
        "This browser window can't keep the app's key, so this phone can't be set up here. "
        "Private (incognito) windows often can't. Open the setup link in a normal browser window."
    )
    assert not await code_spent(db, enrol_url)


async def test_a_push_service_the_server_refuses_enrols_without_push_on_the_same_link(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    await phone.set_push_mode("foreign")
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(
        phone,
        "The server doesn't accept this browser's notification service.",
        "Another browser may get notifications.",
    )
    # The refused attempt left the link unspent; the second one used it.
    assert await db.fetchval("SELECT count(*) FROM devices") == 1
    assert await push_endpoint(db) is None
    assert await code_spent(db, enrol_url)


async def test_push_is_turned_on_later_from_the_devices_screen(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.set_push_mode("fail")
    await phone.enrol(enrol_url)
    await expect_enrolled_without_push(phone, "can't reach its notification service")
    assert await push_endpoint(db) is None

    page = phone.page
    await page.get_by_role("button", name="Done").click()
    await page.get_by_role("link", name="Devices").click()
    mine = page.locator(".devices li").filter(has_text="This phone")
    await expect(mine.locator(".push")).to_have_text("Notifications: off")
    await expect(mine.locator(".notice.warn")).to_contain_text(
        "can't reach its notification service"
    )
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await phone.screenshot(f"devices-push-off-{scheme}-360x740.png")
    await page.emulate_media(color_scheme="light")

    await phone.set_push_mode(None)  # the push service is reachable again
    await mine.get_by_role("button", name="Turn on notifications").click()
    await expect(page.locator(".notice").first).to_have_text(
        "Notifications are on: requests reach this phone even when the app is closed."
    )
    await phone.announced(
        "Notifications are on: requests reach this phone even when the app is closed."
    )
    await expect(mine.locator(".push")).to_have_text("Notifications: on")
    assert await push_endpoint(db) == phone.subscription.endpoint
    assert await db.fetchval("SELECT vapid_kid FROM devices") is not None

    auth_req_id = await start_auth_req_id(relying_party, {})
    await phone.receive("prompt", ref_of(auth_req_id))
    [shown] = await eventually(phone.notifications)
    assert shown["title"] == "Acme Coffee"
    await page.get_by_role("link", name="Requests").click()
    await expect(page.locator(".account-card .push-state")).to_have_text("Notifications on")


# --- pushsubscriptionchange -----------------------------------------------------------------

# Dispatched inside the worker, as the browser would: CDP cannot make the push service
# end a subscription. Untrusted, the event refuses waitUntil(); the handler's work has
# started by then and runs to its end.
SUBSCRIPTION_CHANGE = """(renewed) => {
  const event = new ExtendableEvent("pushsubscriptionchange");
  const newSubscription = renewed && {
    endpoint: renewed.endpoint,
    options: {},
    toJSON: () => renewed,
  };
  Object.defineProperty(event, "newSubscription", { value: newSubscription });
  try { self.dispatchEvent(event); } catch {}
}"""

# The worker's own PushManager, made to subscribe to `renewed` (or to fail when null).
WORKER_PUSH_MANAGER = """(renewed) => {
  PushManager.prototype.getSubscription = async () => null;
  PushManager.prototype.subscribe = async () => {
    if (!renewed) throw new DOMException("Registration failed - push service error", "AbortError");
    return { endpoint: renewed.endpoint, options: {}, toJSON: () => renewed };
  };
}"""


async def _subscription_changed(phone: AppPhone) -> None:
    # A function, not an expression: the app's CSP refuses eval.
    await phone.page.wait_for_function(
        "() => window.workerMessages.some((m) => m.type === 'subscription')"
    )


async def test_a_subscription_the_browser_renewed_is_sent_to_the_server(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    assert await push_endpoint(db) == phone.subscription.endpoint
    renewed = phone.push_service.subscribe()
    await phone.worker().evaluate(SUBSCRIPTION_CHANGE, renewed.to_json())
    await _subscription_changed(phone)
    assert await push_endpoint(db) == renewed.endpoint

    auth_req_id = await start_auth_req_id(relying_party, {})
    await phone.push_service.wait_until(lambda: bool(phone.push_service.received_by(renewed)))
    assert phone.push_service.received_by(renewed)[0].payload["ref"] == ref_of(auth_req_id)
    assert phone.push_service.received_by(phone.subscription) == []


async def test_without_a_new_subscription_the_worker_subscribes_again(
    phone: AppPhone, enrol_url: str, db: asyncpg.Connection
) -> None:
    await phone.enrol(enrol_url)
    renewed = phone.push_service.subscribe()
    worker = phone.worker()
    await worker.evaluate(WORKER_PUSH_MANAGER, renewed.to_json())
    await worker.evaluate(SUBSCRIPTION_CHANGE, None)
    await _subscription_changed(phone)
    assert await push_endpoint(db) == renewed.endpoint


async def test_a_subscription_that_cannot_be_renewed_turns_push_off_in_the_app(
    phone: AppPhone, enrol_url: str
) -> None:
    await phone.enrol(enrol_url)
    page = phone.page
    await page.get_by_role("button", name="Done").click()
    await expect(page.locator(".account-card .push-state")).to_have_text("Notifications on")
    worker = phone.worker()
    await worker.evaluate(WORKER_PUSH_MANAGER, None)
    await worker.evaluate(SUBSCRIPTION_CHANGE, None)
    await _subscription_changed(phone)
    await expect(page.locator(".account-card .push-state")).to_have_text("Notifications off")
    await page.get_by_role("link", name="Devices").click()
    mine = page.locator(".devices li").filter(has_text="This phone")
    await expect(mine.locator(".notice.warn")).to_have_text(
        "Notifications stopped reaching this phone: its notification subscription ended. "
        "Turn them on again below. Requests show up here while this app is open."
    )
    await expect(mine.get_by_role("button", name="Turn on notifications")).to_be_visible()


# --- a notification tapped with no window open ----------------------------------------------

# Chromium lets a worker open a window only from a real notification click, which CDP
# cannot make: openWindow() is recorded, and the test opens the URL it was given.
RECORD_OPEN_WINDOW = """() => {
  self.openedWindows = [];
  self.clients.openWindow = async (url) => {
    self.openedWindows.push(url);
    return null;
  };
}"""


async def test_tapping_a_notification_with_no_window_open_opens_the_request(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    await phone.enrol(enrol_url)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message="Pay 12 EUR")
    ref = ref_of(auth_req_id)
    await phone.receive("prompt", ref)
    await eventually(phone.notifications)
    worker = phone.worker()
    await phone.page.close()
    assert phone.context.pages == []

    await worker.evaluate(RECORD_OPEN_WINDOW)
    await worker.evaluate(
        """async (tag) => {
            const [notification] = await self.registration.getNotifications({ tag });
            self.dispatchEvent(new NotificationEvent("notificationclick", { notification }));
        }""",
        ref,
    )
    opened = await eventually(lambda: worker.evaluate("self.openedWindows"))
    assert opened == [f"{phone.app_url}#request={ref}"]

    async def closed() -> bool:
        return await phone.worker_notifications() == []

    assert await eventually(closed), "the tapped notification is closed"

    # The window the browser opens: a cold start at the request.
    page = await phone.context.new_page()
    phone.page = page
    await page.goto(opened[0])
    await expect(page.locator(".approval .message")).to_have_text("Pay 12 EUR")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    assert (await poll(relying_party, {}, auth_req_id)).status_code == 200


async def test_a_browser_opening_the_start_page_instead_still_shows_the_request(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    # iOS may open start_url rather than the notification's URL: the app lists the request.
    await phone.enrol(enrol_url)
    await start_auth_req_id(relying_party, {}, binding_message="Pay 12 EUR")
    await phone.page.close()
    page = await phone.context.new_page()
    phone.page = page
    await page.goto(phone.app_url)
    await expect(page.locator(".requests .message")).to_have_text("Pay 12 EUR")


# --- screenshots: the enrolled phone without push, at phone and desktop sizes --------------


@pytest.mark.parametrize("viewport", [LARGE_PHONE, DESKTOP], ids=["390x844", "1280x800"])
async def test_the_app_without_push_at_phone_and_desktop_sizes(
    make_phone: MakePhone,
    enrol_url: str,
    relying_party: httpx.AsyncClient,
    viewport: ViewportSize,
) -> None:
    phone = await make_phone(viewport=viewport)
    await phone.set_push_mode("fail")
    await phone.enrol(enrol_url, name="Work laptop")
    size = f"{viewport['width']}x{viewport['height']}"
    for scheme in ("light", "dark"):
        await phone.page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await phone.screenshot(f"enrolled-without-push-{scheme}-{size}.png")
    await phone.page.emulate_media(color_scheme="light")
    await phone.page.get_by_role("button", name="Done").click()
    await start_auth_req_id(relying_party, {}, binding_message="Sign in on the TV")
    await expect(phone.page.locator(".requests li")).to_have_count(1)
    for scheme in ("light", "dark"):
        await phone.page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await phone.screenshot(f"home-without-push-{scheme}-{size}.png")
