"""Redis clients from the configured URL, Redis Sentinel included.

A ``redis://``, ``rediss://`` or ``unix://`` URL goes to redis-py as it is.
A Sentinel URL names the sentinels and the monitored master::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?sentinel_password=...]

The client asks the sentinels for the master's address on every new
connection, so after a failover the next command reaches the new master.
The password in the URL is the master's; ``sentinel_password`` is the
sentinels' own, when they require one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"

#: Port of a sentinel whose address has none.
DEFAULT_SENTINEL_PORT = 26379

_HOST = re.compile(
    r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)(?::(\d{1,5}))?"
)

#: Names Redis gives a monitored master: letters, digits and ``-_.:``.
_SERVICE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

#: Largest database number accepted; Redis itself defaults to 16 databases.
MAX_DB = 2**31 - 1


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split a Sentinel URL, or raise ValueError naming the part that is wrong.

    The messages never quote the URL, because it may hold a password.
    """
    rest = url.removeprefix(SENTINEL_SCHEME + "://")
    if "#" in rest:
        raise ValueError("a Sentinel URL cannot have a #fragment")
    rest, _, query = rest.partition("?")
    location, _, path = rest.partition("/")
    userinfo, at, hosts = location.rpartition("@")
    if not at:
        hosts = location
    username = password = None
    if userinfo:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel(host) for host in hosts.split(","))
    parts = [part for part in path.split("/") if part]
    if not parts or len(parts) > 2:
        raise ValueError(
            "a Sentinel URL must end in /SERVICE or /SERVICE/DB, the name of "
            "the master that the sentinels monitor"
        )
    service = unquote(parts[0])
    if not _SERVICE.fullmatch(service):
        raise ValueError(
            "the service of a Sentinel URL must be the master's name: letters, "
            "digits and '-_.:'"
        )
    db = 0
    if len(parts) == 2:
        if not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 10):
            raise ValueError("the database number of a Sentinel URL must be 0 or more")
        db = int(parts[1])
        if db > MAX_DB:
            raise ValueError(f"the database number of a Sentinel URL is above {MAX_DB}")
    options = parse_qs(query, keep_blank_values=True)
    if set(options) - {"sentinel_password"} or (query and not options):
        # The option's name is not quoted: a forgotten 'sentinel_password='
        # would leave the password itself in its place.
        raise ValueError(
            "a Sentinel URL takes one option, ?sentinel_password=..., and no other"
        )
    sentinel_password = options.get("sentinel_password", [None])[-1]
    return SentinelUrl(sentinels, service, db, username, password, sentinel_password)


def _sentinel(text: str) -> tuple[str, int]:
    match = _HOST.fullmatch(text)
    if match is None:
        raise ValueError(
            "each sentinel of a Sentinel URL must be HOST or HOST:PORT, "
            "separated by commas"
        )
    host = match.group(1)
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"sentinel address [{host}] is not an IPv6 address") from None
    port = int(match.group(2) or DEFAULT_SENTINEL_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"sentinel port {port} is outside 1 to 65535")
    return host, port


class SentinelRedis(Redis):
    """A client of the current master that also closes its sentinel clients."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def connect(url: str, **options: Any) -> Redis:
    """Return a client for ``url``; ``options`` are connection settings such as timeouts."""
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    timeouts = {
        key: options[key]
        for key in ("socket_timeout", "socket_connect_timeout")
        if key in options
    }
    sentinel = Sentinel(
        parsed.sentinels,
        sentinel_kwargs={"password": parsed.sentinel_password, **timeouts},
    )
    client = sentinel.master_for(
        parsed.service,
        redis_class=SentinelRedis,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
    assert isinstance(client, SentinelRedis)
    client.sentinel = sentinel
    return client
