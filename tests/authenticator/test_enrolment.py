"""Enrolment: one-time codes (CLI and admin API) and POST /device/enrol."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from backchannel.authenticator.account import masked_email
from backchannel.cli import main
from backchannel.db.users import User
from backchannel.oauth.secrets import hash_secret
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, poll, start_auth_req_id
from tests.support.device import Phone, enrolment_code, new_subscription, post_jose, sign_jws


async def test_enrolment_with_a_valid_code_registers_the_device(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone(name="Pixel 9")
    response = await phone.enrol(http, code)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"device_id", "user", "vapid_public_key", "push"}
    assert body["user"] == {"display_name": "Alice Example", "masked_email": "a•••e@example.com"}
    assert body["push"] is True
    row = await db.fetchrow("SELECT * FROM devices WHERE device_id = $1", body["device_id"])
    assert row["user_id"] == alice.user_id
    assert row["name"] == "Pixel 9"
    assert row["jwk_thumbprint"] == phone.key.thumbprint()
    assert row["public_jwk"] == {
        k: v for k, v in phone.key.as_dict(private=False).items() if k in ("kty", "crv", "x", "y")
    }
    assert row["push_endpoint"] == phone.subscription["endpoint"]
    assert row["push_auth"] == phone.subscription["keys"]["auth"]
    spent = await db.fetchrow(
        "SELECT used_at, device_id FROM enrolment_codes WHERE code_hash = $1", hash_secret(code)
    )
    assert spent["used_at"] is not None and spent["device_id"] == body["device_id"]
    [event] = await audit_events(db, "device_enrolled")
    assert event["user_id"] == alice.user_id and event["device_id"] == body["device_id"]
    # The new device can call at once.
    assert (await phone.call(http, "/device/requests")).status_code == 200


async def test_a_phone_without_push_enrols_lists_its_requests_and_turns_push_on_later(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, rp: RegisteredClient
) -> None:
    phone = Phone(name="Laptop")
    # A None claim is left out: the browser could not subscribe.
    response = await phone.enrol(http, await enrolment_code(db, alice.user_id), subscription=None)
    assert response.status_code == 201, response.text
    assert response.json()["push"] is False
    row = await db.fetchrow("SELECT * FROM devices WHERE device_id = $1", phone.device_id)
    assert [row[c] for c in ("push_endpoint", "push_p256dh", "push_auth", "vapid_kid")] == [
        None
    ] * 4
    [event] = await audit_events(db, "device_enrolled")
    assert event["detail"]["push"] is False

    # No push is queued for it; the phone finds the request by asking.
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message="Sign in")
    assert await db.fetchval("SELECT count(*) FROM push_outbox") == 0
    listed = await phone.call(http, "/device/requests")
    assert listed.json()["push"] is False
    assert listed.json()["account"] == {
        "display_name": "Alice Example",
        "masked_email": "a•••e@example.com",
    }
    [entry] = listed.json()["requests"]
    assert entry["binding_message"] == "Sign in" and entry["challenge"]
    decided = await phone.decide(http, entry, "approve")
    assert decided.status_code == 200, decided.text
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 200
    [device] = (await phone.call(http, "/device/devices")).json()["devices"]
    assert device["push"] is False

    # Turned on later from the Devices screen: the same call a renewed subscription uses.
    subscription = new_subscription()
    turned_on = await phone.call(http, "/device/subscription", subscription=subscription)
    assert turned_on.status_code == 200, turned_on.text
    row = await db.fetchrow("SELECT * FROM devices WHERE device_id = $1", phone.device_id)
    assert row["push_endpoint"] == subscription["endpoint"]
    assert row["vapid_kid"] == await db.fetchval(
        "SELECT kid FROM vapid_keys WHERE status = 'active'"
    )
    [device] = (await phone.call(http, "/device/devices")).json()["devices"]
    assert device["push"] is True
    assert (await phone.call(http, "/device/requests")).json()["push"] is True
    await start_auth_req_id(http, rp.basic_auth())
    assert await db.fetchval("SELECT count(*) FROM push_outbox WHERE kind = 'prompt'") == 1


async def test_an_explicit_null_subscription_enrols_without_push(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = Phone()
    claims = {
        **phone.claims("/device/enrol", code=await enrolment_code(db, alice.user_id)),
        "name": phone.name,
        "subscription": None,
    }
    header = {"alg": "ES256", "typ": "bc-enrol+jwt", "jwk": phone.public_jwk()}
    response = await post_jose(http, "/device/enrol", sign_jws(header, claims, phone.key))
    assert response.status_code == 201, response.text
    assert response.json()["push"] is False
    assert await db.fetchval("SELECT push_endpoint FROM devices") is None


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("alice@example.com", "a•••e@example.com"),
        ("bo@example.com", "b•••@example.com"),
        ("b@example.com", "b•••@example.com"),
        ("first.last+tag@mail.example.co.uk", "f•••g@mail.example.co.uk"),
        ("ünïcode@例え.jp", "ü•••e@例え.jp"),
        ("quoted@local@example.com", "q•••l@example.com"),
        (None, None),
        ("", None),
        ("no-at-sign", None),
        ("@example.com", None),
        ("alice@", None),
    ],
)
def test_emails_are_masked_to_their_first_and_last_character_and_domain(
    email: str | None, masked: str | None
) -> None:
    assert masked_email(email) == masked


async def test_a_user_without_an_email_is_shown_by_name_alone(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    await db.execute("UPDATE users SET email = NULL WHERE user_id = $1", alice.user_id)
    phone = Phone()
    enrolled = await phone.enrol(http, await enrolment_code(db, alice.user_id))
    assert enrolled.json()["user"] == {"display_name": "Alice Example", "masked_email": None}
    listed = await phone.call(http, "/device/requests")
    assert listed.json()["account"] == {"display_name": "Alice Example", "masked_email": None}


async def test_config_and_enrolment_answer_the_active_vapid_public_key(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    active = await db.fetchrow("SELECT kid, public_key FROM vapid_keys WHERE status = 'active'")
    if active is None:
        await db.execute(
            """INSERT INTO vapid_keys (kid, private_pem, public_key, status)
               VALUES ('v1', 'pem', 'BPublicKey', 'active')"""
        )
        active = {"kid": "v1", "public_key": "BPublicKey"}
    config = await http.get("/device/config")
    assert config.status_code == 200
    assert config.json() == {
        "issuer": "http://127.0.0.1:8000",
        "vapid_public_key": active["public_key"],
        # An IP-address issuer has no WebAuthn RP ID (docs/device-api.md).
        "webauthn_rp_id": None,
    }
    phone = Phone()
    response = await phone.enrol(http, await enrolment_code(db, alice.user_id))
    assert response.json()["vapid_public_key"] == active["public_key"]
    kid = await db.fetchval("SELECT vapid_kid FROM devices WHERE device_id = $1", phone.device_id)
    assert kid == active["kid"]


async def test_config_answers_null_without_an_active_vapid_key(
    http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE vapid_keys SET status = 'retired'")
    config = await http.get("/device/config")
    assert config.json() == {
        "issuer": "http://127.0.0.1:8000",
        "vapid_public_key": None,
        "webauthn_rp_id": None,
    }


async def test_a_spent_code_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    assert (await Phone().enrol(http, code)).status_code == 201
    again = await Phone().enrol(http, code)
    assert again.status_code == 410
    assert again.json()["error"] == "invalid_grant"
    assert await db.fetchval("SELECT count(*) FROM devices") == 1


async def test_concurrent_enrolments_with_one_code_enrol_one_device(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    responses = await asyncio.gather(*(Phone().enrol(http, code) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [201, 410, 410, 410, 410]
    assert await db.fetchval("SELECT count(*) FROM devices") == 1


async def test_an_expired_code_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    await db.execute("UPDATE enrolment_codes SET expires_at = now() - interval '1 second'")
    response = await Phone().enrol(http, code)
    assert response.status_code == 410
    assert await db.fetchval("SELECT count(*) FROM devices") == 0


async def test_an_unknown_code_is_refused(http: httpx.AsyncClient, alice: User) -> None:
    response = await Phone().enrol(http, "no-such-code")
    assert response.status_code == 410


async def test_a_code_of_a_disabled_user_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    await db.execute("UPDATE users SET disabled_at = now()")
    assert (await Phone().enrol(http, code)).status_code == 410


async def test_enrolment_signed_by_another_key_than_its_jwk_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone, impostor = Phone(), Phone()
    header = {"alg": "ES256", "typ": "bc-enrol+jwt", "jwk": phone.public_jwk()}
    token = sign_jws(header, phone.claims("/device/enrol", code=code, name="x"), impostor.key)
    response = await post_jose(http, "/device/enrol", token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    # The code was not spent by the refused attempt.
    assert (await phone.enrol(http, code)).status_code == 201


async def test_private_jwk_in_header_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone()
    token = phone.enrolment_jws(code, header={"jwk": phone.key.as_dict(private=True)})
    response = await post_jose(http, "/device/enrol", token)
    assert response.status_code == 400
    assert "public" in response.json()["error_description"]
    assert await db.fetchval("SELECT count(*) FROM devices") == 0


@pytest.mark.parametrize(
    "jwk",
    [
        ECKey.generate_key("P-384", private=False).as_dict(),
        RSAKey.generate_key(2048, private=False).as_dict(),
        {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},  # not on the curve
        {"kty": "EC", "crv": "P-256"},
        "not an object",
    ],
    ids=["p384", "rsa", "off-curve", "no-coordinates", "string"],
)
async def test_enrolment_key_other_than_a_p256_public_key_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, jwk: Any
) -> None:
    code = await enrolment_code(db, alice.user_id)
    token = Phone().enrolment_jws(code, header={"jwk": jwk})
    response = await post_jose(http, "/device/enrol", token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_enrolment_with_a_device_typ_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    token = Phone().enrolment_jws(code, header={"typ": "bc-device+jwt"})
    assert (await post_jose(http, "/device/enrol", token)).status_code == 400


async def test_replayed_enrolment_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    token = Phone().enrolment_jws(code)
    assert (await post_jose(http, "/device/enrol", token)).status_code == 201
    again = await post_jose(http, "/device/enrol", token)
    assert again.status_code == 401


async def test_enrolment_for_another_url_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    token = Phone().enrolment_jws(code, htu="https://evil.example/device/enrol")
    assert (await post_jose(http, "/device/enrol", token)).status_code == 401


async def test_a_key_enrols_only_once(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    phone = Phone()
    assert (await phone.enrol(http, await enrolment_code(db, alice.user_id))).status_code == 201
    second_code = await enrolment_code(db, alice.user_id)
    response = await phone.enrol(http, second_code)
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM devices") == 1
    unspent = await db.fetchval(
        "SELECT used_at FROM enrolment_codes WHERE code_hash = $1", hash_secret(second_code)
    )
    assert unspent is None


@pytest.mark.parametrize(
    "payload",
    [
        {"name": None},
        {"name": "   "},
        {"name": "x" * 65},
        {"name": "evil\u202eoh"},
        {"name": 7},
        {"subscription": False},
        {"subscription": {}},
        {"subscription": "https://push.example.net/x"},
        {"subscription": {"endpoint": "http://push.example.net/x", "keys": {}}},
        {"subscription": {"endpoint": "https://127.0.0.1/push", "keys": {}}},
        {"subscription": {"endpoint": "https://push.example.net/x", "keys": {"p256dh": "AA"}}},
        {
            "subscription": {
                "endpoint": "https://push.example.net/x",
                "keys": {"p256dh": "B" * 87, "auth": "A" * 22},
            }
        },
        {"code": None},
        {"code": ["a"]},
    ],
)
async def test_enrolment_with_invalid_fields_is_refused_and_keeps_the_code(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User, payload: dict[str, Any]
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone()
    token = phone.enrolment_jws(payload.pop("code", code), **payload)
    response = await post_jose(http, "/device/enrol", token)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert (await phone.enrol(http, code)).status_code == 201


# --- POST /admin/enrolments ---------------------------------------------------------------


async def test_admin_enrolment_api_issues_a_code_to_an_allowed_client(
    http: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    enroller: RegisteredClient = await make_client(may_enrol_users=True)
    response = await http.post(
        "/admin/enrolments", data={"login_hint": "alice@example.com"}, headers=enroller.basic_auth()
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"enrolment_code", "enrolment_url", "expires_in", "qr_svg"}
    assert body["enrolment_url"] == (
        "http://127.0.0.1:8000/authenticator/#enrol=" + body["enrolment_code"]
    )
    assert body["expires_in"] == 600
    assert body["qr_svg"].startswith("<svg")
    [event] = await audit_events(db, "enrolment_code_issued")
    assert event["client_id"] == enroller.client_id and event["user_id"] == alice.user_id
    stored = await db.fetchrow("SELECT issued_by, user_id FROM enrolment_codes")
    assert dict(stored) == {"issued_by": enroller.client_id, "user_id": alice.user_id}
    # The code enrols a phone.
    assert (await Phone().enrol(http, body["enrolment_code"])).status_code == 201
    [enrolled] = await audit_events(db, "device_enrolled")
    assert enrolled["client_id"] == enroller.client_id


async def test_admin_enrolment_api_requires_may_enrol_users(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    response = await http.post(
        "/admin/enrolments", data={"login_hint": "alice@example.com"}, headers=rp.basic_auth()
    )
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    assert await db.fetchval("SELECT count(*) FROM enrolment_codes") == 0


async def test_admin_enrolment_api_requires_client_authentication(
    http: httpx.AsyncClient, alice: User
) -> None:
    response = await http.post("/admin/enrolments", data={"login_hint": "alice@example.com"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("form", "error"),
    [({}, "invalid_request"), ({"login_hint": "nobody@example.com"}, "unknown_user_id")],
)
async def test_admin_enrolment_api_needs_a_known_user(
    http: httpx.AsyncClient, make_client: Any, alice: User, form: dict[str, str], error: str
) -> None:
    enroller: RegisteredClient = await make_client(may_enrol_users=True)
    response = await http.post("/admin/enrolments", data=form, headers=enroller.basic_auth())
    assert response.status_code == 400
    assert response.json()["error"] == error


# --- backchannel user enrol -----------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_") and name != "BACKCHANNEL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", database_url)


@pytest.mark.usefixtures("cli_env")
async def test_cli_user_enrol_prints_a_link_that_enrols_a_phone(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code, output, errors = await asyncio.to_thread(run_cli, "user", "enrol", "alice", "--json")
    assert code == 0, errors
    body = json.loads(output)
    assert "a phone cannot reach" in errors  # the issuer is a loopback address
    assert body["url"] == "http://127.0.0.1:8000/authenticator/#enrol=" + body["code"]
    assert body["expires_in"] == 600
    assert (await Phone().enrol(http, body["code"])).status_code == 201
    [event] = await audit_events(db, "enrolment_code_issued")
    assert event["client_id"] is None and event["detail"] is not None

    code, output, errors = await asyncio.to_thread(
        run_cli, "user", "enrol", "alice", "--ttl", "120"
    )
    assert code == 0, errors
    assert "http://127.0.0.1:8000/authenticator/#enrol=" in output
    assert "█" in output or "▀" in output  # the terminal QR code
    expires = await db.fetchval(
        """SELECT extract(epoch FROM expires_at - created_at) FROM enrolment_codes
            ORDER BY created_at DESC LIMIT 1"""
    )
    assert round(float(expires)) == 120


@pytest.mark.usefixtures("cli_env")
async def test_cli_user_enrol_refuses_unknown_users_and_bad_ttls(alice: User) -> None:
    code, _, errors = await asyncio.to_thread(run_cli, "user", "enrol", "nobody")
    assert code == 2 and "nobody" in errors
    code, _, errors = await asyncio.to_thread(run_cli, "user", "enrol", "alice", "--ttl", "5")
    assert code == 2 and "--ttl" in errors


async def test_enrolment_with_a_push_service_off_the_allow_list_is_refused_in_plain_words(
    http: httpx.AsyncClient, db: asyncpg.Connection, alice: User
) -> None:
    code = await enrolment_code(db, alice.user_id)
    phone = Phone(subscription=new_subscription("push.attacker.example"))
    response = await phone.enrol(http, code)
    assert response.status_code == 400
    description = response.json()["error_description"]
    assert "push service is not allowed" in description
    assert await db.fetchval("SELECT count(*) FROM devices") == 0
