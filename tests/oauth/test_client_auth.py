"""Client authentication: client_secret_basic, client_secret_post, private_key_jwt."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import asyncpg
import pytest

from backchannel.db.clients import update_client_disabled
from backchannel.db.jtis import delete_expired_jtis, insert_jti
from backchannel.errors import InvalidClient, InvalidRequest, OAuthError
from backchannel.oauth import remote_jwks as remote_jwks_module
from backchannel.oauth.client_auth import authenticate_client
from backchannel.oauth.remote_jwks import remote_jwks
from backchannel.oauth.services import Services
from tests.conftest import RegisteredClient
from tests.support import jose

CHALLENGE = 'Basic realm="backchannel"'


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def token_url(services: Services) -> str:
    return services.settings.token_endpoint


async def authenticate(
    services: Services, form: dict[str, str] | None = None, authorization: str | None = None
) -> Any:
    return await authenticate_client(services, form or {}, authorization, token_url(services))


@dataclasses.dataclass(frozen=True)
class _From:
    """A time claim ``seconds`` from when the test runs."""

    seconds: int


async def refused(
    services: Services,
    error: type[OAuthError],
    form: dict[str, str] | None = None,
    authorization: str | None = None,
) -> OAuthError:
    with pytest.raises(error) as caught:
        await authenticate(services, form, authorization)
    assert type(caught.value) is error
    return caught.value


# client_secret_basic


async def test_basic_auth_with_right_secret_returns_the_client(
    services: Services, rp: RegisteredClient
) -> None:
    client = await authenticate(services, authorization=rp.basic_auth()["Authorization"])
    assert client.client_id == rp.client_id


async def test_basic_auth_with_wrong_secret_is_invalid_client_with_challenge(
    services: Services, rp: RegisteredClient
) -> None:
    exc = await refused(services, InvalidClient, authorization=basic(rp.client_id, "wrong"))
    assert exc.status == 401
    assert exc.headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.parametrize(
    "header",
    ["Basic !!!not-base64!!!", "Basic", "Basic " + base64.b64encode(b"no-colon").decode()],
)
async def test_malformed_basic_header_is_invalid_client_with_challenge(
    services: Services, header: str
) -> None:
    exc = await refused(services, InvalidClient, authorization=header)
    assert exc.headers["WWW-Authenticate"] == CHALLENGE


async def test_basic_credentials_are_form_urlencoded_inside_base64(
    services: Services, make_client: Any
) -> None:
    registered = await make_client(client_id="acme:coffee shop/é")
    header = basic(registered.client_id, registered.secret)
    client = await authenticate(services, authorization=header)
    assert client.client_id == "acme:coffee shop/é"


async def test_basic_auth_scheme_is_case_insensitive(
    services: Services, rp: RegisteredClient
) -> None:
    header = rp.basic_auth()["Authorization"].replace("Basic", "bAsIc")
    assert (await authenticate(services, authorization=header)).client_id == rp.client_id


async def test_basic_auth_for_unknown_client_is_invalid_client_with_challenge(
    services: Services,
) -> None:
    exc = await refused(services, InvalidClient, authorization=basic("nobody", "secret"))
    assert exc.headers["WWW-Authenticate"] == CHALLENGE


async def test_disabled_client_is_invalid_client(
    services: Services, rp: RegisteredClient, db: asyncpg.Connection
) -> None:
    await update_client_disabled(db, rp.client_id, True)
    services.clients.invalidate(rp.client_id)
    await refused(services, InvalidClient, authorization=rp.basic_auth()["Authorization"])


async def test_form_client_id_must_match_basic_client_id(
    services: Services, rp: RegisteredClient
) -> None:
    header = rp.basic_auth()["Authorization"]
    await refused(services, InvalidRequest, {"client_id": "someone-else"}, header)
    client = await authenticate(services, {"client_id": rp.client_id}, header)
    assert client.client_id == rp.client_id


async def test_basic_and_post_together_is_invalid_request(
    services: Services, rp: RegisteredClient
) -> None:
    assert rp.secret is not None
    form = {"client_id": rp.client_id, "client_secret": rp.secret}
    await refused(services, InvalidRequest, form, rp.basic_auth()["Authorization"])


async def test_basic_auth_by_a_post_client_is_invalid_client(
    services: Services, make_client: Any
) -> None:
    registered = await make_client(token_endpoint_auth_method="client_secret_post")
    await refused(services, InvalidClient, authorization=registered.basic_auth()["Authorization"])


async def test_non_basic_authorization_scheme_is_not_client_authentication(
    services: Services,
) -> None:
    exc = await refused(services, InvalidClient, authorization="Bearer abc")
    assert "WWW-Authenticate" not in exc.headers


async def test_cached_client_authenticates_without_a_database_round_trip(
    services: Services, rp: RegisteredClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = rp.basic_auth()["Authorization"]
    await authenticate(services, authorization=header)

    class NoDatabase:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"database used: {name}")

    monkeypatch.setattr(services.clients, "_pool", NoDatabase())
    monkeypatch.setattr(services, "pool", NoDatabase())
    assert (await authenticate(services, authorization=header)).client_id == rp.client_id


# client_secret_post


async def test_post_auth_with_right_secret_returns_the_client(
    services: Services, make_client: Any
) -> None:
    registered = await make_client(token_endpoint_auth_method="client_secret_post")
    form = {"client_id": registered.client_id, "client_secret": registered.secret}
    assert (await authenticate(services, form)).client_id == registered.client_id


async def test_post_auth_with_wrong_secret_is_invalid_client_without_challenge(
    services: Services, make_client: Any
) -> None:
    registered = await make_client(token_endpoint_auth_method="client_secret_post")
    form = {"client_id": registered.client_id, "client_secret": "wrong"}
    exc = await refused(services, InvalidClient, form)
    assert "WWW-Authenticate" not in exc.headers


async def test_post_auth_by_a_basic_client_is_invalid_client(
    services: Services, rp: RegisteredClient
) -> None:
    assert rp.secret is not None
    await refused(services, InvalidClient, {"client_id": rp.client_id, "client_secret": rp.secret})


async def test_client_secret_without_client_id_is_invalid_request(
    services: Services, make_client: Any
) -> None:
    registered = await make_client(token_endpoint_auth_method="client_secret_post")
    await refused(services, InvalidRequest, {"client_secret": registered.secret})


async def test_no_client_authentication_is_invalid_client(
    services: Services, rp: RegisteredClient
) -> None:
    await refused(services, InvalidClient, {})
    await refused(services, InvalidClient, {"client_id": rp.client_id})


# private_key_jwt


@pytest.fixture
def client_key() -> Any:
    return jose.ec_key()


@pytest.fixture
async def jwt_client(make_client: Any, client_key: Any) -> RegisteredClient:
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=jose.public_jwks(client_key)
    )
    return registered


async def assertion_auth(services: Services, assertion: str, **extra: str) -> Any:
    return await authenticate(services, jose.assertion_form(assertion, **extra))


async def test_private_key_jwt_with_valid_assertion_returns_the_client(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    client = await assertion_auth(services, assertion, client_id=jwt_client.client_id)
    assert client.client_id == jwt_client.client_id


@pytest.mark.parametrize("aud", ["issuer", "endpoint", "token_endpoint", "list"])
async def test_private_key_jwt_accepts_issuer_or_endpoint_as_audience(
    services: Services, jwt_client: RegisteredClient, client_key: Any, aud: str
) -> None:
    settings = services.settings
    backchannel = settings.backchannel_endpoint
    audiences: dict[str, str | list[str]] = {
        "issuer": settings.issuer,
        "endpoint": backchannel,
        "token_endpoint": settings.token_endpoint,
        "list": ["https://elsewhere.example", settings.issuer],
    }
    assertion = jose.client_assertion(jwt_client.client_id, client_key, audiences[aud])
    client = await authenticate_client(services, jose.assertion_form(assertion), None, backchannel)
    assert client.client_id == jwt_client.client_id


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [(jose.rsa_key, "PS256"), (jose.rsa_key, "RS256"), (jose.ed25519_key, "EdDSA")],
)
async def test_private_key_jwt_accepts_each_allowed_algorithm(
    services: Services, make_client: Any, make_key: Any, alg: str
) -> None:
    key = make_key()
    registered = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=jose.public_jwks(key)
    )
    assertion = jose.client_assertion(registered.client_id, key, services.settings.issuer, alg)
    assert (await assertion_auth(services, assertion)).client_id == registered.client_id


async def test_assertion_without_kid_is_tried_against_each_fitting_key(
    services: Services, make_client: Any
) -> None:
    keys: list[Any] = [jose.ec_key(), jose.ec_key(), jose.rsa_key()]
    registered = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=jose.public_jwks(*keys)
    )
    claims = jose.client_assertion_claims(registered.client_id, services.settings.issuer)
    assertion = jose.sign(claims, keys[1], kid=False)
    assert (await assertion_auth(services, assertion)).client_id == registered.client_id


async def test_replayed_client_assertion_is_invalid_client(
    services: Services, jwt_client: RegisteredClient, client_key: Any, db: asyncpg.Connection
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    await assertion_auth(services, assertion)
    exc = await refused(services, InvalidClient, jose.assertion_form(assertion))
    assert "already used" in (exc.description or "")
    row = await db.fetchrow("SELECT issuer, purpose, expires_at FROM used_jtis")
    assert row is not None
    assert row["issuer"] == jwt_client.client_id
    assert row["purpose"] == "client_assertion"


async def test_concurrent_replays_of_one_assertion_have_exactly_one_winner(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    results = await asyncio.gather(
        *(assertion_auth(services, assertion) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, InvalidClient) for r in results if isinstance(r, BaseException))


async def test_jti_replay_cache_forgets_expired_entries(db: asyncpg.Connection) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)

    async def remember(jti: str, purpose: str = "client_assertion") -> bool:
        return await insert_jti(db, issuer="client-1", purpose=purpose, jti=jti, expires_at=later)

    assert await remember("a")
    assert not await remember("a")
    assert await remember("a", purpose="request_object")
    await db.execute("UPDATE used_jtis SET expires_at = now() - interval '1 second'")
    assert await remember("a")  # an expired entry no longer blocks
    assert await remember("b")
    await db.execute(
        "UPDATE used_jtis SET expires_at = now() - interval '1 second' WHERE jti = 'b'"
    )
    assert await delete_expired_jtis(db) == 2
    assert await db.fetchval("SELECT count(*) FROM used_jtis") == 1


@dataclass(frozen=True)
class FromNow:
    """A NumericDate this many seconds from the moment the test runs."""

    seconds: int


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        # Times as offsets from when the test runs: a long suite starts it minutes after
        # collection.
        pytest.param({"aud": "https://other.example/token"}, "aud", id="wrong-aud"),
        pytest.param({"aud": None}, "aud", id="no-aud"),
        pytest.param({"exp": FromNow(-60)}, "expired", id="expired"),
        pytest.param({"exp": None}, "exp claim is required", id="no-exp"),
        pytest.param({"exp": "tomorrow"}, "must be a number", id="exp-not-a-number"),
        pytest.param({"exp": FromNow(7200)}, "ahead", id="exp-two-hours-ahead"),
        pytest.param({"nbf": FromNow(600)}, "nbf", id="nbf-in-future"),
        pytest.param({"iat": FromNow(600)}, "iat", id="iat-in-future"),
        pytest.param({"jti": None}, "jti", id="no-jti"),
        pytest.param({"iss": "someone-else"}, "iss and sub", id="iss-not-client"),
    ],
)
async def test_client_assertion_with_bad_claims_is_invalid_client(
    services: Services,
    jwt_client: RegisteredClient,
    client_key: Any,
    claims: dict[str, Any],
    reason: str,
) -> None:
    now = int(time.time())  # when the test runs, not when it was collected
    values = {
        **jose.client_assertion_claims(jwt_client.client_id, services.settings.issuer),
        **{k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()},
    }
    assertion = jose.sign({k: v for k, v in values.items() if v is not None}, client_key)
    exc = await refused(services, InvalidClient, jose.assertion_form(assertion))
    assert reason in (exc.description or "")


async def test_client_assertion_within_clock_skew_is_accepted(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    skew = services.settings.clock_skew
    assertion = jose.client_assertion(
        jwt_client.client_id,
        client_key,
        services.settings.issuer,
        exp=int(time.time()) - skew // 2,
        iat=int(time.time()) + skew // 2,
    )
    assert (await assertion_auth(services, assertion)).client_id == jwt_client.client_id


async def test_client_assertion_signed_with_another_clients_key_is_invalid_client(
    services: Services, jwt_client: RegisteredClient, make_client: Any
) -> None:
    other_key = jose.ec_key()
    await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=jose.public_jwks(other_key)
    )
    assertion = jose.client_assertion(jwt_client.client_id, other_key, services.settings.issuer)
    await refused(services, InvalidClient, jose.assertion_form(assertion))


async def test_client_assertion_with_right_kid_but_wrong_signature_is_invalid_client(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    impostor = jose.ec_key()
    claims = jose.client_assertion_claims(jwt_client.client_id, services.settings.issuer)
    assertion = jose.sign(claims, impostor, header={"kid": client_key.kid})
    await refused(services, InvalidClient, jose.assertion_form(assertion))


async def test_unsigned_client_assertion_is_invalid_client(
    services: Services, jwt_client: RegisteredClient
) -> None:
    claims = jose.client_assertion_claims(jwt_client.client_id, services.settings.issuer)
    await refused(services, InvalidClient, jose.assertion_form(jose.unsigned(claims)))


async def test_hs256_client_assertion_is_invalid_client(
    services: Services, jwt_client: RegisteredClient
) -> None:
    claims = jose.client_assertion_claims(jwt_client.client_id, services.settings.issuer)
    assertion = jose.sign_hs256(claims, "a-shared-secret-that-is-long-enough-32")
    await refused(services, InvalidClient, jose.assertion_form(assertion))


async def test_garbage_client_assertion_is_invalid_client(
    services: Services, jwt_client: RegisteredClient
) -> None:
    for junk in ["not-a-jwt", "a.b.c", "a.b.c.d.e"]:
        await refused(services, InvalidClient, jose.assertion_form(junk))


async def test_unsupported_client_assertion_type_is_invalid_client(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    form = {"client_assertion_type": "urn:example:saml", "client_assertion": assertion}
    await refused(services, InvalidClient, form)


async def test_client_assertion_without_its_type_is_invalid_request(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    await refused(services, InvalidRequest, {"client_assertion": assertion})


async def test_form_client_id_must_match_assertion_subject(
    services: Services, jwt_client: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    await refused(services, InvalidRequest, jose.assertion_form(assertion, client_id="other"))


async def test_assertion_together_with_basic_is_invalid_request(
    services: Services, jwt_client: RegisteredClient, client_key: Any, rp: RegisteredClient
) -> None:
    assertion = jose.client_assertion(jwt_client.client_id, client_key, services.settings.issuer)
    await refused(
        services, InvalidRequest, jose.assertion_form(assertion), rp.basic_auth()["Authorization"]
    )


async def test_assertion_by_a_secret_client_is_invalid_client(
    services: Services, rp: RegisteredClient, client_key: Any
) -> None:
    assertion = jose.client_assertion(rp.client_id, client_key, services.settings.issuer)
    await refused(services, InvalidClient, jose.assertion_form(assertion))


# private_key_jwt with jwks_uri


@pytest.fixture
async def jwks_server() -> AsyncIterator[jose.JwksServer]:
    async with jose.serve_jwks() as server:
        yield server


def insecure(services: Services) -> Services:
    """The same services with ``allow_insecure_urls`` on (for a plain-http local server)."""
    return dataclasses.replace(
        services, settings=services.settings.replace(allow_insecure_urls=True)
    )


async def uri_client(make_client: Any, uri: str) -> RegisteredClient:
    registered: RegisteredClient = await make_client(
        token_endpoint_auth_method="private_key_jwt", jwks=None, jwks_uri=uri
    )
    return registered


async def test_private_key_jwt_verifies_with_keys_fetched_from_jwks_uri_once(
    services: Services, make_client: Any, jwks_server: jose.JwksServer, client_key: Any
) -> None:
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, jwks_server.url)
    local = insecure(services)
    for _ in range(3):
        assertion = jose.client_assertion(registered.client_id, client_key, local.settings.issuer)
        assert (await assertion_auth(local, assertion)).client_id == registered.client_id
    assert jwks_server.hits == 1


async def test_jwks_uri_is_refetched_once_when_the_kid_is_unknown(
    services: Services, make_client: Any, jwks_server: jose.JwksServer, client_key: Any
) -> None:
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, jwks_server.url)
    local = insecure(services)
    first = jose.client_assertion(registered.client_id, client_key, local.settings.issuer)
    await assertion_auth(local, first)
    remote_jwks(local)._refresh_interval = 0  # the test cannot wait for the refresh limit
    rotated = jose.ec_key()
    jwks_server.jwks = jose.public_jwks(rotated)
    second = jose.client_assertion(registered.client_id, rotated, local.settings.issuer)
    assert (await assertion_auth(local, second)).client_id == registered.client_id
    assert jwks_server.hits == 2
    stranger = jose.client_assertion(registered.client_id, jose.ec_key(), local.settings.issuer)
    await refused(local, InvalidClient, jose.assertion_form(stranger))
    assert jwks_server.hits == 3


async def test_unknown_kid_does_not_refetch_within_the_refresh_interval(
    services: Services, make_client: Any, jwks_server: jose.JwksServer, client_key: Any
) -> None:
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, jwks_server.url)
    local = insecure(services)
    for _ in range(3):
        stranger = jose.client_assertion(registered.client_id, jose.ec_key(), local.settings.issuer)
        await refused(local, InvalidClient, jose.assertion_form(stranger))
    assert jwks_server.hits == 1


async def test_jwks_uri_on_loopback_is_refused_by_the_url_guard(
    services: Services, make_client: Any, jwks_server: jose.JwksServer, client_key: Any
) -> None:
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, jwks_server.url)
    assertion = jose.client_assertion(registered.client_id, client_key, services.settings.issuer)
    exc = await refused(services, InvalidClient, jose.assertion_form(assertion))
    assert "jwks_uri" in (exc.description or "")
    assert jwks_server.hits == 0


@pytest.mark.parametrize("path", ["/redirect", "/huge"])
async def test_jwks_uri_redirect_or_oversized_answer_is_refused(
    services: Services, make_client: Any, jwks_server: jose.JwksServer, client_key: Any, path: str
) -> None:
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, jwks_server.base_url + path)
    local = insecure(services)
    assertion = jose.client_assertion(registered.client_id, client_key, local.settings.issuer)
    await refused(local, InvalidClient, jose.assertion_form(assertion))
    assert jwks_server.hits == 0


async def test_jwks_uri_fetch_connects_to_the_checked_address_under_the_original_name(
    services: Services,
    make_client: Any,
    jwks_server: jose.JwksServer,
    client_key: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = jwks_server.base_url.rsplit(":", 1)[1]
    uri = f"http://keys.rp.example:{port}/jwks"
    checked: list[str] = []

    async def resolve(host: str, *, allow_insecure: bool) -> list[str]:
        checked.append(host)
        return ["127.0.0.1"]  # stands in for a public address

    monkeypatch.setattr(remote_jwks_module, "check_outbound_url", lambda url, **kw: url)
    monkeypatch.setattr(remote_jwks_module, "resolve_public_addresses", resolve)
    jwks_server.jwks = jose.public_jwks(client_key)
    registered = await uri_client(make_client, uri)
    assertion = jose.client_assertion(registered.client_id, client_key, services.settings.issuer)
    assert (await assertion_auth(services, assertion)).client_id == registered.client_id
    assert checked == ["keys.rp.example"]
    assert jwks_server.last_host == f"keys.rp.example:{port}"
