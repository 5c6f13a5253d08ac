"""Fingerprint, face or PIN in the authenticator PWA, with Chromium's virtual authenticator.

CDP's ``WebAuthn`` domain gives the page a platform authenticator
(``transport: internal``) that verifies the user or not
(``hasUserVerification``, ``isUserVerified``, changeable with
``WebAuthn.setUserVerified``). The issuer is ``http://localhost:PORT``: WebAuthn
refuses an IP address as its RP ID.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.async_api import expect

from backchannel.authenticator.messages import uv_challenge
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from backchannel.settings import Settings
from tests.browser.conftest import AppPhone, Server
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, poll, start_auth_req_id
from tests.support.device import ref_of

pytestmark = pytest.mark.browser

ACR_SCA = "urn:backchannel:acr:sca"
MESSAGE = "Pay 1,250.00 EUR to ACME Ltd"
# A page whose WebAuthn call leaves user verification to the authenticator: what an
# app tampered with (or a bug) would send. The server must still refuse the approval.
SKIP_UV = """
(() => {
  const get = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = (options) =>
    get({ ...options, publicKey: { ...options.publicKey, userVerification: "discouraged" } });
})();
"""


@pytest.fixture
def issuer_host() -> str:
    return "localhost"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(fatigue_max_pending=0, fatigue_max_prompts=0, not_me_mute=0)


@pytest.fixture
async def relying_party(server: Server, rp: RegisteredClient) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=rp.basic_auth()) as http:
        yield http


async def virtual_authenticator(phone: AppPhone, *, verifies: bool = True) -> str:
    """A platform authenticator with user verification, for this page."""
    await phone.cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await phone.cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": verifies,
                "automaticPresenceSimulation": True,
            }
        },
    )
    authenticator_id: str = added["authenticatorId"]
    return authenticator_id


async def set_verifies(phone: AppPhone, authenticator_id: str, verifies: bool) -> None:
    await phone.cdp.send(
        "WebAuthn.setUserVerified",
        {"authenticatorId": authenticator_id, "isUserVerified": verifies},
    )


async def sign_count(phone: AppPhone, authenticator_id: str) -> int:
    found = await phone.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    [credential] = found["credentials"]
    count: int = credential["signCount"]
    return count


async def require_uv(server: Server, db: asyncpg.Connection, client_id: str) -> None:
    """An enforced require-uv rule for ``client_id``, in force in the running app."""
    rule = {
        "name": "payments-need-uv",
        "effect": "require-uv",
        "mode": "enforce",
        "target": {"clients": [client_id]},
    }
    await add_rule(db, parse_rule(rule))
    policy = server.app.state.services.policy
    for _ in range(300):
        if [r.name for r in (await policy.current()).rules] == ["payments-need-uv"]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app never saw the require-uv rule")


async def open_request(phone: AppPhone, auth_req_id: str) -> None:
    await phone.open(f"#request={ref_of(auth_req_id)}")
    await expect(phone.page.locator(".approval .client")).to_have_text("Acme Coffee")


async def id_token(relying_party: httpx.AsyncClient, auth_req_id: str) -> dict[str, Any]:
    tokens = await poll(relying_party, {}, auth_req_id)
    assert tokens.status_code == 200, tokens.text
    keys = KeySet.import_key_set((await relying_party.get("/jwks")).json())
    claims: dict[str, Any] = jwt.decode(tokens.json()["id_token"], keys).claims
    return claims


async def test_enrolment_registers_a_key_and_a_request_policy_marks_is_approved_with_it(
    phone: AppPhone,
    enrol_url: str,
    server: Server,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    relying_party: httpx.AsyncClient,
) -> None:
    authenticator = await virtual_authenticator(phone)
    await phone.enrol(enrol_url)
    await expect(phone.page.locator(".uv-status.on")).to_contain_text(
        "Fingerprint, face or PIN is set up"
    )
    await phone.screenshot("uv-enrolled-360x740.png")
    row = await db.fetchrow("SELECT device_id, transports FROM webauthn_credentials")
    assert row is not None and "internal" in row["transports"]

    await require_uv(server, db, rp.client_id)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=MESSAGE)
    await open_request(phone, auth_req_id)
    page = phone.page
    await expect(page.locator(".uv-needed")).to_have_text(
        "Approving asks for your fingerprint, face or phone PIN."
    )
    await phone.screenshot("uv-approval-360x740.png")
    before = await sign_count(phone, authenticator)
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    assert await sign_count(phone, authenticator) == before + 1
    claims = await id_token(relying_party, auth_req_id)
    assert claims["acr"] == ACR_SCA
    assert claims["amr"] == ["swk", "user", "mfa"]


async def test_when_the_authenticator_does_not_verify_the_user_nothing_is_approved(
    phone: AppPhone,
    enrol_url: str,
    server: Server,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    relying_party: httpx.AsyncClient,
) -> None:
    authenticator = await virtual_authenticator(phone)
    await phone.enrol(enrol_url)
    await require_uv(server, db, rp.client_id)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=MESSAGE)
    await set_verifies(phone, authenticator, False)
    await open_request(phone, auth_req_id)
    page = phone.page
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator(".notice.error")).to_contain_text(
        "wasn't confirmed, so nothing was approved"
    )
    await phone.screenshot("uv-not-confirmed-360x740.png")
    pending = await poll(relying_party, {}, auth_req_id)
    assert pending.json()["error"] == "authorization_pending"
    # Deny never needs it.
    await page.get_by_role("button", name="Deny").click()
    await expect(page.get_by_role("heading", name="Denied")).to_be_visible()


async def test_an_approval_whose_assertion_lacks_user_verification_is_refused_by_the_server(
    phone: AppPhone,
    enrol_url: str,
    server: Server,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    relying_party: httpx.AsyncClient,
) -> None:
    authenticator = await virtual_authenticator(phone)
    await phone.enrol(enrol_url)
    await require_uv(server, db, rp.client_id)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=MESSAGE)
    await set_verifies(phone, authenticator, False)
    await open_request(phone, auth_req_id)
    await phone.context.add_init_script(SKIP_UV)
    await phone.page.reload()  # init scripts run on a new document
    await expect(phone.page.locator(".approval .client")).to_have_text("Acme Coffee")
    await phone.page.get_by_role("button", name="Approve").click()
    await expect(phone.page.locator(".notice.error")).to_contain_text(
        "didn't fit this request, so nothing was approved"
    )
    [refused] = await audit_events(db, "user_verification_failed")
    assert refused["detail"]["reason"] == "user_not_verified"
    pending = await poll(relying_party, {}, auth_req_id)
    assert pending.json()["error"] == "authorization_pending"


async def test_a_request_the_policy_does_not_mark_is_approved_without_user_verification(
    phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient
) -> None:
    authenticator = await virtual_authenticator(phone)
    await phone.enrol(enrol_url)
    before = await sign_count(phone, authenticator)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=MESSAGE)
    await open_request(phone, auth_req_id)
    await expect(phone.page.locator(".uv-needed")).to_have_count(0)
    await phone.page.get_by_role("button", name="Approve").click()
    await expect(phone.page.get_by_role("heading", name="Approved")).to_be_visible()
    assert await sign_count(phone, authenticator) == before  # no WebAuthn ceremony ran
    claims = await id_token(relying_party, auth_req_id)
    assert claims["amr"] == ["swk"]


async def test_a_phone_without_a_key_explains_why_and_sets_one_up_to_approve(
    phone: AppPhone,
    enrol_url: str,
    server: Server,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    relying_party: httpx.AsyncClient,
) -> None:
    # The set-up at enrolment is not confirmed: the phone is enrolled without a key.
    authenticator = await virtual_authenticator(phone, verifies=False)
    await phone.enrol(enrol_url)
    page = phone.page
    await expect(page.locator(".uv-status.off")).to_contain_text("isn't set up yet")
    assert await db.fetchval("SELECT count(*) FROM webauthn_credentials") == 0

    await require_uv(server, db, rp.client_id)
    auth_req_id = await start_auth_req_id(relying_party, {}, binding_message=MESSAGE)
    await open_request(phone, auth_req_id)
    await expect(page.locator(".uv-needed.missing")).to_contain_text(
        "isn't set up on this phone yet"
    )
    approve = page.get_by_role("button", name="Approve")
    await expect(approve).to_be_disabled()
    await phone.screenshot("uv-missing-360x740.png")

    await set_verifies(phone, authenticator, True)
    await page.get_by_role("button", name="Set up fingerprint, face or PIN").click()
    await expect(page.locator(".notice.info")).to_contain_text(
        "Fingerprint, face or PIN is set up on this phone."
    )
    await expect(approve).to_be_enabled()
    await approve.click()
    await expect(page.get_by_role("heading", name="Approved")).to_be_visible()
    assert (await id_token(relying_party, auth_req_id))["acr"] == ACR_SCA

    await phone.open("#devices")
    await expect(page.locator(".device .uv")).to_have_text("Fingerprint, face or PIN: on")


async def test_the_apps_uv_challenge_matches_the_servers(phone: AppPhone) -> None:
    await phone.open()
    request = {
        "ref": "cd" * 32,
        "client_id": "bank-app",
        "client_name": "Exämple Bank 東京",
        "binding_message": 'Pay "1,250.00" EUR \\ to ACME ☕',
        "scope": ["openid", "payments"],
        "challenge": "n0nce-_",
    }
    cases = [request, {**request, "binding_message": None}]
    digests = await phone.page.evaluate(
        """async (requests) => {
            const { uvChallenge } = await import("./digest.js");
            const digests = await Promise.all(requests.map(uvChallenge));
            return digests.map((d) => Array.from(d));
        }""",
        cases,
    )
    expected = [
        uv_challenge(
            ref=c["ref"],
            client_id=c["client_id"],
            client_name=c["client_name"],
            binding_message=c["binding_message"],
            scope=c["scope"],
            authorization_details=None,
            nonce=c["challenge"],
        )
        for c in cases
    ]
    assert [bytes(d) for d in digests] == expected
