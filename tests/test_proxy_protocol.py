"""PROXY protocol headers: the parser, then a gateway behind a balancer."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import pytest

from gateway.proxy_protocol import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse
from tests.support.harness import GatewayHarness
from tests.test_server_tls import SOCKET_TIMEOUT, read_to_end, request_bytes, statuses

MakeGateway = Callable[..., Awaitable[GatewayHarness]]


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def v2_ipv4(source: str, port: int, tlv: bytes = b"") -> bytes:
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("127.0.0.1").packed
    return v2(1, 0x11, addresses + struct.pack("!HH", port, 443) + tlv)


def v2_ipv6(source: str, port: int) -> bytes:
    addresses = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address("::1").packed
    return v2(1, 0x21, addresses + struct.pack("!HH", port, 443))


# --- the parser -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "client"),
    [
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 443\r\n", ("192.0.2.7", 51000), id="v1-ipv4"),
        pytest.param(b"PROXY TCP6 2001:db8::7 ::1 51000 443\r\n", ("2001:db8::7", 51000), id="v1-ipv6"),
        pytest.param(b"PROXY UNKNOWN\r\n", None, id="v1-unknown"),
        pytest.param(v2_ipv4("192.0.2.7", 51000), ("192.0.2.7", 51000), id="v2-ipv4"),
        pytest.param(v2_ipv4("192.0.2.7", 51000, tlv=b"\x04\x00\x01x"), ("192.0.2.7", 51000), id="v2-with-tlv"),
        pytest.param(v2_ipv6("2001:db8::7", 51000), ("2001:db8::7", 51000), id="v2-ipv6"),
        pytest.param(v2(0, 0x00, b""), None, id="v2-local"),
    ],
)
def test_parse_header(data: bytes, client: tuple[str, int] | None) -> None:
    header = parse(data + b"\x16\x03\x01")

    assert isinstance(header, ProxyHeader)
    assert header.size == len(data)
    found = (str(header.client[0]), header.client[1]) if header.client else None
    assert found == client


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"PROXY TCP4 192.0.2.7", id="v1-partial"),
        pytest.param(b"PRO", id="v1-prefix"),
        pytest.param(V2_SIGNATURE[:7], id="v2-signature-part"),
        pytest.param(v2_ipv4("192.0.2.7", 1)[:20], id="v2-addresses-part"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_parse_incomplete(data: bytes) -> None:
    assert parse(data) is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x16\x03\x01\x02\x00", id="tls-client-hello"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="plain-http"),
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 51000\r\n", id="v1-missing-port"),
        pytest.param(b"PROXY TCP4 2001:db8::7 127.0.0.1 1 2\r\n", id="v1-family-mismatch"),
        pytest.param(b"PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n", id="v1-bad-address"),
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 70000 443\r\n", id="v1-port-range"),
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 051 443\r\n", id="v1-leading-zero"),
        pytest.param(b"PROXY TCP4 192.0.2.7  127.0.0.1 1 2\r\n", id="v1-double-space"),
        pytest.param(b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\n", id="v1-bare-lf"),
        pytest.param(b"PROXY " + b"A" * 120, id="v1-too-long"),
        pytest.param(V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12, id="v2-version-3"),
        pytest.param(V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12, id="v2-bad-command"),
        pytest.param(v2(1, 0x12, b"\x00" * 12), id="v2-udp"),
        pytest.param(v2(1, 0x31, b"\x00" * 216), id="v2-unix"),
        pytest.param(v2(1, 0x11, b"\x00" * 8), id="v2-short-addresses"),
        pytest.param(V2_SIGNATURE + b"\x21\x11\xff\xff", id="v2-oversized"),
    ],
)
def test_parse_rejects(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


# --- a gateway behind a balancer ---------------------------------------------------


@pytest.fixture
async def balanced(make_gateway: MakeGateway) -> GatewayHarness:
    """A gateway whose balancer is 127.0.0.1 and whose tenant admits 192.0.2.7."""
    gateway = await make_gateway(
        gateway_overrides={"balancers": ["127.0.0.1/32"]},
        tenants={"noord": {"allowed_ips": ["192.0.2.7/32"]}},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    return gateway


def send_through_balancer(
    gateway: GatewayHarness, header: bytes, *, source: str = "127.0.0.1", tenant: str = "noord"
) -> tuple[bytes, BaseException | None]:
    """Connect from ``source``, send ``header``, then a TLS launch; return what came back."""
    raw = socket.socket()
    raw.settimeout(SOCKET_TIMEOUT)
    raw.bind((source, 0))
    raw.connect(("127.0.0.1", gateway.port))
    try:
        raw.sendall(header)
        context = gateway.ssl_context(tenant)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request_bytes(gateway.port, "/sso/ysis/noord?userId=ysis-jan"))
            return read_to_end(tls), None
    except (ssl.SSLError, OSError) as error:
        return b"", error
    finally:
        raw.close()


async def test_balanced_client_in_allowlist(balanced: GatewayHarness) -> None:
    data, error = await asyncio.to_thread(send_through_balancer, balanced, v2_ipv4("192.0.2.7", 50000))

    assert error is None
    assert statuses(data) == [303]


async def test_balanced_client_outside_allowlist(balanced: GatewayHarness) -> None:
    data, error = await asyncio.to_thread(send_through_balancer, balanced, v2_ipv4("198.51.100.9", 50000))

    assert error is None
    assert statuses(data) == [403]


async def test_balanced_v1_header(balanced: GatewayHarness) -> None:
    header = b"PROXY TCP4 192.0.2.7 127.0.0.1 50000 443\r\n"

    data, error = await asyncio.to_thread(send_through_balancer, balanced, header)

    assert error is None
    assert statuses(data) == [303]


async def test_local_header_uses_balancer_address(balanced: GatewayHarness) -> None:
    data, error = await asyncio.to_thread(send_through_balancer, balanced, v2(0, 0, b""))

    assert error is None
    assert statuses(data) == [403]


async def test_balancer_without_header_closed(balanced: GatewayHarness) -> None:
    data, error = await asyncio.to_thread(send_through_balancer, balanced, b"")

    assert data == b""
    assert error is not None


async def test_malformed_header_closed(balanced: GatewayHarness) -> None:
    header = b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 443\r\n"

    data, error = await asyncio.to_thread(send_through_balancer, balanced, header)

    assert data == b""
    assert error is not None


async def test_header_from_other_peer_closed(balanced: GatewayHarness) -> None:
    data, error = await asyncio.to_thread(
        send_through_balancer, balanced, v2_ipv4("192.0.2.7", 50000), source="127.0.0.2"
    )

    assert data == b""
    assert error is not None


async def test_rejected_header_logged(balanced: GatewayHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="gateway.tls")

    await asyncio.to_thread(send_through_balancer, balanced, b"PROXY nonsense\r\n")

    for _ in range(40):
        records = [r for r in caplog.records if getattr(r, "event", "") == "proxy_header_rejected"]
        if records:
            break
        await asyncio.sleep(0.05)
    assert len(records) == 1
    assert records[0].peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
