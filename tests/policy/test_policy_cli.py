"""``backchannel policy …`` and ``backchannel user group …`` end to end, as an operator runs them.

``main`` runs its own event loop, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path

import asyncpg
import pytest

from backchannel.db.users import User
from backchannel.policy.document import parse_policy
from backchannel.policy.rules import Rule
from tests.conftest import RegisteredClient, RunningApp
from tests.support.ciba import audit_events, start_request
from tests.support.cli import Cli

POLICY_TOML = """\
version = 1

[[rules]]
name = "retail-via-desk"
effect = "allow"
mode = "enforce"
description = "Only the support desk prompts retail users"

[rules.target]
groups = ["retail"]

[rules.when]
clients = ["support-desk"]

[[rules]]
name = "office-hours"
effect = "deny"
mode = "report-only"
when = { outside = { days = ["mon-fri"], from = "08:00", to = "18:00", tz = "Europe/London" } }

[[rules]]
name = "short-lived"
effect = "deny"
mode = "enforce"
enabled = false
when = { expiry_over = 120, ip_not_in = ["10.0.0.0/8", "2001:db8::/32"] }
"""

# Who the audit trail says made a change from the command line.
CLI_ACTOR = f"cli:{getpass.getuser()}"


async def test_add_show_disable_enable_and_remove_a_rule(cli: Cli, db: asyncpg.Connection) -> None:
    added = await cli(
        "policy", "add", "no-email", "--effect", "deny", "--mode", "enforce",
        "--description", "no e-mail scope for the shop",
        "--target", "clients=shop,kiosk",
        "--when", "scopes_any=email",
        "--when", "during=sat,sun 00:00-00:00 Europe/Paris",
        "--json",
    )  # fmt: skip
    assert added.code == 0, added.err
    body = added.json()
    assert body["target"] == {"clients": ["kiosk", "shop"]}
    assert body["when"]["during"] == {
        "days": ["sat", "sun"], "from": "00:00", "to": "00:00", "tz": "Europe/Paris"
    }  # fmt: skip

    listed = await cli("policy", "list")
    assert listed.code == 0
    assert "no-email" in listed.out and "enforce" in listed.out and "enabled" in listed.out

    assert (await cli("policy", "disable", "no-email")).out.strip() == "rule no-email is disabled"
    shown = await cli("policy", "show", "no-email", "--json")
    assert shown.json()["enabled"] is False
    assert (await cli("policy", "enable", "no-email")).code == 0
    assert (await cli("policy", "remove", "no-email")).code == 0
    assert (await cli("policy", "list", "--json")).json() == {"rules": []}
    actions = [r["detail"]["action"] for r in await audit_events(db, "policy_changed")]
    assert actions == ["add", "disable", "enable", "remove"]


async def test_a_new_rule_is_report_only_unless_enforced(cli: Cli) -> None:
    added = await cli("policy", "add", "trial", "--effect", "deny")
    assert added.code == 0
    assert "mode:        report-only" in added.out
    assert "report-only" in added.err


async def test_an_invalid_rule_is_refused_with_every_problem(cli: Cli) -> None:
    refused = await cli(
        "policy", "add", "x", "--effect", "deny", "--when", "client=a", "--when", "ip_in=10.1.0.0/8"
    )
    assert refused.code == 2
    assert "when.client: unknown key (did you mean 'clients'?)" in refused.err
    assert "(did you mean 10.0.0.0/8?)" in refused.err
    assert (await cli("policy", "list", "--json")).json() == {"rules": []}


async def test_a_taken_name_or_an_unknown_rule_is_an_error(cli: Cli) -> None:
    assert (await cli("policy", "add", "a", "--effect", "deny")).code == 0
    taken = await cli("policy", "add", "a", "--effect", "allow")
    assert taken.code == 2 and "a rule named 'a' exists" in taken.err
    for command in ("show", "remove", "enable", "disable"):
        missing = await cli("policy", command, "nope")
        assert missing.code == 1 and "no rule 'nope'" in missing.err


@pytest.mark.parametrize("suffix", ["toml", "json"])
async def test_import_and_export_round_trip(cli: Cli, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "policy.toml"
    source.write_text(POLICY_TOML)
    imported = await cli("policy", "import", str(source), "--json")
    assert imported.code == 0, imported.err
    assert imported.json() == {
        "rules": 3,
        "added": ["retail-via-desk", "office-hours", "short-lived"],
        "changed": [],
        "removed": [],
    }
    exported = tmp_path / f"exported.{suffix}"
    assert (await cli("policy", "export", str(exported))).code == 0
    text = exported.read_text()
    assert by_name(parse_policy(text, suffix)) == by_name(parse_policy(POLICY_TOML, "toml"))  # type: ignore[arg-type]
    again = await cli("policy", "import", str(exported))
    assert again.code == 0
    assert "no changes" in again.out


async def test_export_without_a_file_prints_toml(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY_TOML)
    await cli("policy", "import", str(tmp_path / "p.toml"))
    printed = await cli("policy", "export")
    assert printed.code == 0
    assert printed.out.startswith("# backchannel policy")
    assert by_name(parse_policy(printed.out, "toml")) == by_name(parse_policy(POLICY_TOML, "toml"))
    empty = tmp_path / "empty.toml"
    await cli("policy", "import", str(_write(empty, "rules = []\n")))
    assert parse_policy((await cli("policy", "export")).out, "toml") == ()


async def policy_ids(db: asyncpg.Connection) -> dict[str, int]:
    return {r["name"]: r["policy_id"] for r in await db.fetch("SELECT * FROM policies")}


def by_name(rules: tuple[Rule, ...]) -> list[Rule]:
    return sorted(rules, key=lambda r: r.name)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_import_replaces_the_rule_set_and_keeps_ids_of_rules_it_keeps(
    cli: Cli, tmp_path: Path, db: asyncpg.Connection
) -> None:
    await cli("policy", "add", "old", "--effect", "deny")
    await cli("policy", "import", str(_write(tmp_path / "a.toml", POLICY_TOML)))
    ids = await policy_ids(db)
    assert set(ids) == {"retail-via-desk", "office-hours", "short-lived"}
    changed = POLICY_TOML.replace('mode = "report-only"', 'mode = "enforce"')
    result = await cli("policy", "import", str(_write(tmp_path / "b.toml", changed)), "--json")
    assert result.json()["changed"] == ["office-hours"]
    assert await policy_ids(db) == ids
    [*_, last] = await audit_events(db, "policy_changed")
    assert last["detail"] == {
        "actor": CLI_ACTOR,
        "action": "import",
        "added": [],
        "changed": ["office-hours"],
        "removed": [],
    }  # fmt: skip


async def test_an_invalid_file_is_refused_line_by_line_and_nothing_changes(
    cli: Cli, tmp_path: Path, db: asyncpg.Connection
) -> None:
    await cli("policy", "import", str(_write(tmp_path / "good.toml", POLICY_TOML)))
    before = await db.fetch("SELECT * FROM policies ORDER BY name")
    bad = (
        POLICY_TOML.replace('groups = ["retail"]', 'groups = ["re tail"]').replace(
            'tz = "Europe/London"', 'tz = "Europe/Lundon"'
        )
        + '\n[[rules]]\nname = "short-lived"\neffect = "deny"\nclient = ["x"]\n'
    )
    refused = await cli("policy", "import", str(_write(tmp_path / "bad.toml", bad)))
    assert refused.code == 2
    path = tmp_path / "bad.toml"
    assert refused.err.splitlines() == [
        "error: invalid policy file; nothing was changed",
        f"  - {path}:10: rules[0].target.groups[0] (retail-via-desk): "
        "'re tail' is not a group name",
        f"  - {path}:19: rules[1].when.outside.tz (office-hours): unknown time zone "
        "'Europe/Lundon' (e.g. Europe/London)",
        f"  - {path}:31: rules[3].client (short-lived): unknown key; "
        "conditions go inside the rule's target or when",
        f"  - {path}:29: rules[3].name (short-lived): 'short-lived' is also rule 2",
    ]
    assert await db.fetch("SELECT * FROM policies ORDER BY name") == before


async def test_syntax_errors_name_the_line(cli: Cli, tmp_path: Path) -> None:
    broken_json = _write(tmp_path / "p.json", '{"rules": [\n  {"name": "a",}\n]}')
    refused = await cli("policy", "import", str(broken_json))
    assert refused.code == 2
    assert f"{broken_json}:2:16: invalid JSON" in refused.err
    broken_toml = _write(tmp_path / "p.toml", "rules = [\n")
    assert "invalid TOML" in (await cli("policy", "import", str(broken_toml))).err
    no_rules = _write(tmp_path / "none.toml", "version = 1\n")
    assert "missing 'rules'" in (await cli("policy", "import", str(no_rules))).err


async def test_json_problems_name_their_lines_too(cli: Cli, tmp_path: Path) -> None:
    document = {
        "version": 1,
        "rules": [
            {"name": "fine", "effect": "deny"},
            {"name": "broken", "effect": "deny", "when": {"ip_in": ["300.1.1.1"]}},
        ],
    }
    path = _write(tmp_path / "p.json", json.dumps(document, indent=2))
    refused = await cli("policy", "import", str(path))
    assert refused.code == 2
    assert f"{path}:12: rules[1].when.ip_in[0] (broken): '300.1.1.1' is not a network" in (
        refused.err
    )


async def test_a_dry_run_validates_and_compares_without_changing(
    cli: Cli, tmp_path: Path, db: asyncpg.Connection
) -> None:
    await cli("policy", "add", "old", "--effect", "deny")
    result = await cli(
        "policy", "import", str(_write(tmp_path / "p.toml", POLICY_TOML)), "--dry-run", "--json"
    )
    assert result.code == 0
    assert result.json()["removed"] == ["old"]
    assert await db.fetchval("SELECT array_agg(name) FROM policies") == ["old"]


async def test_a_rule_added_by_the_cli_applies_in_a_running_app(
    cli: Cli, running: RunningApp, rp: RegisteredClient, alice: User
) -> None:
    assert (await start_request(running.http, rp.basic_auth())).status_code == 200
    added = await cli(
        "policy", "add", "stop-rp", "--effect", "deny", "--mode", "enforce",
        "--target", f"clients={rp.client_id}",
    )  # fmt: skip
    assert added.code == 0, added.err
    for _ in range(200):
        response = await start_request(running.http, rp.basic_auth())
        if response.status_code == 403:
            break
        await asyncio.sleep(0.01)
    assert response.status_code == 403 and response.json()["error"] == "access_denied"


async def test_user_groups_are_added_listed_and_removed(
    cli: Cli, db: asyncpg.Connection, alice: User
) -> None:
    added = await cli("user", "group", "add", "alice", "retail", "--json")
    assert added.code == 0, added.err
    assert added.json() == {"subject": "alice", "groups": ["retail"], "changed": True}
    assert (await cli("user", "group", "add", "alice", "retail")).out.strip() == (
        "alice already in retail"
    )
    await cli("user", "group", "add", "alice", "staff")
    assert (await cli("user", "groups", "alice")).out.split() == ["retail", "staff"]
    removed = await cli("user", "group", "remove", "alice", "retail")
    assert removed.out.strip() == "alice removed from retail"
    assert (await cli("user", "groups", "alice", "--json")).json()["groups"] == ["staff"]
    changes = [r["detail"] for r in await audit_events(db, "user_groups_changed")]
    assert changes == [
        {"actor": CLI_ACTOR, "action": "add", "group": "retail"},
        {"actor": CLI_ACTOR, "action": "add", "group": "staff"},
        {"actor": CLI_ACTOR, "action": "remove", "group": "retail"},
    ]


async def test_group_commands_refuse_bad_names_and_unknown_users(cli: Cli, alice: User) -> None:
    bad = await cli("user", "group", "add", "alice", "no spaces")
    assert bad.code == 2 and "is not a group name" in bad.err
    unknown = await cli("user", "groups", "nobody")
    assert unknown.code == 1 and "no user 'nobody'" in unknown.err
