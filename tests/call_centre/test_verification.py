"""Verifying a caller through the panel, against the real server: each way it can end."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from backchannel.db.users import User
from backchannel.oauth.decision_recording import record_decision
from tests.support.call_centre import Desk, binding_message_on, current_status, request_hash

pytestmark = pytest.mark.usefixtures("alice")

MESSAGE = re.compile(r"Agent 42: (password reset|change of address), code [A-Z0-9]{4}")


async def _decide(db: asyncpg.Connection, page: str, decision: str, reason: str | None) -> None:
    id_hash = await request_hash(db, binding_message_on(page))
    await record_decision(db, id_hash, decision, reason=reason)  # type: ignore[arg-type]


async def test_an_approving_caller_is_verified_by_subject_and_name_then_marked_done(
    desk: Desk, db: asyncpg.Connection
) -> None:
    attempt = await desk.start("Alice@Example.com", "password-reset")
    page = (await desk.http.get(attempt)).text
    assert current_status(page) == "waiting"
    message = binding_message_on(page)
    assert MESSAGE.fullmatch(message), message
    code = message.rsplit(" ", 1)[1]
    assert f'<span class="code">{code}</span>' in page
    sent = await db.fetchrow("SELECT scope, binding_message, requested_expiry FROM auth_requests")
    assert sent is not None
    assert sent["binding_message"] == message
    assert list(sent["scope"]) == ["openid", "profile"]
    assert sent["requested_expiry"] == 120

    await _decide(db, page, "approved", None)
    verified = await desk.until_status(attempt, "verified")
    assert '<dd data-field="subject">alice</dd>' in verified
    assert '<dd data-field="name">Alice Example</dd>' in verified
    assert "Identity verified." in verified
    # The panel keeps no tokens: it revoked the access token once it had the name.
    assert await db.fetchval("SELECT count(*) FROM access_tokens WHERE revoked_at IS NULL") == 0

    done = await desk.post(attempt + "/done")
    assert done.status_code == 303
    after = (await desk.http.get(attempt)).text
    assert "<strong>Password reset done.</strong> Confirmed at" in after
    assert 'class="done-mark">· Password reset done</span>' in after
    assert (await desk.post(attempt + "/done")).status_code == 303  # a second one changes nothing
    assert (await desk.http.get(attempt)).text.count("done-mark") == 1


@pytest.mark.parametrize(
    ("reason", "status", "says"),
    [
        ("user", "denied", "The caller denied the request on their phone."),
        ("not_me", "not_me", "The caller&#x27;s phone says it wasn&#x27;t them"),
    ],
)
async def test_a_denial_and_a_not_me_report_are_told_apart(
    desk: Desk, db: asyncpg.Connection, reason: str, status: str, says: str
) -> None:
    attempt = await desk.start("+44 7700 900123", "change-of-address")
    page = (await desk.http.get(attempt)).text
    await _decide(db, page, "denied", reason)
    ended = await desk.until_status(attempt, status)
    assert says in ended
    assert "Verified identity" in ended and 'class="identity" hidden' in ended
    assert 'class="done-form" hidden' in ended  # nothing to confirm


async def test_after_a_not_me_report_the_server_refuses_to_prompt_the_caller_again(
    desk: Desk, db: asyncpg.Connection
) -> None:
    first = await desk.start("12345678")
    await _decide(db, (await desk.http.get(first)).text, "denied", "not_me")
    await desk.until_status(first, "not_me")
    again = await desk.start("12345678")
    refused = (await desk.http.get(again)).text
    assert current_status(refused) == "refused"
    assert "would not prompt this customer now" in refused


@pytest.mark.parametrize("panel_options", [{"request_expiry": 2}])
async def test_a_caller_who_never_answers_expires(desk: Desk, panel_options: Any) -> None:
    attempt = await desk.start("alice@example.com")
    expired = await desk.until_status(attempt, "expired", within=20)
    assert "The request expired before the caller answered." in expired


async def test_nobody_by_that_identifier_is_no_match(desk: Desk, alice: User) -> None:
    attempt = await desk.start("nobody@example.com")
    page = (await desk.http.get(attempt)).text
    assert current_status(page) == "no_match"
    assert "No customer has that email, phone number or account number." in page


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("   ", "Enter the caller&#x27;s email, phone number or account number."),
        ("+44 12", "Phone numbers need the country code"),
        ("alice@", "That email address is not complete"),
        ("no spaces please", "Enter an email address, a phone number starting with +"),
    ],
)
async def test_what_is_not_an_identifier_is_refused_on_the_form(
    desk: Desk, db: asyncpg.Connection, typed: str, error: str
) -> None:
    answer = await desk.post("/attempts", caller=typed, reason="password-reset")
    assert answer.status_code == 422
    assert error in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert 'aria-describedby="caller-help caller-error"' in answer.text
    assert await db.fetchval("SELECT count(*) FROM auth_requests") == 0
    unknown_reason = await desk.post("/attempts", caller="alice@example.com", reason="gossip")
    assert unknown_reason.status_code == 422


async def test_every_attempt_is_listed_with_its_outcome(desk: Desk, db: asyncpg.Connection) -> None:
    denied = await desk.start("alice@example.com")
    await _decide(db, (await desk.http.get(denied)).text, "denied", "user")
    await desk.until_status(denied, "denied")
    unknown = await desk.start("bob@example.com")
    page = (await desk.http.get("/")).text
    row = re.compile(r'<tr data-attempt="([^"]+)".*?data-status="(\w+)">([^<]+)</span>', re.S)
    rows = row.findall(page)
    assert [(f"/attempts/{i}", s, label) for i, s, label in rows] == [
        (unknown, "no_match", "No match"),
        (denied, "denied", "Denied"),
    ]
