"""Approval receipts: stored with the device's signed decision, served to the asking client
signed by the server, verifiable by anyone holding the server's JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from backchannel.authenticator.messages import shown_digest
from backchannel.authenticator.receipts import (
    InvalidReceipt,
    receipt_claims,
    sign_receipt,
    store_receipt,
    verify_receipt,
)
from backchannel.db.audit_chain import select_receipt
from backchannel.db.users import User
from tests.conftest import ISSUER, RegisteredClient, RunningApp
from tests.support.ciba import audit_events, decide, start_auth_req_id
from tests.support.device import Phone, enrolled_phone, ref_of

DECISION_PATH = "/device/decision"
MESSAGE = "Transfer £250 to J. Smith"


@dataclass
class Decided:
    auth_req_id: str
    auth_request_id: int
    phone: Phone
    device_jws: str
    shown: dict[str, Any]


async def decide_on_phone(
    running: RunningApp,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    user: User,
    decision: str = "approve",
) -> Decided:
    """A request decided on an enrolled phone, its receipt stored as the decision code does."""
    http = running.http
    phone = await enrolled_phone(http, db, user.user_id)
    auth_req_id = await start_auth_req_id(
        http, rp.basic_auth(), scope="openid email", binding_message=MESSAGE
    )
    [entry] = [e for e in await phone.pending(http) if e["ref"] == ref_of(auth_req_id)]
    device_jws = phone.call_jws(DECISION_PATH, **phone.decision(entry, decision))
    status = "approved" if decision == "approve" else "denied"
    reason = None if decision == "approve" else ("not_me" if decision == "not_me" else "user")
    assert phone.device_id is not None
    decided = await decide(db, auth_req_id, status, device_id=phone.device_id, reason=reason)
    shown = {k: entry[k] for k in ("client_name", "binding_message", "scope")}
    await store_receipt(
        db,
        auth_request_id=decided.id,
        device_id=phone.device_id,
        decision=decision,
        shown=shown,
        device_jws=device_jws,
        device_public_jwk=phone.public_jwk(),
    )
    return Decided(auth_req_id, decided.id, phone, device_jws, shown)


async def fetch_receipt(
    http: httpx.AsyncClient, client: RegisteredClient, auth_req_id: str
) -> httpx.Response:
    return await http.post(
        "/receipts", data={"auth_req_id": auth_req_id}, headers=client.basic_auth()
    )


def b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


# --- fetching --------------------------------------------------------------------------------


async def test_the_asking_client_gets_a_receipt_that_verifies_with_the_servers_jwks(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    response = await fetch_receipt(running.http, rp, decided.auth_req_id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jwt"
    assert response.headers["cache-control"] == "no-store"
    receipt = response.text
    header = b64json(receipt.split(".")[0])
    assert header["typ"] == "bc-receipt+jwt" and header["alg"] == "ES256"

    jwks = (await running.http.get("/jwks")).json()
    claims = verify_receipt(receipt, jwks, issuer=ISSUER, auth_req_id=decided.auth_req_id)
    phone = decided.phone
    assert claims["iss"] == ISSUER and claims["aud"] == rp.client_id
    assert claims["sub"] == "alice" and claims["client_id"] == rp.client_id
    assert claims["ref"] == hashlib.sha256(decided.auth_req_id.encode()).hexdigest()
    assert claims["shown"]["client_name"] == "Acme Coffee"
    assert claims["shown"]["binding_message"] == MESSAGE
    assert claims["shown"]["scope"] == ["openid", "email"]
    assert claims["decision"] == "approve"
    assert isinstance(claims["decided_at"], int) and isinstance(claims["iat"], int)
    assert claims["device"]["device_id"] == phone.device_id
    assert claims["device"]["name"] == "Alice's phone"
    public = phone.key.as_dict(private=False)
    assert claims["device"]["jwk"] == {k: public[k] for k in ("kty", "crv", "x", "y")}
    assert claims["device"]["jkt"] == phone.key.thumbprint()

    # The device's own signature travels unchanged and verifies with the phone's key alone.
    assert claims["device_jws"] == decided.device_jws
    signed = jws.deserialize_compact(
        claims["device_jws"], ECKey.import_key(public), algorithms=["ES256"]
    )
    device_claims = json.loads(signed.payload)
    assert device_claims["ref"] == claims["ref"] and device_claims["decision"] == "approve"
    assert device_claims["shown"] == claims["shown"]["digest"]

    [issued] = await audit_events(db, "approval_receipt_issued")
    assert issued["client_id"] == rp.client_id
    assert issued["auth_request_id"] == decided.auth_request_id


async def test_a_denial_as_not_me_has_a_receipt_too(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice, decision="not_me")
    response = await fetch_receipt(running.http, rp, decided.auth_req_id)
    jwks = running.services.keys.public_jwks()
    assert verify_receipt(response.text, jwks)["decision"] == "not_me"


async def test_another_client_gets_the_same_404_as_for_an_unknown_or_undecided_request(
    running: RunningApp,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    make_client: Any,
    alice: User,
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    other: RegisteredClient = await make_client(name="Other Shop")
    pending = await start_auth_req_id(running.http, rp.basic_auth())
    answers = [
        await fetch_receipt(running.http, other, decided.auth_req_id),
        await fetch_receipt(running.http, rp, "no-such-auth-req-id"),
        await fetch_receipt(running.http, rp, pending),
    ]
    for response in answers:
        assert response.status_code == 404
        assert response.json()["error"] == "invalid_grant"
    assert len({r.text for r in answers}) == 1
    assert await audit_events(db, "approval_receipt_issued") == []


async def test_the_receipt_endpoint_needs_client_authentication_and_an_auth_req_id(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    anonymous = await running.http.post("/receipts", data={"auth_req_id": decided.auth_req_id})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    missing = await running.http.post("/receipts", data={}, headers=rp.basic_auth())
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


# --- verifying -------------------------------------------------------------------------------


async def test_verify_receipt_refuses_any_altered_part(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    receipt = (await fetch_receipt(running.http, rp, decided.auth_req_id)).text
    jwks = running.services.keys.public_jwks()
    server_key = running.services.keys.signing_key("ES256")
    claims = verify_receipt(receipt, jwks)

    stranger = ECKey.generate_key("P-256", private=True, auto_kid=True)
    with pytest.raises(InvalidReceipt, match="server signature"):
        verify_receipt(receipt, {"keys": [stranger.as_dict(private=False)]})
    with pytest.raises(InvalidReceipt, match="another auth_req_id"):
        verify_receipt(receipt, jwks, auth_req_id="some-other-request")
    with pytest.raises(InvalidReceipt, match="another issuer"):
        verify_receipt(receipt, jwks, issuer="https://elsewhere.example")

    def resigned(**changes: Any) -> str:
        return sign_receipt({**claims, **changes}, server_key)

    message_only = {**claims["shown"], "binding_message": "Transfer £25000"}
    with pytest.raises(InvalidReceipt, match="digest"):
        verify_receipt(resigned(shown=message_only), jwks)
    digest = shown_digest(claims["ref"], "Acme Coffee", "Transfer £25000", ["openid", "email"])
    with pytest.raises(InvalidReceipt, match="device signed another shown"):
        verify_receipt(resigned(shown={**message_only, "digest": digest}), jwks)
    with pytest.raises(InvalidReceipt, match="device signed another decision"):
        verify_receipt(resigned(decision="deny"), jwks)

    impostor = {k: stranger.as_dict(private=False)[k] for k in ("kty", "crv", "x", "y")}
    with pytest.raises(InvalidReceipt, match="device signature does not verify"):
        device = {**claims["device"], "jwk": impostor, "jkt": stranger.thumbprint()}
        verify_receipt(resigned(device=device), jwks)
    with pytest.raises(InvalidReceipt, match="jkt"):
        verify_receipt(resigned(device={**claims["device"], "jkt": "x"}), jwks)


# --- storing ---------------------------------------------------------------------------------


async def test_store_receipt_refuses_a_decision_the_device_did_not_sign(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    other = await start_auth_req_id(running.http, rp.basic_auth(), binding_message=MESSAGE)
    [entry] = [e for e in await decided.phone.pending(running.http) if e["ref"] == ref_of(other)]
    assert decided.phone.device_id is not None
    target = await decide(db, other, "approved", device_id=decided.phone.device_id)
    good_payload = decided.phone.decision(entry, "approve")
    stranger = Phone()
    stranger.device_id = decided.phone.device_id
    attempts = {
        "signed by another key": stranger.call_jws(DECISION_PATH, **good_payload),
        "over another decision": decided.phone.call_jws(
            DECISION_PATH, **decided.phone.decision(entry, "deny")
        ),
        "about another request": decided.device_jws,
    }
    shown = {k: entry[k] for k in ("client_name", "binding_message", "scope")}
    # Without the request's ref and client (stored, then checked and rolled back) and
    # with them (checked first, then stored only for that request).
    known = {"ref": ref_of(other), "client_id": target.client_id}
    for what, device_jws in attempts.items():
        for request in ({}, known):
            with pytest.raises(ValueError, match="does not fit"):
                await store_receipt(
                    db,
                    auth_request_id=target.id,
                    device_id=decided.phone.device_id,
                    decision="approve",
                    shown=shown,
                    device_jws=device_jws,
                    device_public_jwk=decided.phone.public_jwk(),
                    **request,
                )
            assert await select_receipt(db, auth_request_id=target.id) is None, what
    # A JWS that fits the ref and client it is named with is not stored under another request
    # or for another client.
    misnamed = {
        "another request": (decided.device_jws, decided.shown, ref_of(decided.auth_req_id), None),
        "another client": (
            decided.phone.call_jws(DECISION_PATH, **good_payload),
            shown,
            ref_of(other),
            "other-client",
        ),
    }
    for what, (device_jws, shown_there, ref, client_id) in misnamed.items():
        with pytest.raises(ValueError, match="no auth request"):
            await store_receipt(
                db,
                auth_request_id=target.id,
                device_id=decided.phone.device_id,
                decision="approve",
                shown=shown_there,
                device_jws=device_jws,
                device_public_jwk=decided.phone.public_jwk(),
                ref=ref,
                client_id=client_id or target.client_id,
            )
        assert await select_receipt(db, auth_request_id=target.id) is None, what
    with pytest.raises(ValueError, match="decision"):
        await store_receipt(
            db,
            auth_request_id=target.id,
            device_id=decided.phone.device_id,
            decision="approved",
            shown=decided.shown,
            device_jws=decided.device_jws,
            device_public_jwk=decided.phone.public_jwk(),
        )
    with pytest.raises(ValueError, match=r"^no auth request 999999$"):
        await store_receipt(
            db,
            auth_request_id=999999,
            device_id=decided.phone.device_id,
            decision="approve",
            shown=decided.shown,
            device_jws=decided.device_jws,
            device_public_jwk=decided.phone.public_jwk(),
        )
    assert len(await audit_events(db, "approval_receipt_stored")) == 1


async def test_a_stored_receipt_is_immutable_and_bound_into_the_audit_chain(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    decided = await decide_on_phone(running, db, rp, alice)
    [stored] = await audit_events(db, "approval_receipt_stored")
    assert stored["auth_request_id"] == decided.auth_request_id
    assert stored["device_id"] == decided.phone.device_id
    assert (stored["client_id"], stored["user_id"]) == (rp.client_id, alice.user_id)
    digest = hashlib.sha256(decided.device_jws.encode()).digest()
    assert stored["detail"] == {
        "decision": "approve",
        "device_jws_sha256": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
        "jkt": decided.phone.key.thumbprint(),
        "user_verified": False,
    }
    for statement in (
        "UPDATE approval_receipts SET decision = 'deny'",
        "DELETE FROM approval_receipts",
        "TRUNCATE approval_receipts",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(statement)
    receipt = await select_receipt(db, auth_request_id=decided.auth_request_id)
    assert receipt is not None and receipt.decision == "approve"
    claims = receipt_claims(receipt, issuer=ISSUER)
    assert claims["device_jws"] == decided.device_jws
