"""Approvals with user verification: a WebAuthn assertion bound to the transaction.

A software authenticator (tests/support/webauthn.py) makes real COSE keys and
signs ``authenticatorData || SHA-256(clientDataJSON)``; the challenge is
computed here from the pending-list entry, independently of the server.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from backchannel.db.users import User
from backchannel.errors import UserVerificationRequired
from backchannel.oauth.secrets import hash_secret
from backchannel.policy.rules import parse_rule
from backchannel.policy.store import add_rule
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp
from tests.support import factories
from tests.support.ciba import audit_events, decide, poll, start_auth_req_id, start_request
from tests.support.cli import Cli
from tests.support.user_verification import require_uv, rules_in_force, uv_phone, uv_settings

ACR_DEVICE = "urn:backchannel:acr:device"
ACR_SCA = "urn:backchannel:acr:sca"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return uv_settings(settings)


async def id_token_claims(running: RunningApp, rp: RegisteredClient, auth_req_id: str) -> Any:
    response = await poll(running.http, rp.basic_auth(), auth_req_id)
    assert response.status_code == 200, response.text
    keys = KeySet.import_key_set((await running.http.get("/jwks")).json())
    return jwt.decode(response.json()["id_token"], keys).claims


async def state_of(db: asyncpg.Connection, auth_req_id: str) -> str:
    value: str = await db.fetchval(
        "SELECT status FROM auth_requests WHERE id_hash = $1", hash_secret(auth_req_id)
    )
    return value


# --- approval ----------------------------------------------------------------------------------


async def test_an_approval_verified_on_the_phone_is_recorded_and_stated_in_the_id_token(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db, clients=[rp.client_id])
    phone = await uv_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message="Pay 80 EUR")
    entry = await phone.entry(http, auth_req_id)
    assert entry["user_verification"] == "required"

    response = await phone.approve_with_uv(http, entry)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    credential = await db.fetchrow("SELECT sign_count, last_used_at FROM webauthn_credentials")
    assert credential is not None
    assert credential["sign_count"] == 1 and credential["last_used_at"] is not None
    [decided] = await audit_events(db, "auth_request_decided")
    assert decided["detail"]["user_verification"]["verified"] is True
    claims = await id_token_claims(running, rp, auth_req_id)
    assert claims["acr"] == ACR_SCA
    assert claims["amr"] == ["swk", "user", "mfa"]
    assert running.services.metrics.user_verification.labels("verified")._value.get() == 1


async def test_a_request_needing_uv_cannot_be_approved_without_it_but_can_be_refused(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    first = await start_auth_req_id(http, rp.basic_auth())
    entry = await phone.entry(http, first)
    response = await phone.decide(http, entry, "approve")
    assert response.status_code == 403
    assert response.json() == {
        "error": "user_verification_required",
        "error_description": (
            "approving this request needs your fingerprint, face or PIN on this phone"
        ),
    }
    assert await state_of(db, first) == "pending"
    assert running.services.metrics.user_verification.labels("missing")._value.get() == 1
    [refused] = await audit_events(db, "user_verification_failed")
    assert refused["detail"] == {"reason": "missing", "error": "the approval carries no assertion"}
    request = await db.fetchrow(
        "SELECT id, client_id, user_id FROM auth_requests WHERE id_hash = $1", hash_secret(first)
    )
    assert (refused["auth_request_id"], refused["client_id"], refused["user_id"]) == (
        request["id"],
        rp.client_id,
        alice.user_id,
    )
    assert refused["device_id"] == phone.device_id

    # Deny and "This wasn't me" never need it.
    assert (await phone.decide(http, entry, "deny")).json()["status"] == "denied"
    second = await start_auth_req_id(http, rp.basic_auth())
    response = await phone.decide(http, await phone.entry(http, second), "not_me")
    assert response.json()["status"] == "denied"


async def test_a_device_without_a_credential_is_told_why_it_cannot_approve(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id, register=False)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    pending = (await phone.call(http, "/device/requests")).json()
    assert pending["requests"][0]["user_verification"] == "required"
    assert pending["webauthn"] == {"rp_id": "localhost", "credentials": []}
    # Another device's credential does not help this one.
    other = await uv_phone(http, db, alice.user_id)
    phone.authenticator = other.authenticator
    response = await phone.approve_with_uv(http, await phone.entry(http, auth_req_id))
    assert response.status_code == 403
    assert response.json()["error"] == "user_verification_failed"
    [refused] = await audit_events(db, "user_verification_failed")
    assert refused["detail"]["reason"] == "unknown_credential"
    assert await state_of(db, auth_req_id) == "pending"


@pytest.mark.parametrize(
    ("get", "reason"),
    [
        ({"origin": "https://login.example.com"}, "origin"),
        ({"rp_id": "example.com"}, "rp_id"),
        ({"uv": False}, "user_not_verified"),
    ],
    ids=["wrong-origin", "wrong-rp-id", "uv-flag-missing"],
)
async def test_an_assertion_that_does_not_fit_is_refused_and_the_request_stays_pending(
    running: RunningApp,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    get: dict[str, Any],
    reason: str,
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    response = await phone.approve_with_uv(http, await phone.entry(http, auth_req_id), **get)
    assert response.status_code == 403
    assert response.json()["error"] == "user_verification_failed"
    [refused] = await audit_events(db, "user_verification_failed")
    assert refused["detail"]["reason"] == reason
    assert refused["auth_request_id"] is not None and refused["device_id"] == phone.device_id
    assert await state_of(db, auth_req_id) == "pending"
    assert await db.fetchval("SELECT sign_count FROM webauthn_credentials") == 0
    assert running.services.metrics.user_verification.labels("refused")._value.get() == 1


async def test_an_assertion_made_for_another_request_is_refused(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    small = await start_auth_req_id(http, rp.basic_auth(), binding_message="Pay 5 EUR")
    large = await start_auth_req_id(http, rp.basic_auth(), binding_message="Pay 5000 EUR")
    small_entry, large_entry = await phone.entry(http, small), await phone.entry(http, large)
    # Fingerprint given for the small payment, used to approve the large one.
    response = await phone.approve_with_uv(http, large_entry, challenge_of=small_entry)
    assert response.status_code == 403
    [refused] = await audit_events(db, "user_verification_failed")
    assert refused["detail"]["reason"] == "challenge"
    # Same request, but another nonce (a replay from an earlier round): refused too.
    stale = {**large_entry, "challenge": small_entry["challenge"]}
    response = await phone.approve_with_uv(http, large_entry, challenge_of=stale)
    assert response.status_code == 403
    assert await state_of(db, large) == "pending"
    assert (await phone.approve_with_uv(http, large_entry)).status_code == 200


async def test_a_counter_going_backwards_is_refused_and_audited_as_a_possible_clone(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    first = await start_auth_req_id(http, rp.basic_auth())
    assert (await phone.approve_with_uv(http, await phone.entry(http, first), count=5)).is_success
    for count in (3, 5):  # behind, and not ahead
        auth_req_id = await start_auth_req_id(http, rp.basic_auth())
        entry = await phone.entry(http, auth_req_id)
        response = await phone.approve_with_uv(http, entry, count=count)
        assert response.status_code == 403
        assert "may have been copied" in response.json()["error_description"]
        assert await state_of(db, auth_req_id) == "pending"
        await phone.decide(http, entry, "deny")
    regressions = await audit_events(db, "webauthn_counter_regressed")
    assert [r["detail"]["reason"] for r in regressions] == ["counter", "counter"]
    assert await db.fetchval("SELECT sign_count FROM webauthn_credentials") == 5
    assert running.services.metrics.user_verification.labels("clone_suspected")._value.get() == 2


async def test_an_authenticator_without_a_counter_is_accepted(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    for _ in range(2):
        auth_req_id = await start_auth_req_id(http, rp.basic_auth())
        response = await phone.approve_with_uv(http, await phone.entry(http, auth_req_id), count=0)
        assert response.status_code == 200, response.text


# --- what asks for user verification -----------------------------------------------------------


async def test_require_uv_rules_follow_the_rule_targeting(
    running: RunningApp, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    http = running.http
    scopes = ("openid", "payments")
    bank: RegisteredClient = await make_client(name="Example Bank", scopes=scopes)
    rp: RegisteredClient = await make_client(scopes=scopes)
    await factories.create_user(db, subject="bob", email="bob@example.com")
    await db.execute(
        "INSERT INTO user_groups (user_id, group_name) VALUES ($1, 'retail')", alice.user_id
    )
    await add_rule(
        db,
        parse_rule(
            {
                "name": "retail-payments",
                "effect": "require-uv",
                "mode": "enforce",
                "target": {"groups": ["retail"], "clients": [bank.client_id]},
                "when": {"scopes_any": ["payments"]},
            }
        ),
    )
    await rules_in_force(running, "retail-payments")
    cases = [
        (bank, "alice@example.com", "openid payments", "required"),
        (bank, "alice@example.com", "openid", None),  # not the scope
        (rp, "alice@example.com", "openid payments", None),  # not the client
        (bank, "bob@example.com", "openid payments", None),  # not in the group
    ]
    for client, hint, scope, _expected in cases:
        response = await start_request(http, client.basic_auth(), login_hint=hint, scope=scope)
        assert response.status_code == 200, response.text
    rows = await db.fetch("SELECT user_verification, acr FROM auth_requests ORDER BY id")
    assert [r["user_verification"] for r in rows] == [c[3] for c in cases]
    assert [r["acr"] for r in rows] == [ACR_SCA, ACR_DEVICE, ACR_DEVICE, ACR_DEVICE]
    [issued, *_] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["policy"]["require_uv"] == ["retail-payments"]
    assert issued["detail"]["user_verification"] == "required"


async def test_report_only_counts_the_approvals_that_would_have_needed_uv(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    await require_uv(running, db, mode="report-only")
    phone = await uv_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    entry = await phone.entry(http, auth_req_id)
    assert entry["user_verification"] == "none"  # nothing changes for the user
    assert (await phone.decide(http, entry, "approve")).json()["status"] == "approved"
    [issued] = await audit_events(db, "auth_request_issued")
    assert issued["detail"]["policy"]["would_require_uv"] == ["uv-report-only"]
    [decided] = await audit_events(db, "auth_request_decided")
    assert decided["detail"]["user_verification"] == {"verified": False, "would_require": True}
    metrics = running.services.metrics
    assert metrics.user_verification.labels("would_require")._value.get() == 1
    # A denial is not an approval that would have needed it.
    denied = await start_auth_req_id(http, rp.basic_auth())
    await phone.decide(http, await phone.entry(http, denied), "deny")
    assert metrics.user_verification.labels("would_require")._value.get() == 1
    claims = await id_token_claims(running, rp, auth_req_id)
    assert (claims["acr"], claims["amr"]) == (ACR_DEVICE, ["swk"])


async def test_an_operator_cannot_approve_a_request_needing_uv_in_the_users_place(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    await require_uv(running, db)
    auth_req_id = await start_auth_req_id(running.http, rp.basic_auth())
    with pytest.raises(UserVerificationRequired):
        await decide(db, auth_req_id, "approved")
    assert await state_of(db, auth_req_id) == "pending"
    await decide(db, auth_req_id, "denied")
    assert await state_of(db, auth_req_id) == "denied"


# --- acr_values and the tokens -----------------------------------------------------------------


async def test_acr_values_asking_for_sca_require_uv_and_unknown_levels_are_refused(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await uv_phone(http, db, alice.user_id)
    strong = await start_auth_req_id(
        http, rp.basic_auth(), acr_values=f"urn:example:unknown {ACR_SCA} {ACR_DEVICE}"
    )
    entry = await phone.entry(http, strong)
    assert entry["user_verification"] == "required"
    assert (await phone.decide(http, entry, "approve")).status_code == 403
    assert (await phone.approve_with_uv(http, entry)).status_code == 200
    claims = await id_token_claims(running, rp, strong)
    assert (claims["acr"], claims["amr"]) == (ACR_SCA, ["swk", "user", "mfa"])

    refused = await start_request(http, rp.basic_auth(), acr_values="urn:example:gold")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert "acr_values" in refused.json()["error_description"]
    [rejected] = await audit_events(db, "auth_request_rejected")
    assert rejected["detail"]["error"] == "invalid_request"

    # Asking for the device level does not lower what the policy requires.
    await require_uv(running, db)
    held = await start_auth_req_id(http, rp.basic_auth(), acr_values=ACR_DEVICE)
    assert (await phone.entry(http, held))["user_verification"] == "required"


async def test_the_device_key_alone_is_swk_and_an_operators_decision_claims_nothing(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await uv_phone(http, db, alice.user_id, register=False)
    on_phone = await start_auth_req_id(http, rp.basic_auth())
    await phone.decide(http, await phone.entry(http, on_phone), "approve")
    claims = await id_token_claims(running, rp, on_phone)
    assert (claims["acr"], claims["amr"]) == (ACR_DEVICE, ["swk"])

    by_operator = await start_auth_req_id(http, rp.basic_auth())
    await decide(db, by_operator, "approved")
    claims = await id_token_claims(running, rp, by_operator)
    assert "acr" not in claims and "amr" not in claims


async def test_a_refreshed_id_token_keeps_describing_the_original_approval(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    http = running.http
    phone = await uv_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(
        http, rp.basic_auth(), scope="openid offline_access", acr_values=ACR_SCA
    )
    await phone.approve_with_uv(http, await phone.entry(http, auth_req_id))
    tokens = (await poll(http, rp.basic_auth(), auth_req_id)).json()
    refreshed = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=rp.basic_auth(),
    )
    assert refreshed.status_code == 200, refreshed.text
    keys = KeySet.import_key_set((await http.get("/jwks")).json())
    claims = jwt.decode(refreshed.json()["id_token"], keys).claims
    assert (claims["acr"], claims["amr"]) == (ACR_SCA, ["swk", "user", "mfa"])


async def test_discovery_lists_the_acr_values(http: httpx.AsyncClient) -> None:
    metadata = (await http.get("/.well-known/openid-configuration")).json()
    assert metadata["acr_values_supported"] == [ACR_DEVICE, ACR_SCA]
    assert {"acr", "amr"} <= set(metadata["claims_supported"])


async def test_an_operator_lists_and_removes_a_lost_webauthn_key_and_approvals_need_a_new_one(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User, cli: Cli
) -> None:
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    await factories.create_user(db, subject="bob", email="bob@example.com")

    listed = await cli("device", "keys", "--user", "alice", "--json")
    assert listed.code == 0, listed.err
    [key] = listed.json()["keys"]
    assert key["device_id"] == phone.device_id
    assert (await cli("device", "keys", "--user", "bob", "--json")).json() == {"keys": []}

    removed = await cli("device", "remove-key", "--", key["credential_id"])
    assert removed.code == 0, removed.err
    [event] = await audit_events(db, "webauthn_credential_removed")
    assert event["device_id"] == phone.device_id
    assert event["detail"]["credential_id"] == key["credential_id"]
    assert event["detail"]["by"].startswith("cli:")
    again = await cli("device", "remove-key", "--", key["credential_id"])
    assert again.code == 1 and "no WebAuthn key" in again.err
    dashed = await cli("device", "remove-key", "--", "-" + key["credential_id"][1:])
    assert dashed.code == 1 and "no WebAuthn key '-" in dashed.err  # an id, not an option

    # The device stays enrolled, but the removed key no longer approves.
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    response = await phone.approve_with_uv(http, await phone.entry(http, auth_req_id))
    assert response.status_code == 403
    assert response.json()["error"] == "user_verification_failed"
    assert await state_of(db, auth_req_id) == "pending"
