"""``backchannel audit``: listing, sealing, verifying (exit 1 on a broken chain), receipts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from backchannel.audit.chain import seal_pending
from backchannel.authenticator.receipts import verify_receipt
from backchannel.db.audit import insert_audit_event
from backchannel.db.users import User
from tests.authenticator.test_receipts import decide_on_phone
from tests.conftest import ISSUER, RegisteredClient, RunningApp
from tests.support import factories
from tests.support.cli import Cli, Result
from tests.support.device import ref_of


async def sealed_events(db: asyncpg.Connection, count: int) -> None:
    for i in range(count):
        await insert_audit_event(db, "token_issued", client_id="acme", detail={"n": i})
    await seal_pending(db)


async def id_at(db: asyncpg.Connection, seq: int) -> int:
    row_id: int = await db.fetchval("SELECT id FROM audit_events WHERE seq = $1", seq)
    return row_id


async def as_attacker(db: asyncpg.Connection, *statements: str) -> None:
    await db.execute("ALTER TABLE audit_events DISABLE TRIGGER ALL")
    for statement in statements:
        await db.execute(statement)
    await db.execute("ALTER TABLE audit_events ENABLE TRIGGER ALL")


# --- seal and verify -------------------------------------------------------------------------


async def test_seal_then_verify_an_intact_chain_exits_0(cli: Cli, db: asyncpg.Connection) -> None:
    for i in range(5):
        await insert_audit_event(db, "token_issued", detail={"n": i})
    sealed = await cli("audit", "seal", "--json")
    assert sealed.code == 0, sealed.err
    assert sealed.json() == {"sealed": 5, "head_seq": 5}
    again = await cli("audit", "seal", "--json")  # nothing left: it still names the head
    assert again.json() == {"sealed": 0, "head_seq": 5}
    await insert_audit_event(db, "token_issued")

    verified = await cli("audit", "verify", "--json")
    assert verified.code == 0, verified.err
    report = verified.json()
    assert report["intact"] is True and report["checked"] == 5 and report["problems"] == []
    assert report["last"] == report["recorded_head"] and report["last"]["seq"] == 5
    assert report["unsealed"]["count"] == 1 and report["unsealed"]["oldest_at"]

    text = await cli("audit", "verify")
    assert text.code == 0
    assert "audit chain intact: 5 sealed events" in text.out
    assert f"head: 5:{report['last']['hash']}" in text.out
    assert "unsealed: 1 events" in text.out


async def test_verify_reports_an_edited_row_with_its_seq_and_id_and_exits_1(
    cli: Cli, db: asyncpg.Connection
) -> None:
    await sealed_events(db, 5)
    edited = await id_at(db, 2)
    await as_attacker(db, """UPDATE audit_events SET client_id = 'evil' WHERE seq = 2""")

    verified = await cli("audit", "verify", "--json")
    assert verified.code == 1
    report = verified.json()
    assert report["intact"] is False
    [problem] = report["problems"]
    assert (problem["kind"], problem["seq"], problem["id"]) == ("hash_mismatch", 2, edited)
    assert "broken" in verified.err

    text = await cli("audit", "verify")
    assert text.code == 1
    assert f"hash_mismatch: seq 2 (id {edited}) does not match its hash" in text.out


async def test_verify_reports_a_deleted_row_after_the_last_good_seq_and_exits_1(
    cli: Cli, db: asyncpg.Connection
) -> None:
    await sealed_events(db, 5)
    resumed = await id_at(db, 4)
    await as_attacker(db, "DELETE FROM audit_events WHERE seq = 3")
    verified = await cli("audit", "verify", "--json")
    assert verified.code == 1
    [problem] = verified.json()["problems"]
    assert problem["kind"] == "gap"
    assert (problem["after_seq"], problem["seq"], problem["id"]) == (2, 4, resumed)


async def test_verify_reports_reordered_rows_and_exits_1(cli: Cli, db: asyncpg.Connection) -> None:
    await sealed_events(db, 5)
    id2, id3 = await id_at(db, 2), await id_at(db, 3)
    await as_attacker(
        db,
        "UPDATE audit_events SET seq = 100 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 100",
    )
    verified = await cli("audit", "verify", "--json")
    assert verified.code == 1
    links = [
        (p["seq"], p["id"], p["after_seq"])
        for p in verified.json()["problems"]
        if p["kind"] == "broken_link"
    ]
    assert links == [(2, id3, 1), (3, id2, 2), (4, await id_at(db, 4), 3)]


async def test_verify_checks_anchors_given_on_the_command_line(
    cli: Cli, db: asyncpg.Connection
) -> None:
    await sealed_events(db, 3)
    head = (await cli("audit", "verify", "--json")).json()["last"]
    good = await cli("audit", "verify", "--anchor", f"{head['seq']}:{head['hash']}")
    assert good.code == 0, good.out
    bad = await cli("audit", "verify", "--json", "--anchor", f"2:{'0' * 64}")
    assert bad.code == 1
    assert [p["kind"] for p in bad.json()["problems"]] == ["anchor_mismatch"]
    malformed = await cli("audit", "verify", "--anchor", "2:xyz")
    assert malformed.code == 2


# --- list ------------------------------------------------------------------------------------


async def test_list_filters_by_user_client_event_and_time(
    cli: Cli, db: asyncpg.Connection, alice: User
) -> None:
    bob = await factories.create_user(db, subject="bob", email="bob@example.com")
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        (base, "auth_request_issued", "acme", alice.user_id),
        (base + timedelta(hours=1), "token_issued", "acme", alice.user_id),
        (base + timedelta(hours=2), "auth_request_issued", "bank", bob.user_id),
        (base + timedelta(hours=3), "token_issued", "bank", alice.user_id),
        (base + timedelta(hours=4), "auth_request_rejected", "acme", None),
    ]
    for at, event, client_id, user_id in rows:
        await db.execute(
            """INSERT INTO audit_events (at, event, client_id, user_id, detail)
               VALUES ($1, $2, $3, $4, '{"k": "v"}')""",
            at,
            event,
            client_id,
            user_id,
        )
    await seal_pending(db)

    def events(result: Result) -> list[tuple[str, str | None, str | None]]:
        assert result.code == 0, result.err
        return [(e["event"], e["client_id"], e["subject"]) for e in result.json_lines()]

    everything = await cli("audit", "--json")
    assert len(everything.json_lines()) == 5
    first = everything.json_lines()[-1]
    assert first["at"] == "2025-01-01T00:00:00.000000Z" and first["detail"] == {"k": "v"}
    assert first["seq"] == 1 and len(first["hash"]) == 64

    assert events(await cli("audit", "list", "--user", "alice", "--json")) == [
        ("token_issued", "bank", "alice"),
        ("token_issued", "acme", "alice"),
        ("auth_request_issued", "acme", "alice"),
    ]
    assert events(await cli("audit", "--client", "bank", "--event", "token_issued", "--json")) == [
        ("token_issued", "bank", "alice")
    ]
    window = await cli(
        "audit", "--since", "2025-01-01T01:00:00Z", "--until", "2025-01-01T03:00", "--json"
    )
    assert events(window) == [
        ("auth_request_issued", "bank", "bob"),
        ("token_issued", "acme", "alice"),
    ]
    assert events(await cli("audit", "list", "--limit", "2", "--json")) == [
        ("auth_request_rejected", "acme", None),
        ("token_issued", "bank", "alice"),
    ]

    human = await cli("audit", "list", "--event", "auth_request_rejected")
    assert human.code == 0
    header, line = human.out.splitlines()
    assert header.split() == [
        "ID", "SEQ", "AT", "EVENT", "CLIENT", "USER", "REQUEST", "DEVICE", "DETAIL",
    ]  # fmt: skip
    assert "auth_request_rejected" in line and '{"k": "v"}' in line

    assert (await cli("audit", "--user", "nobody")).code == 2
    assert (await cli("audit", "--since", "yesterday")).code == 2
    assert (await cli("audit", "--limit", "0")).code == 2


# --- receipt ---------------------------------------------------------------------------------


async def test_receipt_shows_the_stored_receipt_by_any_name_of_the_request(
    cli: Cli, running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    earlier = await decide_on_phone(running, db, rp, alice)
    decided = await decide_on_phone(running, db, rp, alice)
    jwks = running.services.keys.public_jwks()
    for request in (earlier, decided):  # each name finds its own request's receipt
        names = [str(request.auth_request_id), ref_of(request.auth_req_id), request.auth_req_id]
        for name in names:
            shown = await cli("audit", "receipt", "--json", "--", name)
            assert shown.code == 0, shown.err
            body = shown.json()
            assert body["auth_request_id"] == request.auth_request_id, name
            assert body["device_signature_valid"] is True
            assert body["claims"]["device_jws"] == request.device_jws
            claims = verify_receipt(body["receipt"], jwks, issuer=ISSUER)
            assert claims["ref"] == ref_of(request.auth_req_id)

    text = await cli("audit", "receipt", str(decided.auth_request_id))
    assert "device signature: valid" in text.out
    assert "Transfer £250 to J. Smith" in text.out
    unknown = await cli("audit", "receipt", "999999")
    assert unknown.code == 1 and "no approval receipt" in unknown.err
