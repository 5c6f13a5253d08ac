"""The SSRF guard for outbound URLs (no database)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from backchannel.url_guard import (
    MAX_URL_LENGTH,
    PublicOnlyResolver,
    Unresolvable,
    UnsafeURL,
    check_outbound_url,
    is_public_address,
    pinned_request_options,
    resolve_public_addresses,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://rp.example.com/cb",
        "https://rp.example.com:8443/cb?x=1",
        "https://93.184.216.34/cb",
        "https://[2606:4700::1]/cb",
        "HTTPS://RP.EXAMPLE.COM/cb",
    ],
)
def test_public_https_urls_pass(url: str) -> None:
    assert check_outbound_url(url, allow_insecure=False) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://rp.example.com/cb", "https"),
        ("ftp://rp.example.com/cb", "https"),
        ("file:///etc/passwd", "https"),
        ("https://user:pw@rp.example.com/cb", "user information"),
        ("https://user@rp.example.com/cb", "user information"),
        ("https://rp.example.com/cb#frag", "fragment"),
        ("https://rp.example.com/cb#", "fragment"),  # an empty fragment is one too
        ("https:///cb", "no host"),
        ("https://rp.example.com:0/cb", "port 0"),
        ("https://rp.example.com:99999/cb", "malformed"),
        ("https://rp.example.com/c b", "spaces"),
        ("https://rp.example.com/\x00", "control"),
        ("https://rp.exämple.com/cb", "non-ASCII"),
        ("https://" + "a" * 2100 + ".com/", "longer"),
        ("https://127.0.0.1/cb", "not public"),
        ("https://10.1.2.3/cb", "not public"),
        ("https://172.16.0.1/cb", "not public"),
        ("https://192.168.1.1/cb", "not public"),
        ("https://169.254.169.254/latest/meta-data", "not public"),
        ("https://100.64.0.1/cb", "not public"),
        ("https://0.0.0.0/cb", "not public"),
        ("https://224.0.0.1/cb", "not public"),
        ("https://[::1]/cb", "not public"),
        ("https://[fe80::1]/cb", "not public"),
        ("https://[fc00::1]/cb", "not public"),
        ("https://[::ffff:127.0.0.1]/cb", "not public"),
        ("https://[64:ff9b::a00:1]/cb", "not public"),
        ("https://[2002:7f00:1::]/cb", "not public"),
        ("https://127.1/cb", "ambiguous"),
        ("https://2130706433/cb", "ambiguous"),
        ("https://0x7f000001/cb", "ambiguous"),
        ("https://localhost/cb", "localhost"),
        ("https://api.localhost./cb", "localhost"),
    ],
)
def test_unsafe_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL, match=reason):
        check_outbound_url(url, allow_insecure=False)


def test_unsafe_url_is_a_value_error() -> None:
    assert issubclass(UnsafeURL, ValueError)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/cb", "https://localhost/cb", "http://[::1]/cb"]
)
def test_allow_insecure_permits_http_and_private_targets(url: str) -> None:
    assert check_outbound_url(url, allow_insecure=True) == url


@pytest.mark.parametrize(
    "url", ["https://user@127.0.0.1/cb", "https://127.0.0.1/cb#x", "ftp://127.0.0.1/"]
)
def test_allow_insecure_still_refuses_userinfo_fragments_and_other_schemes(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_outbound_url(url, allow_insecure=True)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.push.apple.com/3/device", True),
        ("https://a.b.push.apple.com/x", True),
        ("https://push.apple.com/x", False),
        ("https://evilpush.apple.com/x", False),
        ("https://api.push.apple.com.evil.example/x", False),
        ("https://fcm.googleapis.com/fcm/send/abc", True),
        ("https://FCM.googleapis.com/fcm/send/abc", True),
        ("https://fcm.googleapis.com./fcm/send/abc", True),
        ("https://xfcm.googleapis.com/x", False),
    ],
)
def test_allowed_hosts_patterns(url: str, allowed: bool) -> None:
    patterns = ["*.push.apple.com", "fcm.googleapis.com"]
    if allowed:
        check_outbound_url(url, allow_insecure=False, allowed_hosts=patterns)
    else:
        with pytest.raises(UnsafeURL, match="not allowed"):
            check_outbound_url(url, allow_insecure=False, allowed_hosts=patterns)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo to 10.0.0.1
        ("ff02::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_resolving_a_loopback_name_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="not public"):
        await resolve_public_addresses("localhost", allow_insecure=False)


async def test_resolving_a_loopback_name_is_allowed_when_insecure() -> None:
    addresses = await resolve_public_addresses("localhost", allow_insecure=True)
    assert addresses
    assert all(not is_public_address(ipaddress.ip_address(a)) for a in addresses)


async def test_resolving_a_public_literal_returns_it() -> None:
    assert await resolve_public_addresses("93.184.216.34", allow_insecure=False) == [
        "93.184.216.34"
    ]
    assert await resolve_public_addresses("[2606:4700::1]", allow_insecure=False) == [
        "2606:4700::1"
    ]


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "127.0.0.1", "[::1]", "169.254.169.254", "[::ffff:10.0.0.1]"]
)
async def test_a_literal_address_that_is_not_public_is_refused(host: str) -> None:
    with pytest.raises(UnsafeURL, match="not public"):
        await resolve_public_addresses(host, allow_insecure=False)


async def test_a_literal_loopback_address_is_allowed_when_insecure() -> None:
    assert await resolve_public_addresses("127.0.0.1", allow_insecure=True) == ["127.0.0.1"]
    assert await resolve_public_addresses("[::1]", allow_insecure=True) == ["::1"]


async def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="cannot resolve"):
        await resolve_public_addresses("does-not-exist.invalid", allow_insecure=False)


class FixedResolver(AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_public_only_resolver_refuses_names_that_point_inside() -> None:
    resolver = PublicOnlyResolver(allow_insecure=False, inner=FixedResolver("10.0.0.7"))
    with pytest.raises(OSError, match="non-public"):
        await resolver.resolve("rebinding.example", 443)


async def test_public_only_resolver_passes_public_answers() -> None:
    resolver = PublicOnlyResolver(allow_insecure=False, inner=FixedResolver("93.184.216.34"))
    results = await resolver.resolve("rp.example", 443)
    assert results[0]["host"] == "93.184.216.34"
    insecure = PublicOnlyResolver(allow_insecure=True, inner=FixedResolver("10.0.0.7"))
    assert (await insecure.resolve("rp.example", 443))[0]["host"] == "10.0.0.7"


def test_pinned_request_options_keep_the_host_name_for_http_and_tls() -> None:
    options: dict[str, Any] = pinned_request_options(
        "https://rp.example.com:8443/cb?x=1", "2606:4700::1"
    )
    assert str(options["url"]) == "https://[2606:4700::1]:8443/cb?x=1"
    assert options["headers"] == {"Host": "rp.example.com:8443"}
    assert options["server_hostname"] == "rp.example.com"


def test_a_nat64_address_of_a_public_host_is_public() -> None:
    # 64:ff9b::808:808 is how a NAT64 gateway reaches 8.8.8.8: judged by that address.
    assert is_public_address(ipaddress.ip_address("64:ff9b::808:808")) is True


def test_a_url_of_exactly_the_maximum_length_passes() -> None:
    url = "https://rp.example.com/"
    url += "a" * (MAX_URL_LENGTH - len(url))
    assert check_outbound_url(url, allow_insecure=False) == url
    with pytest.raises(UnsafeURL, match="longer"):
        check_outbound_url(url + "a", allow_insecure=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://rp.example.com/cb", "URL must use https"),
        ("https://user@rp.example.com/cb", "URL must not contain user information"),
        ("https://rp.example.com/c b", "URL contains spaces, control or non-ASCII characters"),
        ("https://rp.example.com/cb#frag", "URL must not contain a fragment"),
        ("https://10.1.2.3/cb", "address 10.1.2.3 is not public"),
        ("https:///cb", "URL has no host"),
        ("https://rp.example.com:0/cb", "URL has port 0"),
        ("https://localhost/cb", "localhost is not allowed"),
        ("https://rp.example.com/cb#", "URL must not contain a fragment"),
    ],
)
def test_a_refusal_says_exactly_why(url: str, message: str) -> None:
    with pytest.raises(UnsafeURL) as refused:
        check_outbound_url(url, allow_insecure=False)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fcm.googleapis.com/x", True),  # the pattern's trailing dot is ignored
        ("https://a.push.apple.com/x", True),
        ("https://.push.apple.com/x", False),  # no name below the wildcard's domain
    ],
)
def test_allowed_host_patterns_are_normalised(url: str, allowed: bool) -> None:
    patterns = ["*.push.apple.com.", "FCM.googleapis.com."]
    if allowed:
        check_outbound_url(url, allow_insecure=False, allowed_hosts=patterns)
    else:
        with pytest.raises(UnsafeURL, match="not allowed"):
            check_outbound_url(url, allow_insecure=False, allowed_hosts=patterns)


async def test_only_the_brackets_of_an_ipv6_literal_are_stripped_before_resolving() -> None:
    with pytest.raises(Unresolvable, match="cannot resolve Xlocalhost"):
        await resolve_public_addresses("Xlocalhost", allow_insecure=True)


async def test_public_only_resolver_asks_for_the_host_port_and_family_it_was_given() -> None:
    resolver = PublicOnlyResolver(allow_insecure=False, inner=FixedResolver("2606:4700::1"))
    [result] = await resolver.resolve("rp.example", 443, socket.AF_INET6)
    assert (result["hostname"], result["port"], result["family"]) == (
        "rp.example",
        443,
        socket.AF_INET6,
    )
