"""The per-request scope that the first middleware fills in.

The peer address and certificate are read once, before any ``await``: after a
disconnect the transport is gone, IPv6 peers come as 4-tuples and IPv4
clients of a dual-stack socket as ``::ffff:`` addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class RequestScope:
    """What the gateway knows about one request; later stages add to it."""

    request_id: str
    peer: IPAddress | None
    certificate: bytes | None
    fingerprint: str | None
    started: float = field(default_factory=time.monotonic)
    tenant: str | None = None
    client: IPAddress | None = None
    outcome: str | None = None
    #: Expire the gateway cookies the browser sent, unless the response sets them.
    expire_cookies: bool = False
    #: The response's Location header, for the launch outcome metric.
    location: str | None = None
    #: Ysis user and Medimo account the request acts for, once a launch, a
    #: pending launch or a session names them. The SSO log records them.
    ysis_user: str | None = None
    account: str | None = None


SCOPE = web.RequestKey("scope", RequestScope)


def normalise_address(text: str) -> IPAddress | None:
    """Parse an address, turning IPv4-mapped IPv6 into IPv4; None if invalid."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_certificate(request: web.BaseRequest) -> bytes | None:
    """Return the DER client certificate of the request's connection, if any."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def build_scope(request: web.BaseRequest) -> RequestScope:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport else None
    peer = normalise_address(str(peername[0])) if peername else None
    der = peer_certificate(request)
    return RequestScope(
        request_id=secrets.token_hex(12),
        peer=peer,
        certificate=der,
        fingerprint=hashlib.sha256(der).hexdigest() if der else None,
    )
