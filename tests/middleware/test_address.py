"""Client address behind trusted proxies, and the tenant IP allowlist."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config.types import IPNetwork
from gateway.middleware.address import allowed, client_address
from gateway.middleware.scope import IPAddress, normalise_address

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
PROXY_PEER = ipaddress.ip_address("10.0.0.2")


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def networks(*texts: str) -> list[IPNetwork]:
    return [ipaddress.ip_network(text) for text in texts]


def forwarded_request(*lines: str) -> web.Request:
    headers = CIMultiDict(("X-Forwarded-For", line) for line in lines)
    return make_mocked_request("GET", "/", headers=headers)


def test_client_address_untrusted_peer_ignores_header() -> None:
    request = forwarded_request("198.51.100.7")

    client = client_address(request, ip("203.0.113.9"), PROXIES)

    assert client == ip("203.0.113.9")


def test_client_address_no_proxies_ignores_header() -> None:
    request = forwarded_request("198.51.100.7")

    assert client_address(request, PROXY_PEER, []) == PROXY_PEER


def test_client_address_trusted_peer_without_header() -> None:
    request = make_mocked_request("GET", "/")

    assert client_address(request, PROXY_PEER, PROXIES) == PROXY_PEER


def test_client_address_no_peer() -> None:
    request = forwarded_request("198.51.100.7")

    assert client_address(request, None, PROXIES) is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["198.51.100.7"], "198.51.100.7", id="one-hop"),
        pytest.param(["198.51.100.7, 10.1.1.1"], "198.51.100.7", id="skip-proxy"),
        pytest.param(
            ["203.0.113.1, 198.51.100.7, 10.1.1.1, 10.2.2.2"],
            "198.51.100.7",
            id="skip-two-proxies",
        ),
        pytest.param(
            ["203.0.113.1", "198.51.100.7", "10.1.1.1"],
            "198.51.100.7",
            id="several-lines",
        ),
        pytest.param(
            ["203.0.113.1, 198.51.100.7", "10.1.1.1, 10.2.2.2"],
            "198.51.100.7",
            id="lines-with-lists",
        ),
        pytest.param(["  198.51.100.7  ,10.1.1.1 "], "198.51.100.7", id="spaces"),
        pytest.param(["2001:db8::7, fd00::1"], "2001:db8::7", id="ipv6"),
    ],
)
def test_client_address_rightmost_untrusted(lines: list[str], expected: str) -> None:
    client = client_address(forwarded_request(*lines), PROXY_PEER, PROXIES)

    assert client == ip(expected)


def test_client_address_ignores_prepended_allowed() -> None:
    # The browser wrote 127.0.0.1 itself; the proxy appended the real address.
    request = forwarded_request("127.0.0.1", "198.51.100.7")
    allowlist = networks("127.0.0.1/32")

    client = client_address(request, PROXY_PEER, PROXIES)

    assert client == ip("198.51.100.7")
    assert not allowed(client, allowlist)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["10.1.1.1"], "10.1.1.1", id="one-hop"),
        pytest.param(["10.1.1.1, 10.2.2.2, 10.3.3.3"], "10.1.1.1", id="one-line"),
        pytest.param(["10.1.1.1", "10.2.2.2"], "10.1.1.1", id="two-lines"),
    ],
)
def test_client_address_all_trusted_leftmost(lines: list[str], expected: str) -> None:
    client = client_address(forwarded_request(*lines), PROXY_PEER, PROXIES)

    assert client == ip(expected)


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(["not-an-address"], id="word"),
        pytest.param(["198.51.100.7, garbage, 10.1.1.1"], id="middle"),
        pytest.param(["198.51.100.7:443"], id="with-port"),
        pytest.param(["198.51.100.7, , 10.1.1.1"], id="empty-hop"),
        pytest.param([""], id="empty-line"),
        pytest.param(["198.51.100.7", "unknown"], id="second-line"),
        pytest.param(["198.51.100.007"], id="leading-zeros"),
        pytest.param(["[2001:db8::7]"], id="bracketed-ipv6"),
        pytest.param(["198.51.100.0/24"], id="network"),
        pytest.param(["198.51.100.7%eth0"], id="ipv4-zone"),
        pytest.param(["fe80::1%eth0"], id="ipv6-zone"),
    ],
)
def test_client_address_malformed_hop_refused(lines: list[str]) -> None:
    assert client_address(forwarded_request(*lines), PROXY_PEER, PROXIES) is None


def test_client_address_mapped_peer_trusted() -> None:
    request = forwarded_request("198.51.100.7")

    client = client_address(request, ip("::ffff:10.0.0.2"), PROXIES)

    assert client == ip("198.51.100.7")


def test_client_address_mapped_peer_returned_as_ipv4() -> None:
    request = make_mocked_request("GET", "/")

    client = client_address(request, ip("::ffff:203.0.113.9"), PROXIES)

    assert client == ip("203.0.113.9")


def test_client_address_mapped_hop_as_ipv4() -> None:
    request = forwarded_request("::ffff:198.51.100.7")

    client = client_address(request, PROXY_PEER, PROXIES)

    assert client == ip("198.51.100.7")


def test_client_address_mapped_proxy_hop_skipped() -> None:
    request = forwarded_request("198.51.100.7, ::ffff:10.1.1.1")

    client = client_address(request, PROXY_PEER, PROXIES)

    assert client == ip("198.51.100.7")


def test_normalise_address_mapped_to_ipv4() -> None:
    assert normalise_address("::ffff:192.0.2.1") == ip("192.0.2.1")


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("127.0.0.1", id="ipv4"),
        pytest.param("::ffff:127.0.0.1", id="mapped"),
        pytest.param("::1", id="ipv6"),
        pytest.param("2001:db8::1", id="documentation-ipv6"),
    ],
)
def test_allowed_empty_allowlist(address: str) -> None:
    assert not allowed(ip(address), [])


def test_allowed_no_address() -> None:
    assert not allowed(None, networks("0.0.0.0/0", "::/0"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("192.0.2.63", False, id="ipv4-one-below"),
        pytest.param("192.0.2.64", True, id="ipv4-first"),
        pytest.param("192.0.2.100", True, id="ipv4-inside"),
        pytest.param("192.0.2.127", True, id="ipv4-last"),
        pytest.param("192.0.2.128", False, id="ipv4-one-beyond"),
        pytest.param("::ffff:192.0.2.64", True, id="mapped-first"),
        pytest.param("::ffff:192.0.2.128", False, id="mapped-one-beyond"),
        pytest.param("2001:db8:0:ff::ffff", False, id="ipv6-one-below"),
        pytest.param("2001:db8:0:100::", True, id="ipv6-first"),
        pytest.param("2001:db8:0:1ff:ffff:ffff:ffff:ffff", True, id="ipv6-last"),
        pytest.param("2001:db8:0:200::", False, id="ipv6-one-beyond"),
        pytest.param("::1", True, id="ipv6-host"),
        pytest.param("::2", False, id="ipv6-host-neighbour"),
    ],
)
def test_allowed_range_boundaries(address: str, expected: bool) -> None:
    allowlist = networks("192.0.2.64/26", "2001:db8:0:100::/56", "::1/128")

    assert allowed(ip(address), allowlist) is expected


def test_allowed_ipv4_not_matched_by_ipv6_range() -> None:
    # 192.0.2.1 as an integer is inside ::/96; versions must not mix.
    assert not allowed(ip("192.0.2.1"), networks("::/96"))
