"""Redis through Sentinel: the ``redis+sentinel://`` URL form.

The tests start a master, a replica and a sentinel, all real redis-server
processes on loopback, and fail the master over to the replica.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from gateway.redis_connect import parse_sentinel_url
from gateway.session.announce import CHANNEL
from tests.support.harness import GatewayHarness, form_fields, launch, poll_until, post_form
from tests.support.services import RedisServer, SentinelServer

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

SERVICE = "gateway-redis"


# --- the URL ----------------------------------------------------------------------


def test_url_names_sentinels_service_and_db() -> None:
    parsed = parse_sentinel_url("redis+sentinel://a:26380,[::1],b/gateway-redis/3")

    assert parsed.sentinels == (("a", 26380), ("::1", 26379), ("b", 26379))
    assert parsed.service == "gateway-redis"
    assert parsed.db == 3


def test_url_passwords_split() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://user:m%40ster@a/gw?sentinel_password=s"
    )

    assert (parsed.username, parsed.password) == ("user", "m@ster")
    assert parsed.sentinel_password == "s"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://a:26379", "must end in /SERVICE"),
        ("redis+sentinel://a/gw/one", "database number"),
        ("redis+sentinel://a:70000/gw", "outside 1 to 65535"),
        ("redis+sentinel://a,,b/gw", "HOST or HOST:PORT"),
        ("redis+sentinel://a/gw?db=1", "takes one option"),
        ("redis+sentinel://[:::::]/gw", "not an IPv6 address"),
        ("redis+sentinel://a..b/gw", "HOST or HOST:PORT"),
        ("redis+sentinel://-/gw", "HOST or HOST:PORT"),
        ("redis+sentinel://a/gw/99999999999999999999", "database number"),
        ("redis+sentinel://a/%00", "the master's name"),
        ("redis+sentinel://a/gw#part", "#fragment"),
    ],
)
def test_bad_url_named(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://a/gw?S3cret-Sentinel-Pw",
        "redis+sentinel://a/gw?sentinel_password=ab&S3cret-Sentinel-Pw",
    ],
)
def test_bad_option_not_echoed(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_sentinel_url(url)

    assert "S3cret" not in str(caught.value)


# --- a gateway behind Sentinel ----------------------------------------------------


class Deployment:
    """A master, its replica and a sentinel that monitors the master."""

    def __init__(self, folder: Path) -> None:
        for name in ("master", "replica", "sentinel"):
            (folder / name).mkdir(parents=True)
        self.master = RedisServer(folder / "master")
        self.master.start()
        self.replica = RedisServer(
            folder / "replica",
            extra_args=("--replicaof", "127.0.0.1", str(self.master.port)),
        )
        self.replica.start()
        self.sentinel = SentinelServer(folder / "sentinel", self.master, SERVICE)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def ask_sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel.port, socket_timeout=2)

    def master_port(self) -> int:
        with self.ask_sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def replica_known(self) -> bool:
        with self.ask_sentinel() as client:
            return bool(client.sentinel_slaves(SERVICE))

    def replica_synced(self) -> bool:
        with redis.Redis(port=self.replica.port, socket_timeout=2) as client:
            return client.info("replication").get("master_link_status") == "up"

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    started = Deployment(tmp_path / "redis")
    try:
        yield started
    finally:
        started.stop()


async def until(check: Callable[[], bool], limit: float, description: str) -> None:
    async def checked() -> bool:
        try:
            return await asyncio.to_thread(check)
        except redis.RedisError:
            return False

    await poll_until(checked, limit, description)


async def self_link(gateway: GatewayHarness, ysis_user: str, username: str) -> int:
    client = gateway.client("noord")
    response = await launch(client, "noord", userId=ysis_user)
    async with client.get(response.headers["Location"]) as page:
        if page.status != 200:
            return page.status
        fields = form_fields(await page.text())
    fields.update(username=username, password="demo-wachtwoord")
    posted = await post_form(client, "/sso/ysis/noord/link", fields, origin=gateway.base_url)
    return posted.status


async def redis_reported(gateway: GatewayHarness, state: str) -> bool:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.admin_url + "/readyz") as response:
            body = await response.json()
    return bool(body["checks"]["redis"] == state)


async def test_gateway_uses_master_through_sentinel(
    make_gateway: MakeGateway, deployment: Deployment
) -> None:
    deployment.sentinel.start()
    gateway = await make_gateway(redis_url=deployment.url)

    status = await self_link(gateway, "ysis-piet", "piet")

    assert status == 303
    assert await redis_reported(gateway, "up")
    # The form's attempt limiter wrote its keys to the master.
    with redis.Redis(port=deployment.master.port) as master:
        assert master.dbsize() > 0


async def test_failover_recovers_without_restart(
    make_gateway: MakeGateway, deployment: Deployment
) -> None:
    await until(deployment.replica_synced, 15, "the replica syncing")
    deployment.sentinel.start()
    await until(deployment.replica_known, 15, "the sentinel finding the replica")
    gateway = await make_gateway(redis_url=deployment.url)
    assert await self_link(gateway, "ysis-piet", "piet") == 303

    deployment.master.stop()
    await until(
        lambda: deployment.master_port() == deployment.replica.port,
        20,
        "the sentinel promoting the replica",
    )

    async def recovered() -> bool:
        return await redis_reported(gateway, "up")

    await poll_until(recovered, 15, "/readyz reporting Redis up again")
    attempts = itertools.count()

    async def form_links() -> bool:
        # Until each pooled connection has met the new master, a form may
        # still return 503, as in any Redis outage. Each try links a new
        # Ysis user, to one of the two demo accounts not linked yet.
        number = next(attempts)
        user = ("anna", "jan")[number % 2]
        return await self_link(gateway, f"ysis-{user}-{number}", user) == 303

    await poll_until(form_links, 15, "the link form working on the new master")

    def subscribed_to_new_master() -> bool:
        with redis.Redis(port=deployment.replica.port, socket_timeout=2) as client:
            return bool(client.pubsub_numsub(CHANNEL)[0][1] >= 1)

    # The revocation feed subscribed again, now on the promoted replica.
    await until(subscribed_to_new_master, 15, "the revocation feed on the new master")
