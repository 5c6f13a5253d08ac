"""Answers the contract fuzzing does not produce match the document as well.

The fuzzing (tests/contract/) runs over plain HTTP with one client and one
phone: it never presents a client certificate, never has a client that must
put DPoP nonces in its proofs, and rarely sees a request through from a
payment to the tokens and introspection. These flows make such answers and
check each one against openapi.json as the fuzzing does: a documented status,
content type, headers and body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import schemathesis
import trustme
from schemathesis import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backchannel.db.users import User
from backchannel.endpoints.openapi import openapi_document
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient, start_app
from tests.support.ciba import CIBA_GRANT, decide, start_auth_req_id
from tests.support.device import enrolment_code
from tests.support.dpop import DPoPKey
from tests.support.tls import cert_pem
from tests.support.user_verification import UVPhone, uv_settings
from tests.support.webauthn import SoftAuthenticator, uv_challenge

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
PAYMENT = [
    {
        "type": "payment_initiation",
        "instructedAmount": {"currency": "EUR", "amount": "80.00"},
        "creditorName": "Acme Coffee",
        "creditorAccount": {"iban": "DE89370400440532013000"},
    }
]


def assert_documented(response: httpx.Response) -> httpx.Response:
    """The answer is one the document gives for its operation (it raises otherwise)."""
    operation = SCHEMA[response.request.url.path][response.request.method]
    case = operation.Case()
    # A refusal is what these flows ask for: positive data need not be accepted.
    case.validate_response(Response.from_any(response), excluded_checks=[positive_data_acceptance])
    return response


async def token_request(
    http: httpx.AsyncClient, form: dict[str, str], auth: dict[str, str], proof: str | None = None
) -> httpx.Response:
    headers = {**auth, **({"DPoP": proof} if proof is not None else {})}
    return assert_documented(await http.post("/token", data=form, headers=headers))


async def introspected(
    http: httpx.AsyncClient, token: str, auth: dict[str, str], **form: str
) -> dict[str, Any]:
    response = assert_documented(
        await http.post("/introspect", data={"token": token, **form}, headers=auth)
    )
    body: dict[str, Any] = response.json()
    return body


async def test_dpop_nonces_and_dpop_bound_tokens_are_answered_as_documented(
    http: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    rp: RegisteredClient = await make_client(require_dpop_nonce=True)
    key = DPoPKey()
    token_url, userinfo_url = ISSUER + "/token", ISSUER + "/userinfo"
    auth_req_id = await start_auth_req_id(http, rp.basic_auth(), scope="openid email")
    await decide(db, auth_req_id)
    form = {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}

    asked = await token_request(http, form, rp.basic_auth(), key.proof("POST", token_url))
    assert asked.status_code == 400 and asked.json()["error"] == "use_dpop_nonce"
    nonce = asked.headers["DPoP-Nonce"]
    tokens = await token_request(
        http, form, rp.basic_auth(), key.proof("POST", token_url, nonce=nonce)
    )
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["token_type"] == "DPoP" and "DPoP-Nonce" in tokens.headers
    token = tokens.json()["access_token"]
    assert (await introspected(http, token, rp.basic_auth()))["cnf"] == {"jkt": key.jkt}

    as_bearer = assert_documented(
        await http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    )
    assert as_bearer.status_code == 401
    assert as_bearer.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
    without_nonce = assert_documented(
        await http.post(
            "/userinfo",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("POST", userinfo_url, access_token=token),
            },
        )
    )
    assert without_nonce.status_code == 401
    assert without_nonce.json()["error"] == "use_dpop_nonce"
    claims = assert_documented(
        await http.get(
            "/userinfo",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("GET", userinfo_url, access_token=token, nonce=nonce),
            },
        )
    )
    assert claims.status_code == 200 and "DPoP-Nonce" in claims.headers

    refresh = {"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]}
    unproven = await token_request(http, refresh, rp.basic_auth())
    assert unproven.status_code == 400 and unproven.json()["error"] == "invalid_dpop_proof"


@pytest.fixture
async def proxied(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app behind a TLS-terminating proxy that forwards a client
    certificate for ``acme.example`` issued by a CA the server trusts."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pem = cert_pem(ca.issue_cert("acme.example"))
    # The in-process client calls from 127.0.0.1, here the proxy's address.
    behind_proxy = settings.replace(
        trusted_proxies=("127.0.0.0/8",), tls_client_ca_file=str(ca_file)
    )
    async for running in start_app(behind_proxy):
        running.http.headers["X-Client-Cert"] = quote(pem)
        yield running.http


async def test_mutual_tls_clients_and_certificate_bound_tokens_are_answered_as_documented(
    proxied: httpx.AsyncClient, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    http = proxied
    rp: RegisteredClient = await make_client(
        token_endpoint_auth_method="tls_client_auth",
        secret_hash=None,
        tls_client_auth_san_dns="acme.example",
        tls_client_certificate_bound_access_tokens=True,
    )
    by_certificate = {"client_id": rp.client_id}
    started = assert_documented(
        await http.post(
            "/bc-authorize",
            data={**by_certificate, "scope": "openid", "login_hint": "alice@example.com"},
        )
    )
    assert started.status_code == 200, started.text
    auth_req_id = started.json()["auth_req_id"]
    await decide(db, auth_req_id)
    form = {**by_certificate, "grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}
    tokens = await token_request(http, form, {})
    assert tokens.status_code == 200, tokens.text
    token = tokens.json()["access_token"]
    assert "x5t#S256" in (await introspected(http, token, {}, **by_certificate))["cnf"]

    http.headers.pop("X-Client-Cert")
    no_certificate = assert_documented(
        await http.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
    )
    assert no_certificate.status_code == 401
    assert no_certificate.json()["error"] == "invalid_token"
    refused = assert_documented(await http.post("/revoke", data={**by_certificate, "token": token}))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


@pytest.fixture
def uv_app_settings(settings: Settings) -> Settings:
    return uv_settings(settings)


async def test_a_payment_approved_with_user_verification_is_answered_as_documented(
    uv_app_settings: Settings, db: asyncpg.Connection, make_client: Any, alice: User
) -> None:
    rp: RegisteredClient = await make_client(authorization_details_types=("payment_initiation",))
    async for running in start_app(uv_app_settings):
        http = running.http
        assert_documented(await http.get("/device/config"))
        assert_documented(await http.get("/.well-known/openid-configuration"))
        phone = UVPhone(issuer=uv_app_settings.issuer)
        assert (await phone.enrol(http, await enrolment_code(db, alice.user_id))).status_code == 201
        options = assert_documented(await phone.call(http, "/device/webauthn/register-options"))
        phone.authenticator = SoftAuthenticator()
        credential = phone.authenticator.create(options.json()["publicKey"])
        registered = assert_documented(
            await phone.call(http, "/device/webauthn/register", credential=credential)
        )
        assert registered.status_code == 201, registered.text
        again = assert_documented(
            await phone.call(http, "/device/webauthn/register", credential=credential)
        )
        assert again.status_code == 400

        auth_req_id = await start_auth_req_id(
            http,
            rp.basic_auth(),
            acr_values="urn:backchannel:acr:sca",
            authorization_details=json.dumps(PAYMENT),
        )
        pending = assert_documented(await phone.call(http, "/device/requests"))
        [entry] = pending.json()["requests"]
        assert entry["user_verification"] == "required"
        assert entry["authorization_details"] == PAYMENT
        unverified = assert_documented(await phone.decide(http, entry, "approve"))
        assert unverified.status_code == 403
        assertion = phone.authenticator.get(uv_challenge(entry, authorization_details=PAYMENT))
        approved = assert_documented(await phone.decide(http, entry, "approve", webauthn=assertion))
        assert approved.status_code == 200, approved.text
        assert_documented(await phone.call(http, "/device/devices"))
        assert_documented(await phone.call(http, "/device/history"))

        form = {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}
        tokens = await token_request(http, form, rp.basic_auth())
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["authorization_details"] == PAYMENT
        assert "refresh_token" not in tokens.json()
        details = await introspected(http, tokens.json()["access_token"], rp.basic_auth())
        assert details["acr"] == "urn:backchannel:acr:sca"
        assert details["amr"] == ["swk", "user", "mfa"]
        assert details["authorization_details"] == PAYMENT

        refused = assert_documented(
            await http.post(
                "/bc-authorize",
                data={
                    "scope": "openid",
                    "login_hint": "alice@example.com",
                    "authorization_details": '[{"type": "payment_initiation"}]',
                },
                headers=rp.basic_auth(),
            )
        )
        assert refused.json()["error"] == "invalid_authorization_details"
