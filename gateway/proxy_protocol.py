"""The PROXY protocol header that an L4 load balancer puts before TLS.

HAProxy's PROXY protocol (versions 1 and 2) carries the client's address
from a TCP balancer to the server, so that the allowlist can decide on the
client instead of the balancer. The gateway reads it only from configured
balancer addresses, and from them it requires it: a missing, malformed or
oversized header closes the connection.

``parse`` takes the bytes received so far and returns None while the header
is incomplete, or a ``ProxyHeader`` with the number of bytes it used.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

#: The 12 bytes that start a version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: A version 1 header is at most 107 bytes, CRLF included.
V1_MAX = 107

#: Largest version 2 header accepted: its 16 fixed bytes plus addresses and
#: TLVs. Balancers send far less; the limit bounds what a peer can make the
#: gateway buffer before TLS.
V2_MAX = 16 + 1024

_V1_LINE = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f.:]{2,45}) ([0-9A-Fa-f.:]{2,45})"
    rb" (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})\r\n"
)
_V1_UNKNOWN = re.compile(rb"PROXY UNKNOWN[^\r\n]*\r\n")

_FAMILIES = {0x11: (4, 12), 0x21: (6, 36)}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class ProxyHeaderError(ValueError):
    """Raised for bytes that are not a valid PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header: the client's address and port, or None for LOCAL.

    ``size`` is the number of bytes the header took; what follows is TLS.
    """

    client: tuple[Address, int] | None
    size: int


def parse(data: bytes) -> ProxyHeader | None:
    """Parse a header at the start of ``data``; None while more bytes are needed."""
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if b"PROXY "[: len(data)] == data[:6]:
        return _parse_v1(data)
    raise ProxyHeaderError("the connection does not start with a PROXY header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyHeaderError("the version 1 header has no CRLF within 107 bytes")
        return None
    line = data[: end + 2]
    if _V1_UNKNOWN.fullmatch(line):
        return ProxyHeader(None, len(line))
    match = _V1_LINE.fullmatch(line)
    if match is None:
        raise ProxyHeaderError("malformed version 1 header")
    family, source, destination, port, _ = match.groups()
    version = 4 if family == b"TCP4" else 6
    client = _address(source.decode("ascii"), version)
    _address(destination.decode("ascii"), version)
    client_port = int(port)
    if int(match.group(5)) > 65535 or client_port > 65535:
        raise ProxyHeaderError("port out of range in the version 1 header")
    return ProxyHeader((client, client_port), len(line))


def _address(text: str, version: int) -> Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError("invalid address in the version 1 header") from None
    if address.version != version:
        raise ProxyHeaderError("address family does not match the version 1 header")
    return address


def _parse_v2(data: bytes) -> ProxyHeader | None:
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError("unsupported PROXY protocol version")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError("unknown version 2 command")
    size = 16 + length
    if size > V2_MAX:
        raise ProxyHeaderError(f"version 2 header of {size} bytes is over {V2_MAX}")
    if len(data) < size:
        return None
    if command == 0:
        # LOCAL: the balancer's own connection, such as a health check.
        return ProxyHeader(None, size)
    if family not in _FAMILIES:
        raise ProxyHeaderError("version 2 header is not TCP over IPv4 or IPv6")
    version, needed = _FAMILIES[family]
    if length < needed:
        raise ProxyHeaderError("version 2 header is too short for its addresses")
    body = data[16:size]
    half = (needed - 4) // 2
    raw_source = body[:half]
    (port,) = struct.unpack("!H", body[2 * half : 2 * half + 2])
    client: Address = (
        ipaddress.IPv4Address(raw_source) if version == 4 else ipaddress.IPv6Address(raw_source)
    )
    return ProxyHeader((client, port), size)
