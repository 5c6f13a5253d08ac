"""Driving the authenticator PWA in headless Chromium against a real hypercorn server.

``pushManager.subscribe()`` needs the browser vendor's push service, which is
unreachable offline: an init script replaces ``subscribe``/``getSubscription``
with a subscription whose endpoint and keys the test owns. Pushes reach the
service worker through CDP (``ServiceWorker.deliverPushMessage``), which runs
the worker's real ``push`` handler.

The stub can also fail as browsers do (``AppPhone.set_push_mode``): ``hang`` (a
subscribe() that never settles, as where no push service is reachable),
``fail`` (an AbortError) or ``foreign`` (a push service the server refuses).
Without the stub (``make_phone(stub_push=False)``) Chromium's own subscribe()
runs: in these incognito-like contexts it rejects with "Registration failed -
permission denied", as in a private window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Page,
    Response,
    ViewportSize,
    Worker,
    async_playwright,
    expect,
)
from starlette.applications import Starlette

from backchannel.app import create_app
from backchannel.authenticator.enrolment import issue_enrolment_code
from backchannel.cli.server import bind, hypercorn_config, serve
from backchannel.db.users import User
from backchannel.settings import Settings
from tests.support.push_service import LocalPushService, TestSubscription, run_push_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Generous for a loaded 2-core CI machine; a passing step takes well under a second.
expect.set_options(timeout=10_000)

PHONE_VIEWPORT: ViewportSize = {"width": 360, "height": 740}
LARGE_PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Replaces the browser's push subscription with the test's (kept in localStorage so
# that getSubscription() after a reload finds what subscribe() made, as in a browser),
# and records the messages the service worker posts to the page.
PUSH_STUB = """
(() => {
  const subscription = __SUBSCRIPTION__;
  const STORAGE = "test-push-application-server-key";
  const decode = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  };
  const encode = (bytes) => btoa(String.fromCharCode(...bytes))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  // "foreign": a push service the server does not allow (not on its host list).
  const endpoint = () => localStorage.getItem("test-push-mode") === "foreign"
    ? "https://push.elsewhere.example/push/" + subscription.endpoint.split("/").pop()
    : subscription.endpoint;
  const make = (serverKey) => ({
    endpoint: endpoint(),
    expirationTime: null,
    options: { userVisibleOnly: true, applicationServerKey: decode(serverKey).buffer },
    getKey: (name) => decode(subscription.keys[name]).buffer,
    toJSON: () => ({ ...JSON.parse(JSON.stringify(subscription)), endpoint: endpoint() }),
    unsubscribe: async () => {
      localStorage.removeItem(STORAGE);
      return true;
    },
  });
  PushManager.prototype.subscribe = async function (options) {
    // How this browser's push service behaves, as a test set it (AppPhone.set_push_mode).
    const mode = localStorage.getItem("test-push-mode");
    if (mode === "hang") return new Promise(() => {});
    if (mode === "fail") {
      throw new DOMException("Registration failed - push service not available", "AbortError");
    }
    const key = options.applicationServerKey;
    const bytes = typeof key === "string" ? decode(key)
      : key instanceof ArrayBuffer ? new Uint8Array(key)
      : new Uint8Array(key.buffer, key.byteOffset, key.byteLength);
    const serverKey = encode(bytes);
    localStorage.setItem(STORAGE, serverKey);
    localStorage.setItem("test-push-subscribe-calls",
      String(Number(localStorage.getItem("test-push-subscribe-calls") || 0) + 1));
    return make(serverKey);
  };
  PushManager.prototype.getSubscription = async function () {
    const serverKey = localStorage.getItem(STORAGE);
    return serverKey ? make(serverKey) : null;
  };
  __WORKER_MESSAGES__
})();
"""
# What the service worker told this page, for tests to wait on.
WORKER_MESSAGES = """
  window.workerMessages = [];
  navigator.serviceWorker?.addEventListener("message", (event) => {
    window.workerMessages.push(event.data);
  });
"""
PUSH_STUB = PUSH_STUB.replace("__WORKER_MESSAGES__", WORKER_MESSAGES)

NOTIFICATIONS_JS = """
async () => {
  const registration = await navigator.serviceWorker.ready;
  return (await registration.getNotifications()).map((n) => ({
    title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction,
    actions: n.actions.map((a) => a.action), actionTitles: n.actions.map((a) => a.title),
  }));
}
"""

# The worker's view of its notifications, for when no page is open.
WORKER_NOTIFICATIONS_JS = """
async () => (await self.registration.getNotifications()).map((n) => ({
  title: n.title, tag: n.tag, badge: n.badge, icon: n.icon,
}))
"""


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.05)


@dataclass
class Server:
    url: str
    app: Starlette


@pytest.fixture
def issuer_host() -> str:
    """The host in the issuer URL; a module overrides it with ``localhost`` for WebAuthn,
    which refuses an IP address as its RP ID. The server listens on 127.0.0.1 either way."""
    return "127.0.0.1"


@pytest.fixture
async def server(settings: Settings, issuer_host: str) -> AsyncIterator[Server]:
    """The real app under hypercorn on a loopback port, as ``backchannel serve`` runs it."""
    listening = bind(settings.replace(host="127.0.0.1", port=0), hypercorn_config())
    url = f"http://{issuer_host}:{listening.port}"
    # The test's push service is on loopback over http: both settings admit it
    # (the subscription check at /device/enrol follows allow_insecure_urls).
    app = create_app(
        settings.replace(
            issuer=url,
            port=listening.port,
            push_allow_loopback=True,
            allow_insecure_urls=True,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, listening.config, stop=stop))
    # The socket is bound but hypercorn listens only once the lifespan has started.
    async with httpx.AsyncClient() as probe:
        for _ in range(600):
            if task.done():
                task.result()  # the startup failure
                raise AssertionError("the server stopped during startup")
            try:
                (await probe.get(url + "/device/config")).raise_for_status()
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server did not answer within 30 s")
    yield Server(url, app)
    stop.set()
    await asyncio.wait_for(task, 15)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; without it these tests skip, except in CI, where they fail."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class AppPhone:
    """The PWA in a phone-sized browser context, with its push subscription and CDP."""

    server: Server
    context: BrowserContext
    page: Page
    cdp: CDPSession
    push_service: LocalPushService
    subscription: TestSubscription
    registrations: dict[str, str] = field(default_factory=dict)  # scopeURL -> registrationId

    @property
    def app_url(self) -> str:
        return self.server.url + "/authenticator/"

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(self.app_url + fragment)

    async def enrol(self, enrol_url: str, name: str = "Alice's phone") -> None:
        await self.page.goto(enrol_url)
        await self.page.get_by_label("Name this phone").fill(name)
        await self.page.get_by_role("button", name="Set up this phone").click()
        ready = self.page.get_by_role("heading", name="This phone is ready")
        refused = self.page.locator(".notice.error")
        await ready.or_(refused).wait_for()
        if await refused.is_visible():
            raise AssertionError(f"enrolment refused: {await refused.text_content()}")

    async def registration_id(self) -> str:
        async def registered() -> str | None:
            return self.registrations.get(self.app_url)

        found: str = await eventually(registered)
        return found

    async def push(self, data: str) -> None:
        """Hand a decrypted push message to the service worker's ``push`` handler."""
        await self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.server.url,
                "registrationId": await self.registration_id(),
                "data": data,
            },
        )

    async def receive(self, kind: str, ref: str, within: float = 15.0) -> dict[str, Any]:
        """Wait until the push service accepted a ``kind`` message about ``ref`` for this
        phone, deliver its decrypted payload to the service worker, and wait until the
        worker has handled it (it tells open pages once a notification is shown or closed:
        Chromium may drop a notification looked up while it is still being shown)."""

        def matching() -> list[dict[str, Any]]:
            return [
                m.payload
                for m in self.push_service.received_by(self.subscription)
                if m.payload.get("type") == kind and m.payload.get("ref") == ref
            ]

        await self.push_service.wait_until(lambda: bool(matching()), within=within)
        payload = matching()[0]
        await self.push(json.dumps(payload, ensure_ascii=False))
        await self.page.wait_for_function(
            "([type, ref]) => window.workerMessages.some((m) => m.type === type && m.ref === ref)",
            arg=[kind, ref],
        )
        return payload

    async def click_notification(self, tag: str, action: str = "") -> None:
        """Run the worker's ``notificationclick`` handler for the notification ``tag``.

        CDP cannot click a notification, so the event is dispatched inside the
        worker: the handler's own code runs (routing, signing with the key from
        IndexedDB), though not the browser's click plumbing; being untrusted,
        the event refuses ``waitUntil``, which the work started before it ignores.
        """
        await self.worker().evaluate(
            """async ([tag, action]) => {
                const [notification] = await self.registration.getNotifications({ tag });
                if (!notification) throw new Error(`no notification tagged ${tag}`);
                const click = new NotificationEvent("notificationclick", { notification, action });
                self.dispatchEvent(click);
            }""",
            [tag, action],
        )

    async def notifications(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = await self.page.evaluate(NOTIFICATIONS_JS)
        return shown

    def worker(self) -> Worker:
        """The app's running service worker (also while no page is open)."""
        worker = next(
            (w for w in self.context.service_workers if w.url == self.app_url + "sw.js"), None
        )
        assert worker is not None, "the service worker is not running"
        return worker

    async def worker_notifications(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = await self.worker().evaluate(WORKER_NOTIFICATIONS_JS)
        return shown

    async def set_push_mode(self, mode: str | None) -> None:
        """How the stubbed push service answers subscribe(): None (it works), "hang",
        "fail", or "foreign" (a subscription on a push service the server refuses)."""
        if not self.page.url.startswith(self.server.url):
            await self.open()
        await self.page.evaluate(
            """(mode) => mode === null ? localStorage.removeItem("test-push-mode")
                                       : localStorage.setItem("test-push-mode", mode)""",
            mode,
        )

    async def deny_notifications(self) -> None:
        """The user blocked notifications for the app (as site settings would)."""
        target = await self.cdp.send("Target.getTargetInfo")
        await self.cdp.send(
            "Browser.setPermission",
            {
                "permission": {"name": "notifications"},
                "setting": "denied",
                "origin": self.server.url,
                "browserContextId": target["targetInfo"]["browserContextId"],
            },
        )

    async def announced(self, text: str) -> None:
        """Wait until the page's live region said ``text``."""
        await expect(self.page.locator("#announcer")).to_have_text(text)

    async def subscribe_calls(self) -> int:
        calls = await self.page.evaluate("localStorage.getItem('test-push-subscribe-calls')")
        return int(calls or 0)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=False)
        return path


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    async with run_push_service() as service:
        yield service


MakePhone = Callable[..., Awaitable[AppPhone]]


@pytest.fixture
async def make_phone(
    browser: Browser, server: Server, push_service: LocalPushService
) -> AsyncIterator[MakePhone]:
    """Open the app in a fresh context: phone-sized unless ``viewport`` says otherwise;
    with the push stub unless ``stub_push=False``; notifications allowed unless
    ``notifications=False``; ``init_script`` runs before the app (to take a browser
    feature away); other keywords go to ``new_context`` (``user_agent``, ...)."""
    errors: list[str] = []
    contexts: list[BrowserContext] = []

    async def make(
        *,
        viewport: ViewportSize = PHONE_VIEWPORT,
        stub_push: bool = True,
        notifications: bool = True,
        init_script: str | None = None,
        **options: Any,
    ) -> AppPhone:
        mobile = viewport["width"] < 600
        context = await browser.new_context(
            viewport=viewport,
            device_scale_factor=2 if mobile else 1,
            is_mobile=mobile,
            has_touch=mobile,
            locale="en-GB",
            timezone_id="Europe/London",
            **options,
        )
        contexts.append(context)
        return await _open_phone(
            context, server, push_service, errors, stub_push, notifications, init_script
        )

    try:
        yield make
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):
                await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
async def phone(make_phone: MakePhone) -> AppPhone:
    """The app in a fresh phone-sized context whose push subscription is at ``push_service``."""
    return await make_phone()


async def _open_phone(
    context: BrowserContext,
    server: Server,
    push_service: LocalPushService,
    errors: list[str],
    stub_push: bool,
    notifications: bool,
    init_script: str | None,
) -> AppPhone:
    subscription = push_service.subscribe()
    if notifications:
        await context.grant_permissions(["notifications"], origin=server.url)
    if init_script:
        await context.add_init_script(init_script)
    if stub_push:
        await context.add_init_script(
            PUSH_STUB.replace("__SUBSCRIPTION__", json.dumps(subscription.to_json()))
        )
    else:
        await context.add_init_script(WORKER_MESSAGES)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    app_phone = AppPhone(server, context, page, cdp, push_service, subscription)

    def on_registration(event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            if registration["isDeleted"]:
                app_phone.registrations.pop(registration["scopeURL"], None)
            else:
                app_phone.registrations[registration["scopeURL"]] = registration["registrationId"]

    cdp.on("ServiceWorker.workerRegistrationUpdated", on_registration)
    # Printed only when a test fails: the worker's errors and life cycle.
    cdp.on("ServiceWorker.workerErrorReported", lambda event: print(f"[sw error] {event}"))
    cdp.on("ServiceWorker.workerVersionUpdated", _print_worker_versions)
    await cdp.send("ServiceWorker.enable")
    watch_page(page, errors)
    context.on("page", lambda opened: watch_page(opened, errors))
    return app_phone


def watch_page(page: Page, errors: list[str]) -> None:
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Printed only when a test fails: what the page said while it ran.
    page.on("console", lambda message: print(f"[console.{message.type}] {message.text}"))
    page.on("requestfailed", lambda request: print(f"[request failed] {request.url}"))
    page.on("response", _print_http_error)


def _print_worker_versions(event: dict[str, Any]) -> None:
    for version in event["versions"]:
        print(f"[sw version] {version['versionId']} {version['runningStatus']} {version['status']}")


def _print_http_error(response: Response) -> None:
    if response.status >= 400:
        print(f"[HTTP {response.status}] {response.request.method} {response.url}")


@pytest.fixture
async def enrol_url(server: Server, db: asyncpg.Connection, alice: User) -> str:
    """A fresh one-time enrolment link for Alice, as the operator's CLI prints it."""
    issued = await issue_enrolment_code(db, alice.user_id, "cli", 600, issuer=server.url)
    return issued.url
