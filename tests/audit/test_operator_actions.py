"""Every operator change to who may authenticate whom is in the audit trail.

Each is written in the change's own transaction, names the actor (the
command line and the OS user), carries before and after where it matters,
never a secret, and is sealed into the chain like any other event.
"""

from __future__ import annotations

import getpass
import json

import asyncpg

from tests.support.cli import Cli

ACTOR = f"cli:{getpass.getuser()}"


async def events(db: asyncpg.Connection) -> list[tuple[str, dict[str, object]]]:
    rows = await db.fetch("SELECT event, detail FROM audit_events ORDER BY id")
    return [(r["event"], r["detail"] or {}) for r in rows]


async def test_operator_actions_are_audited_with_the_actor_and_no_secret(
    cli: Cli, db: asyncpg.Connection
) -> None:
    created = (await cli("client", "create", "--name", "Acme", "--json")).json()
    client_id, secret = created["client_id"], created["client_secret"]
    assert (await cli("client", "update", client_id, "--name", "Acme Bank")).code == 0
    assert (await cli("client", "disable", client_id)).code == 0
    assert (await cli("client", "enable", client_id)).code == 0
    user = await cli(
        "user", "create", "carol", "--hint", "email:carol@example.com", "--user-code", "4711"
    )
    assert user.code == 0, user.err
    assert (await cli("user", "add-hint", "carol", "tel:+447700900999")).code == 0
    assert (await cli("keys", "rotate", "--alg", "ES256")).code == 0
    assert (await cli("vapid", "rotate")).code == 0
    added = await cli("policy", "add", "staff-only", "--effect", "deny")
    assert added.code == 0, added.err

    recorded = await events(db)
    by_event = {event: detail for event, detail in recorded}
    expected = {
        "client_created",
        "client_updated",
        "client_disabled",
        "client_enabled",
        "user_created",
        "login_hint_added",
        "signing_key_created",
        "vapid_key_rotated",
        "policy_changed",
    }
    assert expected <= set(by_event), sorted(by_event)
    for event in expected:
        assert by_event[event]["actor"] == ACTOR, event
    assert by_event["client_updated"]["changed"] == {
        "name": {"before": "Acme", "after": "Acme Bank"}
    }
    assert by_event["user_created"]["hints"] == ["email:carol@example.com"]
    assert by_event["user_created"]["user_code"] is True
    assert by_event["login_hint_added"]["hint"] == "phone:+447700900999"
    text = json.dumps([detail for _, detail in recorded])
    assert secret not in text and "4711" not in text and "private" not in text

    sealed = await cli("audit", "seal")
    assert sealed.code == 0
    verified = await cli("audit", "verify", "--json")
    assert verified.code == 0 and verified.json()["intact"] is True
