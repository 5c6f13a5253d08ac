"""Sending one Web Push message: encryption, VAPID, headers, the endpoint guard and
how each answer of the push service is classified."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from py_vapid import Vapid

from backchannel.authenticator.messages import push_topic
from backchannel.delivery.vapid import application_server_key, load_vapid, new_vapid_key
from backchannel.delivery.webpush import (
    MAX_BODY_BYTES,
    VAPID_TOKEN_LIFETIME,
    VAPID_TOKEN_REUSE_MARGIN,
    PushResult,
    PushSubscription,
    VapidTokens,
    _connection_attempts,
    check_push_endpoint,
    classify_response,
    encode_payload,
    send_web_push,
)
from backchannel.settings import Settings, SettingsError
from backchannel.url_guard import UnsafeURL
from tests.support.push_service import LocalPushService, TestSubscription, run_push_service

SETTINGS = Settings(push_allow_loopback=True, allow_insecure_urls=True, push_timeout=1.0)
TOPIC = push_topic("ab" * 32)


@pytest.fixture
async def push_service() -> AsyncIterator[LocalPushService]:
    async with run_push_service() as service:
        yield service


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # Like the app's session: a short default timeout the sender must override.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        yield session


@pytest.fixture(scope="module")
def vapid() -> Vapid:
    return load_vapid(new_vapid_key()[1])


def subscription_of(sub: TestSubscription) -> PushSubscription:
    return PushSubscription(sub.endpoint, sub.p256dh, sub.auth)


async def send(
    http: aiohttp.ClientSession,
    sub: TestSubscription,
    vapid: Vapid,
    payload: dict[str, Any] | None = None,
    settings: Settings = SETTINGS,
) -> PushResult:
    return await send_web_push(
        http,
        settings,
        subscription_of(sub),
        payload if payload is not None else {"type": "dismiss", "ref": "ab" * 32},
        vapid=vapid,
        topic=TOPIC,
        ttl=120,
    )


async def test_a_message_arrives_encrypted_signed_and_with_its_headers(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe(server_key=application_server_key(vapid))
    payload = {"type": "prompt", "binding_message": "Pay €80 at 咖啡 ☕️", "scope": ["openid"]}

    result = await send(http, sub, vapid, payload)

    assert result == PushResult("sent", 201)
    assert push_service.errors == []
    [message] = push_service.received_by(sub)
    assert message.payload == payload
    assert (message.ttl, message.urgency, message.topic) == (120, "high", TOPIC)
    assert message.vapid_key == application_server_key(vapid)
    assert message.vapid_claims["aud"] == push_service.origin
    assert message.vapid_claims["sub"] == SETTINGS.vapid_subject
    assert 0 < message.vapid_claims["exp"] - time.time() <= VAPID_TOKEN_LIFETIME


async def test_each_message_gets_its_own_vapid_claims(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    async with run_push_service() as other_service:
        first, second = push_service.subscribe(), other_service.subscribe()
        assert (await send(http, first, vapid)).outcome == "sent"
        assert (await send(http, second, vapid)).outcome == "sent"
        # aud follows each endpoint; a reused claims dict would keep the first one.
        assert push_service.errors == other_service.errors == []
        assert other_service.received[0].vapid_claims["aud"] == other_service.origin


async def test_a_dead_subscription_is_reported_gone(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    result = await send(http, push_service.subscribe("gone"), vapid)
    assert (result.outcome, result.status) == ("gone", 410)


async def test_a_busy_push_service_means_retry_after_its_delay(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe("busy", retry_after="7")
    result = await send(http, sub, vapid)
    assert (result.outcome, result.status, result.retry_after) == ("retry", 503, 7.0)
    assert (await send(http, sub, vapid)).outcome == "sent"


async def test_no_answer_within_the_push_timeout_means_retry(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe("slow", slow_seconds=5)
    result = await send(http, sub, vapid, settings=SETTINGS.replace(push_timeout=0.3))
    assert result.outcome == "retry"
    assert result.status is None
    assert result.error == "no answer within 0.3 s"


async def test_an_unreachable_push_service_means_retry(
    http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    async with run_push_service() as service:
        sub = service.subscribe()
    result = await send(http, sub, vapid)  # the service is gone: connection refused
    assert result.outcome == "retry"
    assert result.error is not None and result.error.startswith("ClientConnectorError: ")


async def test_a_redirect_is_not_followed(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    target = push_service.subscribe()
    result = await send(http, push_service.subscribe("redirect"), vapid)
    assert (result.outcome, result.status) == ("failed", 307)
    assert push_service.attempts_at(target) == []


async def test_an_endpoint_off_the_allow_list_is_never_contacted(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe()
    result = await send(http, sub, vapid, settings=SETTINGS.replace(push_allow_loopback=False))
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("endpoint refused")
    assert push_service.attempts == []


async def test_a_message_too_large_for_web_push_is_not_sent(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    result = await send(http, push_service.subscribe(), vapid, {"binding_message": "字" * 2000})
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("message too large (")
    assert push_service.attempts == []


async def test_a_subscription_with_a_broken_key_fails_without_sending(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe()
    broken = PushSubscription(sub.endpoint, "AAAA", sub.auth)
    result = await send_web_push(
        http, SETTINGS, broken, {"type": "dismiss"}, vapid=vapid, topic=TOPIC, ttl=60
    )
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("cannot encrypt or sign: ")
    assert push_service.attempts == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://api.push.apple.com/3/device/abc",
        "https://web.push.apple.com/QGx",
        "https://fcm.googleapis.com/fcm/send/abc:def",
        "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
        "https://wns2-par02p.notify.windows.com/w/?token=BQYAAAB",
    ],
)
def test_known_push_services_are_allowed(endpoint: str) -> None:
    assert check_push_endpoint(endpoint, Settings()) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://fcm.googleapis.com/fcm/send/abc",  # not https
        "https://push.apple.com.evil.example/x",  # look-alike
        "https://evil.example/push/x",
        "https://user@fcm.googleapis.com/fcm/send/abc",
        "https://fcm.googleapis.com:0/x",
        "https://127.0.0.1/push/x",
        "http://localhost:8080/push/x",
        "https://169.254.169.254/latest/meta-data",
        "not a url",
    ],
)
def test_other_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(UnsafeURL):
        check_push_endpoint(endpoint, Settings())


def test_loopback_endpoints_need_the_dev_setting() -> None:
    loopback = Settings(push_allow_loopback=True)
    for endpoint in ("http://127.0.0.1:9/push/x", "http://localhost:9/x", "http://[::1]:9/x"):
        assert check_push_endpoint(endpoint, loopback) == endpoint
    with pytest.raises(UnsafeURL):
        check_push_endpoint("http://10.0.0.1/push/x", loopback)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (201, "sent"),
        (202, "sent"),
        (203, "failed"),
        (408, "retry"),
        (425, "retry"),
        (409, "failed"),
        (426, "failed"),
        (404, "gone"),
        (410, "gone"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (400, "failed"),
        (403, "failed"),
        (413, "failed"),
        (301, "failed"),
    ],
)
def test_push_service_answers_are_classified(status: int, outcome: str) -> None:
    assert classify_response(status, None).outcome == outcome


def test_push_settings_come_from_the_environment_and_are_validated() -> None:
    settings = Settings.from_env(
        {
            "BACKCHANNEL_PUSH_ALLOWED_HOSTS": " Push.Example.com, *.push.example.net ,",
            "BACKCHANNEL_VAPID_SUBJECT": "https://ops.example.com",
            "BACKCHANNEL_PUSH_TIMEOUT": "2.5",
        }
    )
    assert settings.push_allowed_hosts == ("push.example.com", "*.push.example.net")
    assert (settings.vapid_subject, settings.push_timeout) == ("https://ops.example.com", 2.5)
    assert check_push_endpoint("https://a.push.example.net/x", settings)
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(
            {
                "BACKCHANNEL_PUSH_ALLOWED_HOSTS": "https://push.example.com,*",
                "BACKCHANNEL_VAPID_SUBJECT": "https://example.com/contact",
                "BACKCHANNEL_PUSH_TIMEOUT": "0",
            }
        )
    problems = "\n".join(excinfo.value.problems)
    for name in ("PUSH_ALLOWED_HOSTS: 'https://push", "PUSH_ALLOWED_HOSTS: '*'"):
        assert name in problems
    assert "VAPID_SUBJECT" in problems and "PUSH_TIMEOUT" in problems


def test_push_service_answers_carry_their_status_as_the_error() -> None:
    assert classify_response(410, None) == PushResult("gone", 410, error="HTTP 410")
    assert classify_response(503, "7") == PushResult("retry", 503, 7.0, "HTTP 503")
    assert classify_response(400, None) == PushResult("failed", 400, error="HTTP 400")


def test_the_plaintext_is_compact_utf8_json() -> None:
    assert encode_payload({"m": "Pay €80", "s": [1, 2]}) == '{"m":"Pay €80","s":[1,2]}'.encode()


async def test_a_message_of_exactly_the_largest_size_is_sent(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    # aes128gcm adds 86 header bytes, a 1-byte delimiter and a 16-byte tag (RFC 8188).
    padding = MAX_BODY_BYTES - 103 - len(encode_payload({"p": ""}))
    sub = push_service.subscribe()
    assert (await send(http, sub, vapid, {"p": "x" * padding})).outcome == "sent"
    too_large = await send(http, sub, vapid, {"p": "x" * (padding + 1)})
    assert too_large.error == f"message too large ({MAX_BODY_BYTES + 1} bytes encrypted)"


async def test_a_negative_ttl_is_sent_as_zero(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    sub = push_service.subscribe()
    result = await send_web_push(
        http, SETTINGS, subscription_of(sub), {"type": "dismiss"}, vapid=vapid, topic=TOPIC, ttl=-5
    )
    assert result.outcome == "sent"
    assert push_service.received_by(sub)[0].ttl == 0


def test_loopback_means_exactly_the_loopback_names() -> None:
    loopback = Settings(push_allow_loopback=True)
    assert check_push_endpoint("http://localhost.:9/x", loopback) == "http://localhost.:9/x"
    with pytest.raises(UnsafeURL):
        check_push_endpoint("http://localhostX:9/x", loopback)
    with pytest.raises(UnsafeURL) as malformed:
        check_push_endpoint("http://[::1/x", loopback)
    assert str(malformed.value).startswith("malformed URL: ")


async def test_only_loopback_endpoints_are_contacted_without_pinning() -> None:
    loopback = Settings(push_allow_loopback=True)
    assert await _connection_attempts("http://localhost.:9/x", loopback) == [
        {"url": "http://localhost.:9/x"}
    ]
    # A public host is pinned to the address just checked, even in development.
    [pinned] = await _connection_attempts("https://93.184.216.34/push/x", loopback)
    assert pinned != {"url": "https://93.184.216.34/push/x"}
    # Without the development setting loopback is no exception.
    with pytest.raises(UnsafeURL):
        await _connection_attempts("http://localhost:9/x", Settings())


# --- VAPID tokens reused per push service --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def vapid_claims(headers: dict[str, str]) -> dict[str, Any]:
    token = headers["Authorization"].split("t=", 1)[1].split(",", 1)[0]
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_reused_vapid_tokens_are_accepted_by_the_push_service(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    tokens = VapidTokens()
    sub, other = push_service.subscribe(), push_service.subscribe()
    for target in (sub, other, sub):
        result = await send_web_push(
            http, SETTINGS, subscription_of(target), {"type": "dismiss"},
            vapid=vapid, topic=TOPIC, ttl=60, tokens=tokens,
        )  # fmt: skip
        assert result.outcome == "sent"
    assert push_service.errors == []
    assert len(push_service.received) == 3


async def test_a_vapid_token_is_signed_anew_before_it_expires() -> None:
    clock, subject = Clock(), SETTINGS.vapid_subject
    tokens = VapidTokens(clock)
    vapid = load_vapid(new_vapid_key()[1])
    first = tokens.headers(vapid, "https://push.example/a", subject)
    assert tokens.headers(vapid, "https://push.example/b", subject) is first  # same origin
    clock.now += VAPID_TOKEN_LIFETIME - VAPID_TOKEN_REUSE_MARGIN - 1
    assert tokens.headers(vapid, "https://push.example/c", subject) is first
    clock.now += 2
    renewed = tokens.headers(vapid, "https://push.example/a", subject)
    assert renewed != first
    assert vapid_claims(renewed)["exp"] > vapid_claims(first)["exp"]
    assert vapid_claims(renewed)["exp"] - clock.now > VAPID_TOKEN_REUSE_MARGIN


async def test_a_vapid_token_is_kept_per_key_origin_and_subject() -> None:
    tokens, subject = VapidTokens(), SETTINGS.vapid_subject
    vapid, other_key = load_vapid(new_vapid_key()[1]), load_vapid(new_vapid_key()[1])
    first = tokens.headers(vapid, "https://push.example/a", subject)
    elsewhere = tokens.headers(vapid, "https://other.example/a", subject)
    assert vapid_claims(elsewhere)["aud"] == "https://other.example"
    by_other_key = tokens.headers(other_key, "https://push.example/a", subject)
    assert by_other_key["Authorization"].endswith(application_server_key(other_key))
    other_subject = tokens.headers(vapid, "https://push.example/a", "mailto:ops@example.org")
    assert vapid_claims(other_subject)["sub"] == "mailto:ops@example.org"
    assert first is tokens.headers(vapid, "https://push.example/a", subject)


async def test_a_refused_vapid_token_is_not_used_again(
    push_service: LocalPushService, http: aiohttp.ClientSession, vapid: Vapid
) -> None:
    tokens = VapidTokens()
    other_key = load_vapid(new_vapid_key()[1])
    sub = push_service.subscribe(server_key=application_server_key(other_key))
    first = tokens.headers(vapid, sub.endpoint, SETTINGS.vapid_subject)
    result = await send_web_push(
        http, SETTINGS, subscription_of(sub), {"type": "dismiss"},
        vapid=vapid, topic=TOPIC, ttl=60, tokens=tokens,
    )  # fmt: skip
    assert (result.outcome, result.status) == ("failed", 403)
    assert tokens.headers(vapid, sub.endpoint, SETTINGS.vapid_subject) != first
