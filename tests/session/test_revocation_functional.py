"""Revocations across two gateway instances: pub/sub, Redis outages, expiry.

Each test starts two instances of one deployment (``tests.support.pair``) on
a redis-server of its own, which it may kill, restart on the same port or
freeze. The SQL poll intervals are far longer than the wait each test
allows, unless the test is about the poll.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from gateway.session.codec import CookieCodec
from gateway.session.sessions import SessionCodec
from gateway.storage.database import create_engine
from gateway.storage.revocations import SqlRevocationStore
from tests.support.harness import (
    GatewayHarness,
    cookie_status,
    launch,
    poll_until,
    post_form,
)
from tests.support.pair import (
    PUBSUB_LIMIT,
    MakeGateway,
    cookie_of,
    feed,
    logged_in,
    refused_within,
    start_pair,
    subscribed,
)
from tests.support.services import RedisServer


async def log_out(gateway: GatewayHarness, client: aiohttp.ClientSession) -> None:
    response = await post_form(client, "/sso/logout", {}, origin=gateway.base_url)
    assert response.status == 303


async def test_logout_reaches_other_instance(
    database_url: str, make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    first, second = await start_pair(
        make_gateway, killable_redis, feed(), database_url=database_url
    )
    client = await logged_in(first)
    cookie = cookie_of(client)
    assert await cookie_status(second, cookie) == 200

    await log_out(first, client)

    await refused_within(second, cookie, PUBSUB_LIMIT)


async def test_revoked_with_redis_down(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    overrides = feed(fallback_poll_interval="300ms")
    first, second = await start_pair(make_gateway, killable_redis, overrides)
    client = await logged_in(first)
    cookie = cookie_of(client)
    killable_redis.stop()

    await log_out(first, client)

    # The fallback poll reads SQL every 300 ms once the subscription is gone.
    await refused_within(second, cookie, 3)


async def test_silent_redis_detected(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    overrides = feed(fallback_poll_interval="300ms", ping_interval="300ms")
    first, second = await start_pair(make_gateway, killable_redis, overrides)
    client = await logged_in(first)
    cookie = cookie_of(client)
    # A frozen Redis keeps every connection open but sends nothing, so only
    # a PING without reply shows that announcements no longer arrive.
    killable_redis.pause()
    try:
        await log_out(first, client)

        await refused_within(second, cookie, 3)
    finally:
        killable_redis.resume()


async def test_pubsub_resumes_after_redis_restart(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    client = await logged_in(first)
    cookie = cookie_of(client)
    killable_redis.stop()
    killable_redis.start()
    await subscribed(killable_redis, 2)

    await log_out(first, client)

    await refused_within(second, cookie, PUBSUB_LIMIT)


async def test_missed_revocation_applied_on_resubscribe(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    client = await logged_in(first)
    cookie = cookie_of(client)
    killable_redis.stop()
    await log_out(first, client)
    # Nothing reached the second instance: the announcement was lost.
    assert await cookie_status(second, cookie) == 200

    killable_redis.start()

    await refused_within(second, cookie, 3)


async def revocation_ids(gateway: GatewayHarness) -> list[int]:
    assert gateway.config is not None
    engine = create_engine(gateway.config.gateway.database.url)
    try:
        # since() hides rows expired by the real clock, by which none of
        # these has expired, so a row missing here was purged.
        rows = await SqlRevocationStore(engine).since(0)
    finally:
        await engine.dispose()
    return [row.id for row in rows]


async def test_purge_removes_only_expired(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    gateway = await make_gateway(
        redis_url=killable_redis.url, gateway_overrides=feed(purge_interval="200ms")
    )
    old_client = await logged_in(gateway)
    await log_out(gateway, old_client)
    (old,) = await revocation_ids(gateway)
    gateway.clock.advance(11 * 3600)
    new_client = gateway.client("noord")
    assert (await launch(new_client, "noord", userId="ysis-jan")).status == 303
    new_cookie = cookie_of(new_client)
    await log_out(gateway, new_client)

    async def old_row_gone() -> bool:
        return old not in await revocation_ids(gateway)

    await poll_until(old_row_gone, 5, "the expired revocation is still there")
    assert len(await revocation_ids(gateway)) == 1
    assert await cookie_status(gateway, new_cookie) == 401


async def test_relaunch_reaches_other_instance(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    client = await logged_in(first)
    old_cookie = cookie_of(client)

    relaunch = await launch(client, "noord", userId="ysis-jan")

    assert relaunch.status == 303
    await refused_within(second, old_cookie, PUBSUB_LIMIT)


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(record, "event", "")
        for record in caplog.records
        if record.name == "gateway.revocations"
    ]


async def test_outage_logged(
    make_gateway: MakeGateway,
    killable_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    await start_pair(make_gateway, killable_redis)
    killable_redis.stop()
    killable_redis.start()

    await subscribed(killable_redis, 2)

    logged = events(caplog)
    assert logged.count("revocation_subscriber_started") == 2
    assert logged.count("revocation_subscription_recovered") == 2
    failures = [
        record
        for record in caplog.records
        if getattr(record, "event", "") == "revocation_subscription_failed"
    ]
    assert failures
    assert all(getattr(record, "error", "") for record in failures)


async def test_logs_hold_no_cookie(
    make_gateway: MakeGateway,
    killable_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    first, second = await start_pair(make_gateway, killable_redis)
    client = await logged_in(first)
    cookie = cookie_of(client)
    sid = SessionCodec(CookieCodec(first.session_keys, "session")).decode(cookie).sid

    await log_out(first, client)
    await refused_within(second, cookie, PUBSUB_LIMIT)

    logged = " ".join(str(vars(record)) for record in caplog.records)
    assert "session_ended" in logged
    assert cookie not in logged
    assert sid not in logged
