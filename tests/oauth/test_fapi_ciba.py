"""The FAPI-CIBA profile: checked at registration (every problem listed), enforced on
every request, each refusal naming its rule. Clients that break a rule at run time are
written to the database directly, past registration, so that each runtime guard is
tested on its own."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.jwk import Key

from backchannel.db.users import User
from backchannel.oauth import fapi_ciba
from backchannel.oauth.registration import (
    ClientRegistration,
    RegistrationError,
    validate_registration,
)
from backchannel.settings import Settings
from tests.conftest import ISSUER, RegisteredClient
from tests.support import jose
from tests.support.ciba import CIBA_GRANT, decide
from tests.support.dpop import DPoPKey

TOKEN_URL = ISSUER + "/token"


def fapi_registration(**changes: Any) -> ClientRegistration:
    key = jose.ec_key()
    fields: dict[str, Any] = {
        "name": "Bank app",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": jose.public_jwks(key),
        "backchannel_authentication_request_signing_alg": "PS256",
        "require_signed_request": True,
        "dpop_bound_access_tokens": True,
        "id_token_signed_response_alg": "PS256",
        "profile": "fapi-ciba",
    }
    fields.update(changes)
    return ClientRegistration(**fields)


def problems_of(reg: ClientRegistration) -> list[str]:
    with pytest.raises(RegistrationError) as refused:
        validate_registration(reg, Settings())
    return refused.value.problems


def test_a_compliant_registration_passes() -> None:
    validate_registration(fapi_registration(), Settings())
    validate_registration(
        fapi_registration(
            token_endpoint_auth_method="tls_client_auth",
            tls_client_auth_subject_dn="CN=bank-app,O=Acme Bank",
            dpop_bound_access_tokens=False,
            tls_client_certificate_bound_access_tokens=True,
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint="https://bank.example/notify",
        ),
        Settings(),
    )


def test_registration_lists_every_rule_broken() -> None:
    problems = problems_of(
        ClientRegistration(
            name="Careless",
            profile="fapi-ciba",
            backchannel_token_delivery_mode="push",
            backchannel_client_notification_endpoint="https://bank.example/notify",
            id_token_signed_response_alg="RS256",
        )
    )
    text = "\n".join(problems)
    for rule in (
        fapi_ciba.SIGNED_REQUESTS,
        fapi_ciba.CLIENT_AUTHENTICATION,
        fapi_ciba.SENDER_CONSTRAINED,
        fapi_ciba.NO_PUSH,
        fapi_ciba.ID_TOKEN_ALG,
    ):
        assert rule in text


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"require_signed_request": False}, fapi_ciba.SIGNED_REQUESTS),
        ({"backchannel_authentication_request_signing_alg": "RS256"}, fapi_ciba.SIGNED_REQUESTS),
        ({"backchannel_authentication_request_signing_alg": "EdDSA"}, fapi_ciba.SIGNED_REQUESTS),
        ({"token_endpoint_auth_method": "client_secret_basic"}, fapi_ciba.CLIENT_AUTHENTICATION),
        ({"dpop_bound_access_tokens": False}, fapi_ciba.SENDER_CONSTRAINED),
        ({"id_token_signed_response_alg": "RS256"}, fapi_ciba.ID_TOKEN_ALG),
    ],
)
def test_registration_refuses_each_rule_with_its_reason(changes: dict[str, Any], rule: str) -> None:
    problems = problems_of(fapi_registration(**changes))
    assert [p for p in problems if p.startswith(rule)], problems


# --- run time ---------------------------------------------------------------------------


@pytest.fixture
def key() -> Key:
    return jose.ec_key()


@pytest.fixture
def fapi_client(make_client: Any, key: Key) -> Any:
    """Makes a FAPI-CIBA client straight in the database, with ``changes`` applied."""

    async def make(signing_key: Key | None = None, **changes: Any) -> RegisteredClient:
        fields: dict[str, Any] = {
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": jose.public_jwks(signing_key or key),
            "backchannel_authentication_request_signing_alg": "ES256",
            "require_signed_request": True,
            "dpop_bound_access_tokens": True,
            "profile": "fapi-ciba",
            **changes,
        }
        client: RegisteredClient = await make_client(**fields)
        return client

    return make


def client_auth(client_id: str, key: Key, alg: str = "ES256") -> dict[str, str]:
    return jose.assertion_form(jose.client_assertion(client_id, key, ISSUER, alg))


async def bc_authorize(
    http: httpx.AsyncClient,
    client_id: str,
    key: Key,
    *,
    signed: bool = True,
    alg: str = "ES256",
    **params: Any,
) -> httpx.Response:
    params = {"binding_message": "Pay 80 EUR to Acme", **params}
    params = {k: v for k, v in params.items() if v is not None}
    if signed:
        form = {"request": jose.request_object(client_id, key, ISSUER, alg, **params)}
    else:
        form = {"scope": "openid", "login_hint": "alice@example.com", **params}
    return await http.post("/bc-authorize", data={**form, **client_auth(client_id, key)})


def assert_rule(response: httpx.Response, error: str, rule: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"].startswith(rule), response.text


async def test_a_compliant_client_gets_dpop_bound_tokens(
    http: httpx.AsyncClient, db: asyncpg.Connection, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client()
    started = await bc_authorize(http, rp.client_id, key)
    assert started.status_code == 200, started.text
    await decide(db, started.json()["auth_req_id"])
    response = await http.post(
        "/token",
        data={
            "grant_type": CIBA_GRANT,
            "auth_req_id": started.json()["auth_req_id"],
            **client_auth(rp.client_id, key),
        },
        headers={"DPoP": DPoPKey().proof("POST", TOKEN_URL)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"


async def test_an_unsigned_request_is_refused(
    http: httpx.AsyncClient, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client(require_signed_request=False)
    response = await bc_authorize(http, rp.client_id, key, signed=False)
    assert_rule(response, "invalid_request", fapi_ciba.SIGNED_REQUESTS)


async def test_a_request_signed_with_rs256_is_refused(
    http: httpx.AsyncClient, fapi_client: Any, alice: User
) -> None:
    rsa = jose.rsa_key()
    rp = await fapi_client(rsa, backchannel_authentication_request_signing_alg="RS256")
    request = jose.request_object(rp.client_id, rsa, ISSUER, "RS256", binding_message="Pay")
    response = await http.post(
        "/bc-authorize", data={"request": request, **client_auth(rp.client_id, rsa, "PS256")}
    )
    assert_rule(response, "invalid_request", fapi_ciba.SIGNED_REQUESTS)


async def test_a_request_without_binding_message_or_authorization_details_is_refused(
    http: httpx.AsyncClient, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client()
    for empty in (None, ""):
        response = await bc_authorize(http, rp.client_id, key, binding_message=empty)
        assert_rule(response, "invalid_request", fapi_ciba.BINDING)


async def test_client_secret_authentication_is_refused(
    http: httpx.AsyncClient, make_client: Any, alice: User
) -> None:
    rp: RegisteredClient = await make_client(profile="fapi-ciba", dpop_bound_access_tokens=True)
    response = await http.post(
        "/bc-authorize",
        data={"scope": "openid", "login_hint": "alice@example.com"},
        headers=rp.basic_auth(),
    )
    assert_rule(response, "invalid_client", fapi_ciba.CLIENT_AUTHENTICATION, status=401)


async def test_a_token_request_without_sender_constraint_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client(dpop_bound_access_tokens=False)
    started = await bc_authorize(http, rp.client_id, key)
    await decide(db, started.json()["auth_req_id"])
    response = await http.post(
        "/token",
        data={
            "grant_type": CIBA_GRANT,
            "auth_req_id": started.json()["auth_req_id"],
            **client_auth(rp.client_id, key),
        },
    )
    assert_rule(response, "invalid_request", fapi_ciba.SENDER_CONSTRAINED)


async def test_a_push_mode_client_is_refused(
    http: httpx.AsyncClient, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client(
        backchannel_token_delivery_mode="push",
        backchannel_client_notification_endpoint="https://bank.example/notify",
        dpop_bound_access_tokens=False,
    )
    response = await bc_authorize(http, rp.client_id, key, client_notification_token="abc")
    assert_rule(response, "unauthorized_client", fapi_ciba.NO_PUSH)


async def test_an_rs256_id_token_is_refused(
    http: httpx.AsyncClient, db: asyncpg.Connection, fapi_client: Any, key: Key, alice: User
) -> None:
    rp = await fapi_client(id_token_signed_response_alg="RS256")
    started = await bc_authorize(http, rp.client_id, key)
    await decide(db, started.json()["auth_req_id"])
    response = await http.post(
        "/token",
        data={
            "grant_type": CIBA_GRANT,
            "auth_req_id": started.json()["auth_req_id"],
            **client_auth(rp.client_id, key),
        },
        headers={"DPoP": DPoPKey().proof("POST", TOKEN_URL)},
    )
    assert_rule(response, "unauthorized_client", fapi_ciba.ID_TOKEN_ALG)
