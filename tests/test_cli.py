"""The operator CLI end to end against the test database: ``main([...])`` as a user runs it.

``main`` runs its own event loop, so each call runs in a worker thread while the
test keeps its loop for arranging rows and listening for notifications.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backchannel.cli.demo import DEMO_CLIENT_ID, DEMO_SUBJECT, ensure_demo
from backchannel.db.listener import CONFIG_CHANNEL
from backchannel.oauth.secrets import secret_matches
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp
from tests.support import postgres as pg
from tests.support.cli import Cli
from tests.support.jose import ec_key, public_jwks

CIBA_GRANT = "urn:openid:params:grant-type:ciba"


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- clients -------------------------------------------------------------------------------


async def test_client_create_prints_the_secret_once_and_stores_only_its_hash(
    cli: Cli, db: asyncpg.Connection
) -> None:
    created = await cli("client", "create", "--name", "Acme Coffee", "--json")
    assert created.code == 0, created.err
    body = created.json()
    secret = body["client_secret"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["backchannel_token_delivery_mode"] == "poll"
    assert body["grant_types"] == [CIBA_GRANT, "refresh_token"]
    stored = await db.fetchval(
        "SELECT secret_hash FROM clients WHERE client_id = $1", body["client_id"]
    )
    assert secret_matches(secret, bytes(stored))

    shown = await cli("client", "show", body["client_id"], "--json")
    assert shown.code == 0
    assert "client_secret" not in shown.json()
    assert secret not in shown.out


async def test_client_create_prints_a_human_summary_without_json(cli: Cli) -> None:
    created = await cli("client", "create", "--name", "Acme", "--client-id", "acme")
    assert created.code == 0, created.err
    assert "client_id:     acme" in created.out
    assert "client_secret: " in created.out
    assert "shown only now" in created.out


async def test_client_create_stores_every_registration_option(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_keys = write_json(tmp_path / "client.json", public_jwks(ec_key()))
    issuer_keys = write_json(tmp_path / "issuer.json", ec_key().as_dict(private=False))
    created = await cli(
        "client", "create", "--json",
        "--name", "Bank",
        "--client-id", "bank",
        "--auth-method", "private_key_jwt",
        "--jwks-file", str(client_keys),
        "--delivery-mode", "ping",
        "--notification-endpoint", "https://rp.example.com/cb",
        "--scope", "openid profile",
        "--scope", "email",
        "--grant-type", CIBA_GRANT,
        "--request-signing-alg", "ES256",
        "--require-signed-request",
        "--user-code",
        "--id-token-alg", "PS256",
        "--access-token-ttl", "120",
        "--refresh-token-ttl", "3600",
        "--max-requested-expiry", "600",
        "--login-hint-token-issuer", f"https://idp.example.com={issuer_keys}",
        "--may-enrol-users",
    )  # fmt: skip
    assert created.code == 0, created.err
    body = created.json()
    assert body["client_secret"] is None
    assert body["client_id"] == "bank"
    assert body["jwks"] == json.loads(client_keys.read_text())
    assert body["backchannel_token_delivery_mode"] == "ping"
    assert body["backchannel_client_notification_endpoint"] == "https://rp.example.com/cb"
    assert body["scope"] == "openid profile email"
    assert body["grant_types"] == [CIBA_GRANT]
    assert body["backchannel_authentication_request_signing_alg"] == "ES256"
    assert body["require_signed_request"] is True
    assert body["backchannel_user_code_parameter"] is True
    assert body["id_token_signed_response_alg"] == "PS256"
    assert (body["access_token_ttl"], body["refresh_token_ttl"]) == (120, 3600)
    assert body["max_requested_expiry"] == 600
    assert body["may_enrol_users"] is True
    [issuer] = body["login_hint_token_issuers"]
    assert issuer["iss"] == "https://idp.example.com"
    assert issuer["jwks"]["keys"][0]["kty"] == "EC"


async def test_client_create_reports_every_invalid_value_at_once_and_exits_2(
    cli: Cli, db: asyncpg.Connection
) -> None:
    result = await cli(
        "client", "create",
        "--name", "Broken",
        "--auth-method", "private_key_jwt",
        "--delivery-mode", "ping",
        "--scope", "profile",
        "--grant-type", "refresh_token",
        "--access-token-ttl", "5",
    )  # fmt: skip
    assert result.code == 2
    assert result.out == ""
    for expected in (
        "private_key_jwt: needs the client's public keys",
        "backchannel_client_notification_endpoint: required for ping mode",
        "scope: must include openid",
        f"grant_types: ping mode needs {CIBA_GRANT}",
        "access_token_ttl: must be between 30 and 86400",
    ):
        assert expected in result.err
    assert await db.fetchval("SELECT count(*) FROM clients") == 0


async def test_client_create_refuses_a_jwk_set_with_private_keys(cli: Cli, tmp_path: Path) -> None:
    private = write_json(tmp_path / "private.json", {"keys": [ec_key().as_dict(private=True)]})
    result = await cli(
        "client", "create", "--name", "Leaky", "--auth-method", "private_key_jwt",
        "--jwks-file", str(private),
    )  # fmt: skip
    assert result.code == 2
    assert "private members (d)" in result.err


async def test_client_create_refuses_a_missing_or_malformed_jwks_file(
    cli: Cli, tmp_path: Path
) -> None:
    missing = await cli("client", "create", "--name", "X", "--jwks-file", str(tmp_path / "no"))
    assert missing.code == 2
    assert "--jwks-file" in missing.err
    (tmp_path / "bad.json").write_text("{not json")
    malformed = await cli(
        "client", "create", "--name", "X", "--jwks-file", str(tmp_path / "bad.json")
    )
    assert malformed.code == 2
    assert "not JSON" in malformed.err


async def test_client_create_refuses_a_symmetric_request_signing_alg(cli: Cli) -> None:
    result = await cli("client", "create", "--name", "X", "--request-signing-alg", "HS256")
    assert result.code == 2
    assert "invalid choice: 'HS256'" in result.err


async def test_notification_endpoint_must_be_https_unless_insecure_urls_are_allowed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (
        "client", "create", "--name", "Pinger", "--delivery-mode", "ping",
        "--notification-endpoint", "http://127.0.0.1:9999/cb", "--json",
    )  # fmt: skip
    refused = await cli(*args)
    assert refused.code == 2
    assert "backchannel_client_notification_endpoint: URL must use https" in refused.err

    monkeypatch.setenv("BACKCHANNEL_ALLOW_INSECURE_URLS", "true")
    allowed = await cli(*args)
    assert allowed.code == 0, allowed.err
    assert allowed.json()["backchannel_client_notification_endpoint"] == "http://127.0.0.1:9999/cb"


async def test_client_create_refuses_a_client_id_already_registered(cli: Cli) -> None:
    assert (await cli("client", "create", "--name", "A", "--client-id", "same")).code == 0
    again = await cli("client", "create", "--name", "B", "--client-id", "same")
    assert again.code == 2
    assert "same is already registered" in again.err


async def test_client_list_disable_and_enable(cli: Cli) -> None:
    await cli("client", "create", "--name", "Acme Coffee", "--client-id", "acme")
    await cli("client", "create", "--name", "Bank", "--client-id", "bank")

    disabled = await cli("client", "disable", "acme", "--json")
    assert disabled.code == 0
    assert disabled.json()["disabled_at"] is not None
    listed = (await cli("client", "list", "--json")).json()["clients"]
    assert [(c["client_id"], c["disabled_at"] is None) for c in listed] == [
        ("acme", False),
        ("bank", True),
    ]
    table = await cli("client", "list")
    assert "acme" in table.out and "disabled" in table.out

    enabled = await cli("--json", "client", "enable", "acme")
    assert enabled.json()["disabled_at"] is None


async def test_client_commands_on_an_unknown_client_exit_1(cli: Cli) -> None:
    for argv in (("client", "show", "nobody"), ("client", "disable", "nobody")):
        result = await cli(*argv)
        assert result.code == 1
        assert "no client 'nobody'" in result.err


async def test_every_client_change_is_announced_on_the_config_channel(
    cli: Cli, db: asyncpg.Connection
) -> None:
    events: asyncio.Queue[str] = asyncio.Queue()
    await db.add_listener(CONFIG_CHANNEL, lambda *a: events.put_nowait(a[3]))
    await cli("client", "create", "--name", "Acme", "--client-id", "acme")
    await cli("client", "disable", "acme")
    await cli("client", "enable", "acme")
    received = [await asyncio.wait_for(events.get(), 5) for _ in range(3)]
    assert received == ["client:acme"] * 3


async def test_a_running_server_stops_accepting_a_disabled_client(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: Any
) -> None:
    async def authorize() -> httpx.Response:
        return await running.http.post(
            "/bc-authorize",
            data={"scope": "openid", "login_hint": "alice@example.com"},
            headers=rp.basic_auth(),
        )

    assert (await authorize()).status_code == 200
    assert (await cli("client", "disable", rp.client_id)).code == 0
    for _ in range(50):  # the notification reaches the app's listener asynchronously
        response = await authorize()
        if response.status_code != 200:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# --- users ---------------------------------------------------------------------------------


async def test_user_create_normalises_hints_and_user_list_shows_them(cli: Cli) -> None:
    created = await cli(
        "user", "create", "--json", "alice", "--name", "Alice Example",
        "--hint", "email:Alice@Example.COM", "--hint", "tel:+44 7700 900123",
        "--hint", "account:12345678", "--hint", "username:Alice",
    )  # fmt: skip
    assert created.code == 0, created.err
    body = created.json()
    assert body["login_hints"] == [
        "email:alice@example.com",
        "phone:+447700900123",
        "account:12345678",
        "username:alice",
    ]
    assert (body["email"], body["phone_number"]) == ("alice@example.com", "+447700900123")
    assert body["has_user_code"] is False

    [listed] = (await cli("user", "list", "--json")).json()["users"]
    assert listed["subject"] == "alice"
    assert sorted(listed["login_hints"]) == sorted(body["login_hints"])
    table = await cli("user", "list")
    assert "alice" in table.out and "email:alice@example.com" in table.out


async def test_created_user_can_be_found_by_bc_authorize(
    cli: Cli, running: RunningApp, rp: RegisteredClient
) -> None:
    await cli("user", "create", "bob", "--hint", "mailto:Bob@Example.com")
    response = await running.http.post(
        "/bc-authorize",
        data={"scope": "openid", "login_hint": "bob@example.com"},
        headers=rp.basic_auth(),
    )
    assert response.status_code == 200, response.text


async def test_user_create_with_a_taken_hint_exits_2_and_creates_nothing(
    cli: Cli, db: asyncpg.Connection
) -> None:
    await cli("user", "create", "alice", "--hint", "email:alice@example.com")
    taken = await cli(
        "user", "create", "mallory", "--hint", "username:mallory",
        "--hint", "email:ALICE@example.com",
    )  # fmt: skip
    assert taken.code == 2
    assert "login hint email:alice@example.com already belongs to a user" in taken.err
    assert await db.fetchval("SELECT count(*) FROM users WHERE subject = 'mallory'") == 0
    assert await db.fetchval("SELECT count(*) FROM user_login_hints") == 1


async def test_user_create_refuses_a_taken_subject_and_a_repeated_hint(cli: Cli) -> None:
    await cli("user", "create", "alice")
    again = await cli("user", "create", "alice")
    assert again.code == 2
    assert "a user 'alice' already exists" in again.err
    twice = await cli("user", "create", "bob", "--hint", "email:b@x.org", "--hint", "email:B@x.org")
    assert twice.code == 2
    assert "given twice" in twice.err


async def test_user_create_refuses_malformed_hints(cli: Cli) -> None:
    for hint, message in (
        ("alice@example.com", "write kind:value"),
        ("tel:07700 900123", "international form"),
        ("fax:123", "unknown login hint kind 'fax'"),
    ):
        result = await cli("user", "create", "x", "--hint", hint)
        assert result.code == 2, hint
        assert message in result.err


async def test_user_code_is_stored_hashed(cli: Cli, db: asyncpg.Connection) -> None:
    created = await cli("user", "create", "carol", "--user-code", "4711", "--json")
    assert created.json()["has_user_code"] is True
    stored = await db.fetchval("SELECT user_code_hash FROM users WHERE subject = 'carol'")
    assert stored.startswith("$argon2id$") and "4711" not in stored


async def test_user_create_still_accepts_the_subject_as_an_option_with_a_note(cli: Cli) -> None:
    created = await cli("user", "create", "--subject", "dave", "--json")
    assert created.code == 0, created.err
    assert created.json()["subject"] == "dave"
    assert "deprecated" in created.err and "user create SUBJECT" in created.err
    assert (await cli("user", "create", "erin")).err == ""
    conflicting = await cli("user", "create", "frank", "--subject", "grace")
    assert conflicting.code == 2
    missing = await cli("user", "create", "--name", "Nobody")
    assert missing.code == 2
    assert "needs a SUBJECT" in missing.err


async def test_user_enrol_warns_that_a_phone_cannot_reach_a_loopback_issuer(
    cli: Cli, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = await cli("user", "enrol", "alice")
    assert local.code == 0, local.err
    assert "loopback address that a phone cannot reach" in local.err
    monkeypatch.setenv("BACKCHANNEL_ISSUER", "https://login.example.com")
    public = await cli("user", "enrol", "alice", "--json")
    assert public.code == 0, public.err
    assert public.json()["url"].startswith("https://login.example.com/authenticator/#enrol=")
    assert "loopback" not in public.err


async def test_user_add_hint_attaches_a_hint_to_an_existing_user(cli: Cli) -> None:
    await cli("user", "create", "alice")
    added = await cli("user", "add-hint", "alice", "username:Ally", "--json")
    assert added.code == 0, added.err
    assert added.json() == {"subject": "alice", "login_hint": "username:ally"}
    unknown = await cli("user", "add-hint", "nobody", "username:nobody")
    assert unknown.code == 2
    assert "no user with subject 'nobody'" in unknown.err


# --- keys ----------------------------------------------------------------------------------


async def test_keys_generate_rotate_retire_and_list(cli: Cli) -> None:
    generated = await cli("keys", "generate", "--alg", "ES256", "--json")
    assert generated.code == 0, generated.err
    first = generated.json()
    assert (first["alg"], first["status"]) == ("ES256", "active")

    rotated = await cli("keys", "rotate", "--alg", "ES256", "--json")
    [second] = rotated.json()["keys"]
    assert second["kid"] != first["kid"]

    listed = {k["kid"]: k for k in (await cli("keys", "list", "--json")).json()["keys"]}
    assert listed[first["kid"]]["status"] == "previous"
    assert listed[second["kid"]]["status"] == "active"
    assert all("d" not in key for key in listed.values())

    retired = await cli("keys", "retire", "--older-than", "0", "--json")
    assert first["kid"] in [k["kid"] for k in retired.json()["keys"]]
    listed = {k["kid"]: k for k in (await cli("keys", "list", "--json")).json()["keys"]}
    assert listed[first["kid"]]["status"] == "retired"
    assert "ES256" in (await cli("keys", "list")).out


async def test_keys_wrap_wraps_stored_private_keys_under_the_encryption_key(
    cli: Cli, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await cli("keys", "generate", "--alg", "ES256")).code == 0
    assert (await cli("vapid", "generate")).code == 0
    refused = await cli("keys", "wrap")
    assert refused.code == 1
    assert "BACKCHANNEL_KEY_ENCRYPTION_KEY" in refused.err

    kek = (await cli("keys", "new-encryption-key", "--json")).json()["key_encryption_key"]
    monkeypatch.setenv("BACKCHANNEL_KEY_ENCRYPTION_KEY", kek)
    wrapped = await cli("keys", "wrap", "--json")
    assert wrapped.code == 0, wrapped.err
    assert wrapped.json()["wrapped"] == {"signing_keys": 1, "vapid_keys": 1}
    stored = await db.fetchval("SELECT private_jwk FROM signing_keys WHERE status = 'active'")
    assert "d" not in stored and stored["wrapped"].startswith("bcwrap1.")
    pem = await db.fetchval("SELECT private_pem FROM vapid_keys WHERE status = 'active'")
    assert pem.startswith("bcwrap1.") and "PRIVATE KEY" not in pem

    again = await cli("keys", "wrap", "--json")
    assert again.json()["wrapped"] == {"signing_keys": 0, "vapid_keys": 0}
    rotated = await cli("keys", "rotate", "--alg", "ES256", "--json")
    [new] = rotated.json()["keys"]
    stored = await db.fetchval("SELECT private_jwk FROM signing_keys WHERE kid = $1", new["kid"])
    assert "d" not in stored and "wrapped" in stored

    # A new key-encryption key: the old one only unwraps until everything is rewrapped.
    newer = (await cli("keys", "new-encryption-key", "--json")).json()["key_encryption_key"]
    monkeypatch.setenv("BACKCHANNEL_KEY_ENCRYPTION_KEY", newer)
    monkeypatch.setenv("BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS", kek)
    rewrapped = await cli("keys", "wrap", "--json")
    assert rewrapped.code == 0, rewrapped.err
    assert rewrapped.json()["wrapped"] == {"signing_keys": 2, "vapid_keys": 1}
    monkeypatch.delenv("BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS")
    assert (await cli("keys", "wrap", "--json")).json()["wrapped"] == {
        "signing_keys": 0,
        "vapid_keys": 0,
    }


# --- requests ------------------------------------------------------------------------------


async def start_request(running: RunningApp, rp: RegisteredClient) -> str:
    response = await running.http.post(
        "/bc-authorize",
        data={"scope": "openid", "login_hint": "alice@example.com"},
        headers=rp.basic_auth(),
    )
    assert response.status_code == 200, response.text
    auth_req_id: str = response.json()["auth_req_id"]
    return auth_req_id


async def redeem(running: RunningApp, rp: RegisteredClient, auth_req_id: str) -> httpx.Response:
    return await running.http.post(
        "/token",
        data={"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id},
        headers=rp.basic_auth(),
    )


async def test_requests_decide_approve_lets_the_client_redeem_tokens(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: Any
) -> None:
    auth_req_id = await start_request(running, rp)
    decided = await cli("requests", "decide", "--json", "--", auth_req_id, "approve")
    assert decided.code == 0, decided.err
    assert decided.json() == {
        "client_id": rp.client_id,
        "status": "approved",
        "denial_reason": None,
    }
    response = await redeem(running, rp, auth_req_id)
    assert response.status_code == 200, response.text
    assert "id_token" in response.json()


async def test_requests_decide_deny_answers_access_denied(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: Any
) -> None:
    auth_req_id = await start_request(running, rp)
    decided = await cli("requests", "decide", "--reason", "not_me", "--", auth_req_id, "deny")
    assert decided.code == 0, decided.err
    response = await redeem(running, rp, auth_req_id)
    assert response.json()["error"] == "access_denied"


async def test_requests_decide_refuses_a_decided_or_unknown_request(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: Any
) -> None:
    auth_req_id = await start_request(running, rp)
    assert (await cli("requests", "decide", "--", auth_req_id, "approve")).code == 0
    again = await cli("requests", "decide", "--", auth_req_id, "deny")
    assert again.code == 1
    assert "already approved" in again.err
    unknown = await cli("requests", "decide", "--", "-no-such-request", "approve")
    assert unknown.code == 1
    assert "unknown" in unknown.err


# --- configuration, usage, databases -------------------------------------------------------


async def test_invalid_settings_exit_2_naming_each_bad_value(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKCHANNEL_PORT", "99999")
    monkeypatch.setenv("BACKCHANNEL_POLL_INTERVAL", "often")
    result = await cli("client", "list")
    assert result.code == 2
    assert "BACKCHANNEL_PORT: must be between 0 and 65535" in result.err
    assert "BACKCHANNEL_POLL_INTERVAL: expected an integer" in result.err


async def test_json_after_the_double_dash_is_still_taken_as_the_option(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: Any
) -> None:
    auth_req_id = await start_request(running, rp)
    decided = await cli("requests", "decide", "--", auth_req_id, "approve", "--json")
    assert decided.code == 0, decided.err
    assert decided.json()["status"] == "approved"


async def test_usage_errors_show_the_usage_of_the_command_given(cli: Cli) -> None:
    unknown = await cli("client", "list", "--verbose")
    assert unknown.code == 2
    assert unknown.err.startswith("usage: backchannel client list")
    assert "unrecognized arguments: --verbose" in unknown.err
    extra = await cli("requests", "decide", "--", "some-id", "approve", "--now")
    assert extra.code == 2
    assert extra.err.startswith("usage: backchannel requests decide")
    missing = await cli("user", "enrol")
    assert missing.code == 2
    assert missing.err.startswith("usage: backchannel user enrol")


async def test_usage_errors_exit_2_and_help_exits_0(cli: Cli) -> None:
    assert (await cli()).code == 2
    assert (await cli("client", "frobnicate")).code == 2
    assert (await cli("client", "create")).code == 2  # --name is required
    helped = await cli("client", "create", "--help")
    assert helped.code == 0
    assert "--notification-endpoint" in helped.out


async def test_commands_on_an_unmigrated_database_ask_for_migrate(
    cli: Cli, test_postgres: pg.TestPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await asyncpg.connect(test_postgres.admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS bc_cli_unmigrated WITH (FORCE)")
        await admin.execute("CREATE DATABASE bc_cli_unmigrated")
        monkeypatch.setenv(
            "BACKCHANNEL_DATABASE_URL",
            pg.with_database(test_postgres.admin_dsn, "bc_cli_unmigrated"),
        )
        refused = await cli("client", "list")
        assert refused.code == 1
        assert "run `backchannel migrate`" in refused.err

        migrated = await cli("migrate", "--json")
        assert migrated.code == 0
        assert migrated.json()["applied"][0] == "001_core.sql"
        assert (await cli("migrate", "--json")).json() == {"applied": []}
        assert "nothing to apply" in (await cli("migrate")).out
        assert (await cli("client", "list")).code == 0
    finally:
        await admin.execute("DROP DATABASE IF EXISTS bc_cli_unmigrated WITH (FORCE)")
        await admin.close()


async def test_an_unreachable_database_exits_1(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = await cli("client", "list")
    assert result.code == 1
    assert "cannot connect to the database" in result.err


async def test_without_a_database_url_commands_use_the_embedded_server_in_data_dir(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A short path: PostgreSQL's socket lives in the data directory.
    data_dir = tmp_path_factory.mktemp("bc")
    monkeypatch.delenv("BACKCHANNEL_DATABASE_URL")
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(data_dir))
    created = await cli(
        "client", "create", "--name", "Local", "--client-id", "local", "--create-data-dir"
    )
    assert created.code == 0, created.err
    listed = await cli("client", "list", "--json")
    assert [c["client_id"] for c in listed.json()["clients"]] == ["local"]
    assert (data_dir / "pgdata").is_dir()


async def test_without_a_database_url_or_embedded_database_commands_refuse_naming_the_folder(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "elsewhere"
    monkeypatch.delenv("BACKCHANNEL_DATABASE_URL")
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(data_dir))
    for command in (("client", "list"), ("migrate",), ("user", "list", "--json")):
        refused = await cli(*command)
        assert refused.code == 1
        assert refused.out == ""
        assert f"no embedded database in {data_dir / 'pgdata'}" in refused.err
        assert "--create-data-dir" in refused.err
    assert not data_dir.exists()  # nothing was created on the way


# --- the demo that `dev` sets up ------------------------------------------------------------


async def test_demo_setup_is_idempotent_and_keeps_the_secret_in_a_private_file(
    db: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.replace(data_dir=tmp_path / "data")
    first = await ensure_demo(db, settings)
    assert first.created == ("client", "user")
    assert first.client_id == DEMO_CLIENT_ID and first.subject == DEMO_SUBJECT
    assert first.client_secret is not None
    mode = stat.S_IMODE(first.secret_file.stat().st_mode)
    assert mode == 0o600

    second = await ensure_demo(db, settings)
    assert second.created == ()
    assert second.client_secret == first.client_secret
    stored = await db.fetchval(
        "SELECT secret_hash FROM clients WHERE client_id = $1", "demo-client"
    )
    assert secret_matches(first.client_secret, bytes(stored))
    hints = await db.fetch("SELECT kind, value FROM user_login_hints ORDER BY kind")
    assert [tuple(r) for r in hints] == [("email", "demo@example.com"), ("username", "demo")]

    first.secret_file.unlink()
    lost = await ensure_demo(db, settings)
    assert lost.client_secret is None  # cannot be recovered from the hash


async def test_client_update_changes_the_mode_and_endpoint_keeps_the_secret_and_audits(
    cli: Cli, db: asyncpg.Connection
) -> None:
    created = (await cli("client", "create", "--name", "Acme POS", "--json")).json()
    client_id, secret = created["client_id"], created["client_secret"]
    updated = await cli(
        "client",
        "update",
        client_id,
        "--delivery-mode",
        "ping",
        "--notification-endpoint",
        "https://pos.acme.example/notify",
        "--number-matching",
        "--json",
    )
    assert updated.code == 0, updated.err
    body = updated.json()
    assert body["backchannel_token_delivery_mode"] == "ping"
    assert body["backchannel_client_notification_endpoint"] == "https://pos.acme.example/notify"
    assert body["number_matching"] is True
    stored = await db.fetchval("SELECT secret_hash FROM clients WHERE client_id = $1", client_id)
    assert secret_matches(secret, bytes(stored))
    [event] = await db.fetch("SELECT detail FROM audit_events WHERE event = 'client_updated'")
    changed = event["detail"]["changed"]
    assert changed["backchannel_token_delivery_mode"] == {"before": "poll", "after": "ping"}
    assert set(changed) == {
        "backchannel_token_delivery_mode",
        "backchannel_client_notification_endpoint",
        "number_matching",
    }


async def test_client_update_is_validated_as_a_whole_and_changes_nothing_when_refused(
    cli: Cli, db: asyncpg.Connection
) -> None:
    client_id = (await cli("client", "create", "--name", "Acme", "--json")).json()["client_id"]
    refused = await cli("client", "update", client_id, "--delivery-mode", "push")
    assert refused.code == 2
    assert "backchannel_client_notification_endpoint" in refused.err
    private = await cli(
        "client",
        "update",
        client_id,
        "--delivery-mode",
        "ping",
        "--notification-endpoint",
        "https://10.0.0.1/notify",
    )
    assert private.code == 2 and "not public" in private.err
    mode = await db.fetchval("SELECT backchannel_token_delivery_mode FROM clients")
    assert mode == "poll"
    assert (await cli("client", "update", client_id)).code == 2  # nothing to change
    assert (await cli("client", "update", "nobody", "--name", "x")).code != 0
