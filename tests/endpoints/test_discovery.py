"""GET /.well-known/openid-configuration and GET /jwks."""

from __future__ import annotations

import httpx

from backchannel.oauth.algorithms import REQUEST_OBJECT_ALGS, SIGNING_ALGS
from tests.conftest import ISSUER, RegisteredClient

CIBA = "urn:openid:params:grant-type:ciba"


async def metadata(http: httpx.AsyncClient, **headers: str) -> dict[str, object]:
    response = await http.get("/.well-known/openid-configuration", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_metadata_advertises_the_ciba_provider(http: httpx.AsyncClient) -> None:
    response = await http.get("/.well-known/openid-configuration")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=300"
    body = response.json()
    assert body["issuer"] == ISSUER
    assert body["token_endpoint"] == ISSUER + "/token"
    assert body["backchannel_authentication_endpoint"] == ISSUER + "/bc-authorize"
    assert body["jwks_uri"] == ISSUER + "/jwks"
    assert body["userinfo_endpoint"] == ISSUER + "/userinfo"
    assert body["revocation_endpoint"] == ISSUER + "/revoke"
    assert body["introspection_endpoint"] == ISSUER + "/introspect"
    assert "authorization_endpoint" not in body
    assert body["response_types_supported"] == []
    assert body["grant_types_supported"] == [CIBA, "refresh_token"]
    assert body["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]
    assert body["backchannel_authentication_request_signing_alg_values_supported"] == list(
        REQUEST_OBJECT_ALGS
    )
    assert body["backchannel_user_code_parameter_supported"] is True
    assert body["id_token_signing_alg_values_supported"] == list(SIGNING_ALGS)
    assert body["subject_types_supported"] == ["public"]
    assert "openid" in body["scopes_supported"]
    assert {"sub", "name", "email", "phone_number"} <= set(body["claims_supported"])
    assert set(body["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    }
    for alg in body["token_endpoint_auth_signing_alg_values_supported"]:
        assert alg not in ("none", "HS256")


async def test_metadata_announces_dpop_and_mutual_tls(http: httpx.AsyncClient) -> None:
    body = await metadata(http)
    assert body["dpop_signing_alg_values_supported"] == ["ES256", "PS256", "EdDSA"]
    assert body["tls_client_certificate_bound_access_tokens"] is True
    assert body["mtls_endpoint_aliases"] == {
        "token_endpoint": ISSUER + "/token",
        "backchannel_authentication_endpoint": ISSUER + "/bc-authorize",
        "userinfo_endpoint": ISSUER + "/userinfo",
        "revocation_endpoint": ISSUER + "/revoke",
        "introspection_endpoint": ISSUER + "/introspect",
    }


async def test_metadata_ignores_a_forged_host_header(http: httpx.AsyncClient) -> None:
    forged = await metadata(http, host="evil.example", **{"x-forwarded-host": "evil.example"})
    assert forged == await metadata(http)
    assert "evil" not in str(forged)


async def test_every_advertised_endpoint_is_served(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    body = await metadata(http)
    assert (await http.get(str(body["jwks_uri"]))).status_code == 200
    for name in (
        "token_endpoint",
        "backchannel_authentication_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ):
        response = await http.post(str(body[name]), data={})
        assert response.status_code in (400, 401), (name, response.status_code)
    assert (await http.get(str(body["userinfo_endpoint"]))).status_code == 401


async def test_jwks_publishes_public_signing_keys_only(http: httpx.AsyncClient) -> None:
    response = await http.get("/jwks")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"].startswith("public, max-age=")
    keys = response.json()["keys"]
    assert sorted(k["alg"] for k in keys) == sorted(SIGNING_ALGS)
    for key in keys:
        assert key["use"] == "sig" and key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_discovery_answers_other_methods_without_a_server_error(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.post("/.well-known/openid-configuration")).status_code == 405
    assert (await http.delete("/jwks")).status_code == 405
