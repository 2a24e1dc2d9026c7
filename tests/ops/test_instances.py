"""Two ``sso-gateway serve`` processes of one deployment.

They share one redis-server and one PostgreSQL database and nothing else:
each has its own port, server certificate and demo upstream. A cookie,
a link or a revocation made through one must hold on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.session.codec import SESSION_COOKIE
from tests.ops.conftest import FAST_SETTINGS
from tests.support.harness import GatewayHarness, form_fields, poll_until
from tests.support.served import (
    ServedGateway,
    run_cli,
    start_served,
    start_served_peer,
)
from tests.support.services import RedisServer

pytestmark = pytest.mark.postgres

#: Seconds a revocation may take to reach the other instance over pub/sub.
#: The SQL polls are set far longer, so only an announcement is in time.
PUBSUB_LIMIT = 2.0

#: Seconds a revocation may take without Redis: the fallback poll is 1 s.
FALLBACK_LIMIT = 5.0

#: The feed settings of both processes.
REVOCATION_FEED = {
    "poll_interval": "60s",
    "fallback_poll_interval": "1s",
    "ping_interval": "500ms",
    "reconnect_max_delay": "200ms",
}

#: Requests the traffic loop sends at most, so that it ends on its own.
MAX_TRAFFIC = 4000


@dataclass
class Pair:
    first: ServedGateway
    second: ServedGateway

    @property
    def both(self) -> tuple[ServedGateway, ServedGateway]:
        return self.first, self.second


async def start_pair(tmp_path: Path, redis_url: str, database_url: str) -> Pair:
    folder = tmp_path / "first"
    folder.mkdir()
    harness = GatewayHarness(
        folder,
        redis_url=redis_url,
        database_url=database_url,
        gateway_overrides={**FAST_SETTINGS, "revocations": REVOCATION_FEED},
    )
    first = await start_served(harness)
    try:
        second = await start_served_peer(first, tmp_path / "second")
    except BaseException:
        await first.close()
        raise
    return Pair(first, second)


@pytest.fixture
async def pair(
    tmp_path: Path, redis_url: str, postgres_database_url: str
) -> AsyncIterator[Pair]:
    started = await start_pair(tmp_path, redis_url, postgres_database_url)
    yield started
    for served in started.both:
        await served.close()


@pytest.fixture
async def pair_on_killable_redis(
    tmp_path: Path, killable_redis: RedisServer, postgres_database_url: str
) -> AsyncIterator[Pair]:
    started = await start_pair(tmp_path, killable_redis.url, postgres_database_url)
    yield started
    for served in started.both:
        await served.close()


# --- steps ---------------------------------------------------------------


async def launch_on(served: ServedGateway, user: str) -> tuple[aiohttp.ClientSession, int, str]:
    """Launch ``user`` of tenant noord; return the browser, status and Location."""
    client = served.client("noord")
    async with client.get(
        "/sso/ysis/noord", params={"userId": user}, allow_redirects=False
    ) as response:
        await response.read()
        return client, response.status, response.headers.get("Location", "")


async def logged_in_on(served: ServedGateway, user: str) -> str:
    """Launch a linked ``user`` and return the session cookie's value."""
    client, status, location = await launch_on(served, user)
    assert (status, location) == (303, "/"), served.log_tail()
    return session_cookie(client)


def session_cookie(client: aiohttp.ClientSession) -> str:
    return next(c.value for c in client.cookie_jar if c.key == SESSION_COOKIE)


async def whoami_with(served: ServedGateway, cookie: str) -> tuple[int, str]:
    """Send ``cookie`` to ``served`` from a fresh browser; return status and account."""
    client = served.client("noord")
    client.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    async with client.get("/whoami", allow_redirects=False) as response:
        if response.status != 200:
            await response.read()
            return response.status, ""
        identity = await response.json()
        return 200, str(identity["X-Medimo-Account"])


async def rejected_within(served: ServedGateway, cookie: str, limit: float) -> float:
    async def rejected() -> bool:
        status, _ = await whoami_with(served, cookie)
        return status == 401

    return await poll_until(rejected, limit, f"the cookie still works on port {served.port}")


async def self_link(served: ServedGateway, user: str, username: str) -> int:
    """Launch an unlinked ``user`` and post the link form; return the post's status."""
    client, status, location = await launch_on(served, user)
    assert (status, location) == (303, "/sso/ysis/noord/link")
    async with client.get(location) as page:
        if page.status != 200:
            await page.read()
            return page.status
        fields = form_fields(await page.text())
    fields.update(username=username, password="demo-wachtwoord")
    async with client.post(
        location, data=fields, headers={"Origin": served.base_url}, allow_redirects=False
    ) as response:
        await response.read()
        return response.status


async def logout(served: ServedGateway, cookie: str) -> None:
    client = served.client("noord")
    client.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    async with client.post(
        "/sso/logout", headers={"Origin": served.base_url}, allow_redirects=False
    ) as response:
        await response.read()
        assert response.status == 303


async def cli_ok(served: ServedGateway, *args: str) -> None:
    result = await run_cli(served, *args, "--operator", "beheerder")
    assert result.returncode == 0, result.stderr


async def readiness(served: ServedGateway) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{served.admin_port}/readyz"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status, await response.json()


async def ready_as(served: ServedGateway, redis: str, limit: float = 15.0) -> None:
    """Wait until ``/readyz`` of ``served`` reports Redis as ``redis``.

    Every response on the way must be a 200.
    """

    async def reported() -> bool:
        status, body = await readiness(served)
        assert status == 200, body
        checks = body["checks"]
        assert isinstance(checks, dict)
        return bool(checks["redis"] == redis)

    await poll_until(reported, limit, f"/readyz reporting redis {redis}")


# --- one deployment, two processes ---------------------------------------


async def test_session_and_link_cross_instances(pair: Pair) -> None:
    first, second = pair.both

    assert await self_link(first, "ysis-piet", "piet") == 303
    # The link made on the first process logs in on the second without a form.
    cookie = await logged_in_on(second, "ysis-piet")
    assert await whoami_with(first, cookie) == (200, "medimo-piet")
    assert await whoami_with(second, cookie) == (200, "medimo-piet")


async def test_logout_on_one_ends_session_on_other(pair: Pair) -> None:
    first, second = pair.both
    await cli_ok(first, "links", "add", "--tenant", "noord", "--ysis-user", "ysis-jan", "--account", "medimo-jan")
    cookie = await logged_in_on(first, "ysis-jan")
    assert await whoami_with(second, cookie) == (200, "medimo-jan")

    await logout(first, cookie)

    await rejected_within(second, cookie, PUBSUB_LIMIT)
    assert (await whoami_with(first, cookie))[0] == 401


async def test_unlink_ends_sessions_on_both(pair: Pair) -> None:
    first, second = pair.both
    await cli_ok(first, "links", "add", "--tenant", "noord", "--ysis-user", "ysis-jan", "--account", "medimo-jan")
    on_first = await logged_in_on(first, "ysis-jan")
    on_second = await logged_in_on(second, "ysis-jan")

    await cli_ok(second, "links", "remove", "--tenant", "noord", "--ysis-user", "ysis-jan")

    for served in pair.both:
        for cookie in (on_first, on_second):
            await rejected_within(served, cookie, PUBSUB_LIMIT)
        # The link is gone for both processes, cached or not.
        _, status, location = await launch_on(served, "ysis-jan")
        assert (status, location) == (303, "/sso/ysis/noord/link")


async def test_sessions_revoke_reaches_both(pair: Pair) -> None:
    first, second = pair.both
    await cli_ok(first, "links", "add", "--tenant", "noord", "--ysis-user", "ysis-jan", "--account", "medimo-jan")
    await cli_ok(first, "links", "add", "--tenant", "noord", "--ysis-user", "ysis-anna", "--account", "medimo-anna")
    jan = await logged_in_on(first, "ysis-jan")
    anna = await logged_in_on(second, "ysis-anna")

    await cli_ok(first, "sessions", "revoke", "--tenant", "noord", "--account", "medimo-jan")

    for served in pair.both:
        await rejected_within(served, jan, PUBSUB_LIMIT)
        assert await whoami_with(served, anna) == (200, "medimo-anna")
    # A launch after the revocation starts a session that works.
    again = await logged_in_on(second, "ysis-jan")
    assert await whoami_with(first, again) == (200, "medimo-jan")


# --- Redis killed and restarted under load --------------------------------


@dataclass
class Traffic:
    """Launches and proxied requests sent round-robin to both processes."""

    pair: Pair
    session_cookie: str
    results: list[tuple[str, int, str]] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        for number in range(MAX_TRAFFIC):
            if self.stopped.is_set():
                return
            served = self.pair.both[number % 2]
            client, status, location = await launch_on(served, "ysis-jan")
            self.results.append(("launch", status, location))
            await client.close()
            status, account = await whoami_with(served, self.session_cookie)
            self.results.append(("proxied", status, account))
            await asyncio.sleep(0.01)

    def count(self) -> int:
        return len(self.results)

    def failures(self, since: int = 0) -> list[tuple[str, int, str]]:
        expected = {("launch", 303, "/"), ("proxied", 200, "medimo-anna")}
        return [result for result in self.results[since:] if result not in expected]


async def traffic_grows(traffic: Traffic, by: int) -> None:
    target = traffic.count() + by

    async def grown() -> bool:
        return traffic.count() >= target

    await poll_until(grown, 30, f"{by} more requests of traffic")


async def test_redis_killed_and_restarted_under_load(
    pair_on_killable_redis: Pair, killable_redis: RedisServer
) -> None:
    pair = pair_on_killable_redis
    first, second = pair.both
    for user in ("jan", "anna", "kees"):
        await cli_ok(first, "links", "add", "--tenant", "noord", "--ysis-user", f"ysis-{user}", "--account", f"medimo-{user}")
    anna = await logged_in_on(second, "ysis-anna")
    kees = await logged_in_on(first, "ysis-kees")
    traffic = Traffic(pair, anna)
    running = asyncio.create_task(traffic.run())
    try:
        await traffic_grows(traffic, 20)

        killable_redis.stop()
        for served in pair.both:
            await ready_as(served, "down")
        during = traffic.count()
        await traffic_grows(traffic, 40)

        # Without Redis: a revocation reaches the other process from SQL,
        # a link made by an administrator logs in, and the link form
        # returns 503.
        await logout(first, kees)
        await rejected_within(second, kees, FALLBACK_LIMIT)
        await cli_ok(second, "links", "add", "--tenant", "noord", "--ysis-user", "ysis-lotte", "--account", "medimo-lotte")
        assert (await whoami_with(first, await logged_in_on(first, "ysis-lotte")))[1] == "medimo-lotte"
        assert await self_link(second, "ysis-piet", "piet") == 503
        assert traffic.failures(during) == []

        killable_redis.start()
        for served in pair.both:
            await ready_as(served, "up")
        after = traffic.count()
        await traffic_grows(traffic, 40)
    finally:
        traffic.stopped.set()
        await running

    assert traffic.failures() == [], traffic.failures()
    assert traffic.failures(after) == []
    # Nothing made during the outage was lost when Redis came back empty.
    for served in pair.both:
        assert (await whoami_with(served, kees))[0] == 401
    links = await run_cli(first, "links", "list", "--tenant", "noord")
    assert {line.split("\t")[1] for line in links.stdout.splitlines()} >= {
        "ysis-jan", "ysis-anna", "ysis-kees", "ysis-lotte"
    }  # fmt: skip
    # Recovered without a restart: the form links again and pub/sub is back.
    assert await self_link(second, "ysis-piet", "piet") == 303
    await logout(second, anna)
    await rejected_within(first, anna, PUBSUB_LIMIT)
    for served in pair.both:
        assert served.process.poll() is None
        assert len(served.events("started")) == 1
