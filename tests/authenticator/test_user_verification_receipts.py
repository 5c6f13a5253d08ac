"""Receipts of approvals with user verification: checkable by a third party, offline."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg
import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from backchannel.authenticator.receipts import InvalidReceipt, sign_receipt, verify_receipt
from backchannel.db.users import User
from backchannel.settings import Settings
from tests.conftest import RegisteredClient, RunningApp
from tests.support.ciba import start_auth_req_id
from tests.support.cli import Cli
from tests.support.user_verification import UV_ISSUER, require_uv, uv_phone, uv_settings
from tests.support.webauthn import SoftAuthenticator, b64url, b64url_decode, uv_challenge


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return uv_settings(settings)


MESSAGE = "Pay 1,250.00 EUR to ACME Ltd, IBAN DE89 3704 0044 0532 0130 00"


async def uv_receipt(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> tuple[str, str, dict[str, Any]]:
    """(receipt, auth_req_id, the pending entry) of a request approved with UV."""
    http = running.http
    await require_uv(running, db)
    phone = await uv_phone(http, db, alice.user_id)
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), binding_message=MESSAGE)
    entry = await phone.entry(http, auth_req_id)
    assert (await phone.approve_with_uv(http, entry)).status_code == 200
    response = await http.post(
        "/receipts", data={"auth_req_id": auth_req_id}, headers=rp.basic_auth()
    )
    assert response.status_code == 200, response.text
    return response.text, auth_req_id, entry


async def test_a_receipt_lets_anyone_check_the_user_verified_exactly_this_transaction(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    receipt, auth_req_id, entry = await uv_receipt(running, db, rp, alice)
    jwks = (await running.http.get("/jwks")).json()
    claims = verify_receipt(receipt, jwks, issuer=UV_ISSUER, auth_req_id=auth_req_id)
    uv = claims["user_verification"]
    assert (uv["rp_id"], uv["origin"]) == ("localhost", UV_ISSUER)
    assert uv["nonce"] == entry["challenge"] and uv["authorization_details"] is None
    stored_key = await db.fetchval("SELECT public_key FROM webauthn_credentials")
    assert b64url_decode(uv["credential"]["public_key"]) == bytes(stored_key)

    # By hand, as a third party would, with nothing of the server's code: the COSE key,
    # the client data's challenge over what was shown, the flags, the signature.
    cose = cbor2.loads(b64url_decode(uv["credential"]["public_key"]))
    key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big"), ec.SECP256R1()
    ).public_key()
    client_data = b64url_decode(uv["assertion"]["client_data_json"])
    authenticator_data = b64url_decode(uv["assertion"]["authenticator_data"])
    assert json.loads(client_data)["challenge"] == b64url(uv_challenge(entry))
    assert authenticator_data[:32] == hashlib.sha256(b"localhost").digest()
    assert authenticator_data[32] & 0x05 == 0x05  # user present and verified
    key.verify(
        b64url_decode(uv["assertion"]["signature"]),
        authenticator_data + hashlib.sha256(client_data).digest(),
        ec.ECDSA(hashes.SHA256()),
    )
    assert claims["shown"]["binding_message"] == MESSAGE


def _flip(text: str) -> str:
    raw = bytearray(b64url_decode(text))
    raw[-1] ^= 0x01
    return b64url(bytes(raw))


def _alter(uv: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(uv)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return changed


async def test_a_receipt_whose_user_verification_was_altered_does_not_verify(
    running: RunningApp, db: asyncpg.Connection, rp: RegisteredClient, alice: User
) -> None:
    receipt, _, _ = await uv_receipt(running, db, rp, alice)
    jwks = (await running.http.get("/jwks")).json()
    claims = verify_receipt(receipt, jwks)
    uv = claims["user_verification"]
    key = running.services.keys.signing_key("ES256")
    other_key = SoftAuthenticator().cose_public_key()

    def resigned(**changes: Any) -> str:
        return sign_receipt({**claims, **changes}, key)

    alterations = {
        "signature": _alter(uv, ("assertion", "signature"), _flip),
        "public key": _alter(uv, ("credential", "public_key"), b64url(other_key)),
        "nonce": _alter(uv, ("nonce",), "another-nonce"),
        "rp_id": _alter(uv, ("rp_id",), "example.com"),
        "authorization_details": _alter(uv, ("authorization_details",), [{"type": "x"}]),
        "client data": _alter(uv, ("assertion", "client_data_json"), _flip),
    }
    for name, altered in alterations.items():
        with pytest.raises(InvalidReceipt):
            verify_receipt(resigned(user_verification=altered), jwks)
            pytest.fail(f"a receipt with another {name} verified")
    without = {k: v for k, v in claims.items() if k != "user_verification"}
    with pytest.raises(InvalidReceipt, match="leaves out"):
        verify_receipt(sign_receipt(without, key), jwks)
    with pytest.raises(InvalidReceipt, match="another transaction"):
        verify_receipt(resigned(client_id="another-client"), jwks)
    with pytest.raises(InvalidReceipt, match="origin"):
        verify_receipt(resigned(iss="https://login.example.com"), jwks)


async def test_audit_verify_receipt_checks_a_receipt_offline(
    cli: Cli,
    running: RunningApp,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receipt, auth_req_id, _ = await uv_receipt(running, db, rp, alice)
    receipt_file, jwks_file = tmp_path / "receipt.jwt", tmp_path / "jwks.json"
    receipt_file.write_text(receipt)
    jwks_file.write_text((await running.http.get("/jwks")).text)
    args = ("--jwks", str(jwks_file), "--issuer", UV_ISSUER, "--auth-req-id", auth_req_id)

    checked = await cli("audit", "verify-receipt", str(receipt_file), *args)
    assert checked.code == 0, checked.err
    assert "receipt:         valid" in checked.out
    assert "user verified:   yes (WebAuthn credential" in checked.out
    as_json = await cli("audit", "verify-receipt", "--json", str(receipt_file), *args)
    assert as_json.json()["user_verified"] is True

    header, payload, signature = receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["shown"]["binding_message"] = "Pay 1.00 EUR to ACME Ltd"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    receipt_file.write_text(f"{header}.{forged}.{signature}")
    refused = await cli("audit", "verify-receipt", str(receipt_file), *args)
    assert refused.code == 1
    assert "does not verify" in refused.err

    # The operator's view of the stored receipt says the same.
    monkeypatch.setenv("BACKCHANNEL_ISSUER", UV_ISSUER)
    shown = await cli("audit", "receipt", auth_req_id)
    assert shown.code == 0, shown.err
    assert "device signature: valid" in shown.out
    assert "user verified:    yes (WebAuthn credential" in shown.out
