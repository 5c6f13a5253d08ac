"""Approving with user verification in tests: a localhost issuer, a phone with a
software WebAuthn authenticator, and require-uv rules."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from backchannel.settings import Settings
from tests.conftest import RunningApp
from tests.support.device import Phone, enrolment_code, ref_of
from tests.support.webauthn import SoftAuthenticator, uv_challenge

# An IP address cannot be a WebAuthn RP ID: these tests use a host name.
UV_ISSUER = "http://localhost:8000"


def uv_settings(settings: Settings) -> Settings:
    """The localhost issuer, without push-fatigue caps or "not me" mutes."""
    return settings.replace(
        issuer=UV_ISSUER, fatigue_max_pending=0, fatigue_max_prompts=0, not_me_mute=0
    )


async def rules_in_force(running: RunningApp, *names: str) -> None:
    for _ in range(300):
        current = await running.services.policy.current()
        if {r.name for r in current.rules} == set(names):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the app never saw the rules {names}")


async def require_uv(
    running: RunningApp, db: asyncpg.Connection, mode: str = "enforce", **target: Any
) -> None:
    """A require-uv rule for ``target`` (every request when empty)."""
    name = f"uv-{mode}"
    rule = {"name": name, "effect": "require-uv", "mode": mode, "target": target}
    await add_rule(db, parse_rule(rule))
    await rules_in_force(running, name)


class UVPhone(Phone):
    """A phone with a WebAuthn credential registered on it."""

    authenticator: SoftAuthenticator

    async def register(
        self, http: httpx.AsyncClient, authenticator: SoftAuthenticator | None = None
    ) -> SoftAuthenticator:
        authenticator = authenticator or SoftAuthenticator()
        options = (await self.call(http, "/device/webauthn/register-options")).json()["publicKey"]
        response = await self.call(
            http, "/device/webauthn/register", credential=authenticator.create(options)
        )
        assert response.status_code == 201, response.text
        self.authenticator = authenticator
        return authenticator

    async def entry(self, http: httpx.AsyncClient, auth_req_id: str) -> dict[str, Any]:
        [entry] = [e for e in await self.pending(http) if e["ref"] == ref_of(auth_req_id)]
        return entry

    async def approve_with_uv(
        self,
        http: httpx.AsyncClient,
        entry: dict[str, Any],
        *,
        challenge_of: dict[str, Any] | None = None,
        **get: Any,
    ) -> httpx.Response:
        assertion = self.authenticator.get(uv_challenge(challenge_of or entry), **get)
        return await self.decide(http, entry, "approve", webauthn=assertion)


async def uv_phone(
    http: httpx.AsyncClient, db: asyncpg.Connection, user_id: int, *, register: bool = True
) -> UVPhone:
    phone = UVPhone(issuer=UV_ISSUER)
    response = await phone.enrol(http, await enrolment_code(db, user_id))
    assert response.status_code == 201, response.text
    if register:
        await phone.register(http)
    return phone
