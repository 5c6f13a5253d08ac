"""Recording a decision: what it stores, and that it stores all of it or nothing."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from backchannel.db.users import User
from backchannel.errors import RequestNotPending, UserVerificationRequired
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret
from tests.conftest import RegisteredClient
from tests.support.ciba import audit_events, decide, start_auth_req_id


async def _request_row(db: asyncpg.Connection, auth_req_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, denial_reason, prompts_withdrawn_at FROM auth_requests WHERE id_hash = $1",
        hash_secret(auth_req_id),
    )
    assert row is not None
    return row


async def test_a_decision_other_than_approve_or_deny_is_refused_by_name(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())

    with pytest.raises(ValueError) as refused:
        await decide(db, auth_req_id, "maybe")

    assert str(refused.value) == "unknown decision 'maybe'"
    assert (await _request_row(db, auth_req_id))["status"] == "pending"


async def test_a_denial_without_a_reason_is_the_users_and_an_approval_has_no_reason(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    denied = await start_auth_req_id(http, rp.basic_auth())
    approved = await start_auth_req_id(http, rp.basic_auth())

    assert (await decide(db, denied, "denied")).denial_reason == "user"
    assert (await decide(db, approved, "approved")).denial_reason is None

    assert (await _request_row(db, denied))["denial_reason"] == "user"
    assert (await _request_row(db, approved))["denial_reason"] is None
    details = [e["detail"] for e in await audit_events(db, "auth_request_decided")]
    assert details == [
        {"decision": "denied", "reason": "user"},
        {"decision": "approved", "reason": None},
    ]


async def test_a_decision_whose_follow_up_fails_leaves_the_request_pending(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    """Outside a caller's transaction the decision takes its own: when withdrawing the
    prompts (the step after the decision itself) fails, the decision and its audit row
    are rolled back with it."""
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    await db.execute(
        """CREATE FUNCTION refuse_withdrawal() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'withdrawal refused'; END $$;
           CREATE TRIGGER refuse_withdrawal BEFORE UPDATE OF prompts_withdrawn_at
               ON auth_requests FOR EACH ROW EXECUTE FUNCTION refuse_withdrawal();"""
    )

    with pytest.raises(asyncpg.RaiseError, match="withdrawal refused"):
        await decide(db, auth_req_id, "denied")

    assert not db.is_in_transaction()
    row = await _request_row(db, auth_req_id)
    assert (row["status"], row["denial_reason"], row["prompts_withdrawn_at"]) == (
        "pending",
        None,
        None,
    )
    assert await audit_events(db, "auth_request_decided") == []


async def test_a_decision_in_the_callers_transaction_is_undone_with_it(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())

    with pytest.raises(RuntimeError, match="caller gives up"):
        async with db.transaction():
            decided = await record_decision(db, hash_secret(auth_req_id), "approved")
            assert decided.status == "approved"
            raise RuntimeError("caller gives up")

    assert (await _request_row(db, auth_req_id))["status"] == "pending"
    assert await audit_events(db, "auth_request_decided") == []
    assert (await decide(db, auth_req_id, "approved")).status == "approved"


async def test_only_a_verified_user_approves_a_request_that_requires_it_and_anyone_denies(
    http: httpx.AsyncClient, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    unverified = await start_auth_req_id(http, rp.basic_auth())
    verified = await start_auth_req_id(http, rp.basic_auth())
    await db.execute("UPDATE auth_requests SET user_verification = 'required'")

    with pytest.raises(UserVerificationRequired) as refused:
        await decide(db, unverified, "approved")
    assert refused.value.description == (
        "approving this request needs the user's fingerprint, face or PIN on their device"
    )
    assert (await _request_row(db, unverified))["status"] == "pending"

    assert (await decide(db, verified, "approved", user_verified=True)).status == "approved"
    assert (await decide(db, unverified, "denied")).status == "denied"
    # A second denial is told the request is decided, not that it needs verification.
    with pytest.raises(RequestNotPending) as late:
        await decide(db, unverified, "denied")
    assert late.value.description == "the request is already denied"
