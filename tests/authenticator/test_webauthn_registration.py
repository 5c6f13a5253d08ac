"""Registering WebAuthn credentials on a device, with a software authenticator.

The issuer is ``http://localhost:8000``: an IP address cannot be a WebAuthn RP ID.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.settings import Settings, SettingsError
from tests.conftest import start_app
from tests.support.ciba import audit_events
from tests.support.device import Phone, enrolment_code
from tests.support.webauthn import SoftAuthenticator, TestCA, b64url

UV_ISSUER = "http://localhost:8000"
OPTIONS = "/device/webauthn/register-options"
REGISTER = "/device/webauthn/register"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(issuer=UV_ISSUER)


async def uv_phone(http: httpx.AsyncClient, db: asyncpg.Connection, user_id: int) -> Phone:
    phone = Phone(issuer=UV_ISSUER)
    response = await phone.enrol(http, await enrolment_code(db, user_id))
    assert response.status_code == 201, response.text
    return phone


async def options_for(http: httpx.AsyncClient, phone: Phone) -> dict[str, Any]:
    response = await phone.call(http, OPTIONS)
    assert response.status_code == 200, response.text
    options: dict[str, Any] = response.json()["publicKey"]
    return options


async def register(
    http: httpx.AsyncClient,
    phone: Phone,
    authenticator: SoftAuthenticator,
    options: dict[str, Any] | None = None,
    **create: Any,
) -> httpx.Response:
    options = options or await options_for(http, phone)
    credential = authenticator.create(options, **create)
    return await phone.call(http, REGISTER, credential=credential)


async def test_registration_stores_the_credential_with_key_counter_aaguid_and_transports(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await uv_phone(http, db, alice.user_id)
    options = await options_for(http, phone)
    assert options["rp"] == {"id": "localhost", "name": "localhost"}
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "none"
    assert options["hints"] == ["client-device"]  # the phone's own authenticator preferred
    assert {p["alg"] for p in options["pubKeyCredParams"]} == {-7, -8, -257}
    assert len(base64.urlsafe_b64decode(options["challenge"] + "==")) == 32
    assert options["user"]["name"] == "alice"
    # The user handle is opaque and the same for every registration of the user.
    assert options["user"]["id"] == (await options_for(http, phone))["user"]["id"]
    # The challenge is stored hashed, for this device only.
    stored = await db.fetch("SELECT challenge_hash, device_id FROM webauthn_challenges")
    assert len(stored) == 2 and {r["device_id"] for r in stored} == {phone.device_id}
    assert all(options["challenge"].encode() not in bytes(r["challenge_hash"]) for r in stored)

    authenticator = SoftAuthenticator()
    response = await register(http, phone, authenticator, options)
    assert response.status_code == 201, response.text
    assert response.json()["credential_id"] == b64url(authenticator.credential_id)
    row = await db.fetchrow("SELECT * FROM webauthn_credentials")
    assert row is not None
    assert bytes(row["credential_id"]) == authenticator.credential_id
    assert bytes(row["public_key"]) == authenticator.cose_public_key()
    assert (row["device_id"], row["user_id"]) == (phone.device_id, alice.user_id)
    assert (row["alg"], row["sign_count"], row["aaguid"]) == (-7, 0, authenticator.aaguid)
    assert row["transports"] == ["internal", "hybrid"]
    assert (row["attestation_format"], row["attested"]) == ("none", False)
    [audited] = await audit_events(db, "webauthn_credential_registered")
    assert audited["device_id"] == phone.device_id
    assert audited["detail"]["credential_id"] == b64url(authenticator.credential_id)
    assert audited["detail"]["aaguid"] == str(authenticator.aaguid)

    # A device may hold more than one credential; the next options exclude the first.
    second = await options_for(http, phone)
    assert [c["id"] for c in second["excludeCredentials"]] == [b64url(authenticator.credential_id)]
    assert (await register(http, phone, SoftAuthenticator(), second)).status_code == 201
    pending = (await phone.call(http, "/device/requests")).json()
    assert pending["webauthn"]["rp_id"] == "localhost"
    assert len(pending["webauthn"]["credentials"]) == 2
    devices = (await phone.call(http, "/device/devices")).json()["devices"]
    assert devices[0]["user_verification_keys"] == 2


async def test_a_registration_challenge_is_single_use_short_lived_and_for_its_device_only(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = await uv_phone(http, db, alice.user_id)
    other = await uv_phone(http, db, alice.user_id)

    options = await options_for(http, phone)
    credential = SoftAuthenticator().create(options)
    # Another device (same user) cannot spend it.
    refused = await other.call(http, REGISTER, credential=credential)
    assert refused.status_code == 400
    assert "unknown, used or expired" in refused.json()["error_description"]
    assert (await phone.call(http, REGISTER, credential=credential)).status_code == 201
    # Spent by the first use.
    replay = SoftAuthenticator().create(options)
    assert (await phone.call(http, REGISTER, credential=replay)).status_code == 400

    # A failed attempt spends it too.
    options = await options_for(http, phone)
    bad = SoftAuthenticator().create(options, origin="https://evil.example")
    assert (await phone.call(http, REGISTER, credential=bad)).status_code == 400
    good = SoftAuthenticator().create(options)
    assert (await phone.call(http, REGISTER, credential=good)).status_code == 400

    # Expired.
    options = await options_for(http, phone)
    await db.execute("UPDATE webauthn_challenges SET expires_at = now() - interval '1 second'")
    late = SoftAuthenticator().create(options)
    assert (await phone.call(http, REGISTER, credential=late)).status_code == 400
    assert await db.fetchval("SELECT count(*) FROM webauthn_credentials") == 1


@pytest.mark.parametrize(
    ("create", "expected"),
    [
        ({"uv": False}, "User verification is required"),
        ({"origin": "https://login.example.com"}, "origin"),
        ({"rp_id": "example.com"}, "RP ID"),
    ],
    ids=["without-user-verification", "wrong-origin", "wrong-rp-id"],
)
async def test_a_registration_that_does_not_verify_is_refused_and_audited(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    alice: User,
    create: dict[str, Any],
    expected: str,
) -> None:
    phone = await uv_phone(http, db, alice.user_id)
    response = await register(http, phone, SoftAuthenticator(), **create)
    assert response.status_code == 400
    assert expected in response.json()["error_description"]
    assert await db.fetchval("SELECT count(*) FROM webauthn_credentials") == 0
    [audited] = await audit_events(db, "webauthn_registration_refused")
    assert audited["device_id"] == phone.device_id


async def test_an_issuer_on_an_ip_address_offers_no_registration(
    settings: Settings, db: asyncpg.Connection, alice: User
) -> None:
    async for running in start_app(settings.replace(issuer="http://127.0.0.1:8000")):
        phone = Phone()
        await phone.enrol(running.http, await enrolment_code(db, alice.user_id))
        assert (await running.http.get("/device/config")).json()["webauthn_rp_id"] is None
        response = await phone.call(running.http, OPTIONS)
        assert response.status_code == 409
        assert "IP address" in response.json()["error_description"]
        pending = (await phone.call(running.http, "/device/requests")).json()
        assert pending["webauthn"] is None


# --- direct attestation ----------------------------------------------------------------------


@pytest.fixture
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def roots(tmp_path: Path, ca: TestCA) -> Path:
    path = tmp_path / "roots.pem"
    path.write_bytes(ca.pem())
    return path


def direct_settings(settings: Settings, roots: Path, *aaguids: uuid.UUID) -> Settings:
    return settings.replace(
        webauthn_attestation="direct",
        webauthn_attestation_roots=str(roots),
        webauthn_allowed_aaguids=tuple(str(a) for a in aaguids),
    )


async def test_direct_attestation_accepts_only_attested_allowed_authenticators(
    settings: Settings, db: asyncpg.Connection, alice: User, ca: TestCA, roots: Path
) -> None:
    allowed = uuid.uuid4()
    async for running in start_app(direct_settings(settings, roots, allowed)):
        http = running.http
        phone = await uv_phone(http, db, alice.user_id)
        assert (await options_for(http, phone))["attestation"] == "direct"

        refusals = {
            "no attestation": ({"attestation": "none"}, allowed),
            "self attestation": ({"attestation": "self"}, allowed),
            "another CA": ({"attestation": "packed", "ca": TestCA()}, allowed),
            "model not allowed": ({"attestation": "packed", "ca": ca}, uuid.uuid4()),
            "certificate for another model": (
                {"attestation": "packed", "ca": ca, "certified_aaguid": uuid.uuid4()},
                allowed,
            ),
        }
        for name, (create, aaguid) in refusals.items():
            response = await register(http, phone, SoftAuthenticator(aaguid=aaguid), **create)
            assert response.status_code == 400, name
        assert await db.fetchval("SELECT count(*) FROM webauthn_credentials") == 0

        good = SoftAuthenticator(aaguid=allowed)
        response = await register(http, phone, good, attestation="packed", ca=ca)
        assert response.status_code == 201, response.text
        row = await db.fetchrow("SELECT attestation_format, attested FROM webauthn_credentials")
        assert row is not None and tuple(row) == ("packed", True)


def test_settings_refuse_an_aaguid_list_without_direct_attestation(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ALLOWED_AAGUIDS: needs"):
        Settings(webauthn_allowed_aaguids=(str(uuid.uuid4()),)).validate()
    with pytest.raises(SettingsError, match="ATTESTATION_ROOTS: direct attestation needs"):
        Settings(webauthn_attestation="direct").validate()
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here")
    with pytest.raises(SettingsError, match="no PEM certificate"):
        Settings(webauthn_attestation="direct", webauthn_attestation_roots=str(empty)).validate()
    with pytest.raises(SettingsError, match="one of none, direct"):
        Settings(webauthn_attestation="indirect").validate()
