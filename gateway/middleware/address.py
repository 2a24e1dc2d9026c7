"""The client address and the tenant's IP allowlist.

The peer address counts, unless the peer is a configured trusted proxy: then
the rightmost address across all ``X-Forwarded-For`` lines that is not itself
a trusted proxy is the client. Other forwarding headers (``Forwarded``,
``X-Real-IP``, ``True-Client-IP``) are never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

from gateway.config.types import IPNetwork
from gateway.middleware.scope import IPAddress, normalise_address


def _as_ipv4(address: IPAddress) -> IPAddress:
    # An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is the IPv4 client of a
    # dual-stack socket, so it must match IPv4 ranges, not IPv6 ones.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inside(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    address = _as_ipv4(address)
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    request: web.BaseRequest, peer: IPAddress | None, trusted_proxies: Sequence[IPNetwork]
) -> IPAddress | None:
    """Return the client's address, or None when it cannot be trusted."""
    if peer is None:
        return None
    peer = _as_ipv4(peer)
    if not _inside(peer, trusted_proxies):
        return peer

    hops: list[str] = []
    for line in request.headers.getall("X-Forwarded-For", []):
        hops.extend(part.strip() for part in line.split(","))
    client = peer
    for hop in reversed(hops):
        # A zone ID ("%eth0") names an interface of the sender's own host,
        # so it has no meaning in a forwarded address.
        address = normalise_address(hop) if "%" not in hop else None
        if address is None:
            # SECURITY: an unparsable hop could hide the real client, so the
            # request has no trustworthy address at all.
            return None
        client = address
        if not _inside(address, trusted_proxies):
            return address
    return client


def allowed(address: IPAddress | None, allowlist: Sequence[IPNetwork]) -> bool:
    """Tell whether an address is in the allowlist; an empty list admits nobody."""
    return address is not None and _inside(address, allowlist)
