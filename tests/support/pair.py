"""Two instances of one gateway deployment, for tests of the revocation feed.

Both instances share the database, session keys, certificates and a
redis-server of the test's own. The feed's SQL poll intervals default to far
longer than any test waits, so a fast result proves that an announcement
delivered the revocation, not the timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.session.announce import CHANNEL
from gateway.session.codec import SESSION_COOKIE
from tests.support.harness import GatewayHarness, cookie_status, launch, poll_until
from tests.support.services import RedisServer

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

#: Longer than any test waits, so that only an announcement can be in time.
SLOW_POLL = "60s"

#: How long a revocation may take to reach the other instance over pub/sub.
PUBSUB_LIMIT = 2.0


def feed(**settings: str) -> dict[str, Any]:
    """Gateway overrides of the revocation feed: slow polls unless changed."""
    values = {
        "poll_interval": SLOW_POLL,
        "fallback_poll_interval": SLOW_POLL,
        "ping_interval": "1s",
        "reconnect_max_delay": "200ms",
        **settings,
    }
    return {"revocations": values}


async def subscribed(redis: RedisServer, count: int) -> None:
    """Wait until ``count`` instances subscribe to the announcement channel."""

    async def check() -> bool:
        try:
            return await asyncio.to_thread(redis.subscribers, CHANNEL) == count
        except OSError:
            return False

    await poll_until(check, 10, f"{count} subscribers on {CHANNEL}")


async def start_pair(
    make_gateway: MakeGateway,
    redis: RedisServer,
    overrides: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[GatewayHarness, GatewayHarness]:
    """Start two instances on ``redis``; return once both are subscribed."""
    first = await make_gateway(
        redis_url=redis.url, gateway_overrides=overrides or feed(), **options
    )
    second = await make_gateway(peer_of=first)
    await subscribed(redis, 2)
    return first, second


async def logged_in(
    gateway: GatewayHarness, ysis_user: str = "ysis-jan", account: str = "medimo-jan"
) -> aiohttp.ClientSession:
    """Link a user of tenant noord and launch; return the browser."""
    await gateway.add_link("noord", ysis_user, account)
    client = gateway.client("noord")
    response = await launch(client, "noord", userId=ysis_user)
    assert response.status == 303
    return client


def cookie_of(client: aiohttp.ClientSession) -> str:
    return next(c.value for c in client.cookie_jar if c.key == SESSION_COOKIE)


async def refused_within(
    gateway: GatewayHarness, cookie: str, limit: float, tenant: str = "noord"
) -> float:
    """Return the seconds until ``gateway`` rejects the cookie with 401."""

    async def refused() -> bool:
        return await cookie_status(gateway, cookie, tenant) == 401

    return await poll_until(refused, limit, "the revoked cookie still works")
