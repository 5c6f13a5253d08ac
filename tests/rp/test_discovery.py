"""Discovery and the provider's keys, fetched once and kept as long as Cache-Control says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backchannel.db.users import User
from backchannel.rp import ClientSecretBasic, InvalidIdToken, ProtocolError
from tests.conftest import RegisteredClient
from tests.rp.conftest import MakeClient, NewClient, basic
from tests.support.relying_party import FakeClock, RequestLog, ServerTime
from tests.support.served import ServedApp
from tests.support.stand_in_issuer import StandInIssuer, run_stand_in_issuer
from tests.support.tokens import issue_tokens_for

DISCOVERY = "/.well-known/openid-configuration"
AUTH = ClientSecretBasic("rp-1", "secret")


@pytest.fixture
async def stand_in() -> AsyncIterator[StandInIssuer]:
    async with run_stand_in_issuer("rp-1") as issuer:
        yield issuer


async def test_discovery_is_fetched_once_while_its_max_age_lasts_then_again(
    make_rp_client: MakeClient, requests_sent: RequestLog, server_time: ServerTime
) -> None:
    client = await make_rp_client(AUTH, clock=server_time)
    first = await client.discover()
    server_time.advance(299)  # the server sends max-age=300
    assert await client.discover() is first
    assert len(requests_sent.to(DISCOVERY)) == 1

    server_time.advance(2)
    again = await client.discover()
    assert len(requests_sent.to(DISCOVERY)) == 2
    assert again.token_endpoint == first.token_endpoint
    assert first.backchannel_authentication_endpoint.endswith("/bc-authorize")
    assert "poll" in first.backchannel_token_delivery_modes_supported


async def test_discovery_answered_no_store_is_fetched_for_every_use(
    new_client: NewClient, stand_in: StandInIssuer
) -> None:
    stand_in.discovery_cache_control = "no-store"
    client = await new_client(stand_in.url, AUTH)
    await client.discover()
    await client.discover()
    assert stand_in.hits["discovery"] == 2


async def test_discovery_without_cache_control_is_kept_for_the_default_lifetime(
    new_client: NewClient, stand_in: StandInIssuer, fake_clock: FakeClock
) -> None:
    stand_in.discovery_cache_control = None
    client = await new_client(stand_in.url, AUTH, clock=fake_clock, cache_ttl=100)
    await client.discover()
    fake_clock.advance(99)
    await client.discover()
    assert stand_in.hits["discovery"] == 1
    fake_clock.advance(2)
    await client.discover()
    assert stand_in.hits["discovery"] == 2


async def test_concurrent_uses_of_a_stale_document_share_one_fetch(
    new_client: NewClient, stand_in: StandInIssuer
) -> None:
    client = await new_client(stand_in.url, AUTH)
    documents = await asyncio.gather(*(client.discover() for _ in range(5)))
    assert len({id(d) for d in documents}) == 1
    assert stand_in.hits["discovery"] == 1


async def test_discovery_naming_another_issuer_is_refused(
    new_client: NewClient, stand_in: StandInIssuer
) -> None:
    stand_in.issuer_in_document = "https://login.example.com"
    client = await new_client(stand_in.url, AUTH)
    with pytest.raises(ProtocolError, match="issuer"):
        await client.discover()


async def test_key_set_is_fetched_once_while_its_max_age_lasts_then_again(
    new_client: NewClient, stand_in: StandInIssuer, fake_clock: FakeClock
) -> None:
    client = await new_client(stand_in.url, AUTH, clock=fake_clock)
    await client.verify_id_token(stand_in.id_token())
    fake_clock.advance(59)  # the stand-in sends max-age=60, as the real server does
    await client.verify_id_token(stand_in.id_token())
    assert stand_in.hits["jwks"] == 1
    fake_clock.advance(2)
    await client.verify_id_token(stand_in.id_token())
    assert stand_in.hits["jwks"] == 2


async def test_real_servers_key_set_is_kept_for_its_max_age_then_fetched_again(
    make_rp_client: MakeClient,
    requests_sent: RequestLog,
    server_time: ServerTime,
    server: ServedApp,
    rp: RegisteredClient,
    alice: User,
) -> None:
    client = await make_rp_client(basic(rp), clock=server_time)
    id_token = (await issue_tokens_for(server.services, rp, alice))["id_token"]
    await client.verify_id_token(id_token)
    server_time.advance(59)  # the server sends max-age=60
    await client.verify_id_token(id_token)
    assert len(requests_sent.to("/jwks")) == 1
    server_time.advance(2)
    await client.verify_id_token(id_token)
    assert len(requests_sent.to("/jwks")) == 2


async def test_key_set_answered_no_store_is_fetched_for_every_token(
    new_client: NewClient, stand_in: StandInIssuer
) -> None:
    stand_in.jwks_cache_control = "no-store"
    client = await new_client(stand_in.url, AUTH)
    await client.verify_id_token(stand_in.id_token())
    await client.verify_id_token(stand_in.id_token())
    assert stand_in.hits["jwks"] == 2


async def test_token_from_a_rotated_key_makes_the_client_refetch_the_key_set_once(
    new_client: NewClient, stand_in: StandInIssuer, fake_clock: FakeClock
) -> None:
    client = await new_client(stand_in.url, AUTH, clock=fake_clock)
    await client.verify_id_token(stand_in.id_token())
    fake_clock.advance(11)  # past the refetch interval, well within max-age
    stand_in.rotate()
    claims = await client.verify_id_token(stand_in.id_token())
    assert claims["sub"] == "alice"
    assert stand_in.hits["jwks"] == 2
    await client.verify_id_token(stand_in.id_token())
    assert stand_in.hits["jwks"] == 2


async def test_unknown_kids_refetch_the_key_set_at_most_once_per_interval(
    new_client: NewClient, stand_in: StandInIssuer, fake_clock: FakeClock
) -> None:
    client = await new_client(stand_in.url, AUTH, clock=fake_clock, refetch_interval=10)
    await client.verify_id_token(stand_in.id_token())
    fake_clock.advance(11)
    for n in range(5):
        with pytest.raises(InvalidIdToken, match="no ES256 key"):
            await client.verify_id_token(stand_in.id_token(header={"kid": f"unknown-{n}"}))
    assert stand_in.hits["jwks"] == 2  # the first fetch and one refetch, not six

    fake_clock.advance(11)
    with pytest.raises(InvalidIdToken):
        await client.verify_id_token(stand_in.id_token(header={"kid": "unknown-again"}))
    assert stand_in.hits["jwks"] == 3
