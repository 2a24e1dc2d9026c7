"""Redis link cache against a real redis-server and a SQLite link store."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.links.cache import NOT_FOUND_MARKER, CachedLinkStore, link_key
from gateway.links.sql import SqlLinkStore
from gateway.links.store import SELF_LINK, Link
from gateway.storage.database import create_engine, upgrade
from tests.support.services import RedisServer

TENANT = "care-north"


class CountingStore:
    """Test double of the backend that counts calls and forwards them."""

    def __init__(self, inner: SqlLinkStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        # When set, ``get`` waits for it after reading, to widen a race.
        self.get_gate: asyncio.Event | None = None

    async def get(self, tenant: str, ysis_user: str) -> Link | None:
        self.calls["get"] += 1
        link = await self.inner.get(tenant, ysis_user)
        if self.get_gate is not None:
            await self.get_gate.wait()
        return link

    async def add(
        self, tenant: str, ysis_user: str, medimo_account: str, created_by: str
    ) -> Link:
        self.calls["add"] += 1
        return await self.inner.add(tenant, ysis_user, medimo_account, created_by)

    async def remove(self, tenant: str, ysis_user: str) -> Link | None:
        self.calls["remove"] += 1
        return await self.inner.remove(tenant, ysis_user)

    async def list(self, tenant: str | None = None) -> builtins.list[Link]:
        self.calls["list"] += 1
        return await self.inner.list(tenant)

    async def touch(self, tenant: str, ysis_user: str, when: datetime) -> None:
        self.calls["touch"] += 1
        await self.inner.touch(tenant, ysis_user, when)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[CountingStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'links.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield CountingStore(SqlLinkStore(engine))
    await engine.dispose()


def make_client(url: str) -> Redis:
    """Return a client that fails at once instead of retrying with backoff."""
    return Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=2)


@pytest.fixture
async def shared_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = make_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def own_redis(killable_redis: RedisServer) -> AsyncIterator[Redis]:
    client = make_client(killable_redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def inspector(killable_redis: RedisServer) -> AsyncIterator[Redis]:
    """Second client on the killable server, to look at keys directly."""
    client = make_client(killable_redis.url)
    yield client
    await client.aclose()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "gateway.links" and record.levelno == logging.WARNING
    ]


async def test_hit_skips_backend(backend: CountingStore, shared_redis: Redis) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)

    first = await cache.get(TENANT, "ysis-1")
    second = await cache.get(TENANT, "ysis-1")

    assert first == added
    assert second == added
    assert backend.calls["get"] == 1
    assert cache.cache_stats.misses == 1
    assert cache.cache_stats.hits == 1
    assert cache.cache_stats.errors == 0
    assert await shared_redis.pttl(link_key(TENANT, "ysis-1")) > 59_000


async def test_negative_cache_honoured_then_expires(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis, negative_ttl=0.2)

    assert await cache.get(TENANT, "ysis-1") is None
    # Added behind the cache's back, so only expiry can reveal it.
    added = await backend.inner.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    still_cached = await cache.get(TENANT, "ysis-1")
    calls_while_cached = backend.calls["get"]
    await asyncio.sleep(0.3)
    after_expiry = await cache.get(TENANT, "ysis-1")

    assert still_cached is None
    assert calls_while_cached == 1
    assert after_expiry == added
    assert backend.calls["get"] == 2


async def test_negative_ttl_zero_disables(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis, negative_ttl=0)

    assert await cache.get(TENANT, "ysis-1") is None
    assert await cache.get(TENANT, "ysis-1") is None

    assert backend.calls["get"] == 2
    assert await shared_redis.exists(link_key(TENANT, "ysis-1")) == 0


async def test_add_invalidates_negative_entry(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    assert await cache.get(TENANT, "ysis-1") is None

    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)

    assert await cache.get(TENANT, "ysis-1") == added


async def test_remove_invalidates_entry(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    assert await cache.get(TENANT, "ysis-1") == added

    removed = await cache.remove(TENANT, "ysis-1")

    assert removed == added
    assert await cache.get(TENANT, "ysis-1") is None


async def test_touch_and_list_use_backend(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    when = datetime.fromisoformat("2026-06-01T12:00:00+00:00")

    await cache.touch(TENANT, "ysis-1", when)
    listed = await cache.list(TENANT)

    assert backend.calls["touch"] == 1
    assert backend.calls["list"] == 1
    assert [link.last_used_at for link in listed] == [when]
    assert listed[0].medimo_account == added.medimo_account


async def test_write_during_miss_not_cached(
    backend: CountingStore, shared_redis: Redis
) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    await backend.inner.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    backend.get_gate = asyncio.Event()

    slow_get = asyncio.create_task(cache.get(TENANT, "ysis-1"))
    while backend.calls["get"] == 0:
        await asyncio.sleep(0.01)
    await cache.remove(TENANT, "ysis-1")
    backend.get_gate.set()
    backend.get_gate = None
    overlapping = await slow_get

    # The overlapping read may return the old link, but must not cache it.
    assert overlapping is not None
    assert await shared_redis.exists(link_key(TENANT, "ysis-1")) == 0
    assert await cache.get(TENANT, "ysis-1") is None


async def test_corrupt_entry_read_from_backend(
    backend: CountingStore, shared_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CachedLinkStore(backend, shared_redis)
    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    await shared_redis.set(link_key(TENANT, "ysis-1"), b"{not json")

    found = await cache.get(TENANT, "ysis-1")
    found_again = await cache.get(TENANT, "ysis-1")

    assert found == added
    assert found_again == added
    assert backend.calls["get"] == 1
    assert cache.cache_stats.errors == 1
    assert len(warnings_of(caplog)) == 1


def test_key_escapes_separator() -> None:
    assert link_key("care-north", "ysis-1") == "sso:link:v1:care-north:ysis-1"
    assert link_key("a:b", "c") != link_key("a", "b:c")
    assert link_key("a%3Ab", "c") != link_key("a:b", "c")


async def test_redis_down_serves_backend(
    backend: CountingStore,
    own_redis: Redis,
    killable_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = CachedLinkStore(backend, own_redis)
    first = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    assert await cache.get(TENANT, "ysis-1") == first

    killable_redis.stop()
    cached_read = await cache.get(TENANT, "ysis-1")
    second = await cache.add(TENANT, "ysis-2", "medimo-2", SELF_LINK)
    second_read = await cache.get(TENANT, "ysis-2")
    removed = await cache.remove(TENANT, "ysis-1")
    removed_read = await cache.get(TENANT, "ysis-1")

    assert cached_read == first
    assert second_read == second
    assert removed == first
    assert removed_read is None
    assert cache.pending_invalidations == 2
    assert cache.cache_stats.errors >= 5
    warnings = warnings_of(caplog)
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert repr(TENANT) in message
    assert "ysis-1" not in message


async def test_pending_invalidation_applied_on_return(
    backend: CountingStore,
    own_redis: Redis,
    inspector: Redis,
    killable_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.links")
    cache = CachedLinkStore(backend, own_redis)
    key = link_key(TENANT, "ysis-1")
    await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    await cache.get(TENANT, "ysis-1")
    stale_value = await inspector.get(key)
    assert stale_value is not None

    killable_redis.stop()
    await cache.remove(TENANT, "ysis-1")
    killable_redis.start()
    # The killed server kept no data, so put the stale entry back by hand.
    await inspector.set(key, stale_value, px=60_000)
    found = await cache.get(TENANT, "ysis-1")

    assert found is None
    assert cache.pending_invalidations == 0
    # The stale link was deleted and the miss cached the "no link" marker.
    assert await inspector.get(key) == NOT_FOUND_MARKER.encode()
    messages = [record.getMessage() for record in caplog.records]
    assert "applied 1 pending link cache invalidations" in messages
    assert any("Redis works again" in message for message in messages)


async def test_pending_key_not_served_while_delete_fails(
    backend: CountingStore, own_redis: Redis, inspector: Redis
) -> None:
    cache = CachedLinkStore(backend, own_redis, timeout=0.2)
    key = link_key(TENANT, "ysis-1")
    await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)
    await cache.get(TENANT, "ysis-1")

    # Writes block while reads go on, so DEL times out but GET would still
    # return the stale entry.
    await inspector.client_pause(10_000, all=False)
    try:
        await cache.remove(TENANT, "ysis-1")
        pending_after_remove = cache.pending_invalidations
        stale_still_there = await inspector.exists(key)
        found_while_paused = await cache.get(TENANT, "ysis-1")
    finally:
        await inspector.client_unpause()
    found_after = await cache.get(TENANT, "ysis-1")

    assert pending_after_remove == 1
    assert stale_still_there == 1
    assert found_while_paused is None
    assert found_after is None
    assert cache.pending_invalidations == 0
    assert await inspector.get(key) == NOT_FOUND_MARKER.encode()


async def test_pending_overflow_bypasses_cache(
    backend: CountingStore,
    own_redis: Redis,
    inspector: Redis,
    killable_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = CachedLinkStore(backend, own_redis, max_pending=1)
    stale: dict[str, bytes | str] = {}
    for ysis_user in ("ysis-1", "ysis-2"):
        await cache.add(TENANT, ysis_user, f"medimo-{ysis_user}", SELF_LINK)
        await cache.get(TENANT, ysis_user)
        value = await inspector.get(link_key(TENANT, ysis_user))
        assert value is not None
        stale[ysis_user] = value

    killable_redis.stop()
    await cache.remove(TENANT, "ysis-1")
    await cache.remove(TENANT, "ysis-2")
    killable_redis.start()
    for ysis_user, value in stale.items():
        await inspector.set(link_key(TENANT, ysis_user), value, px=60_000)
    calls_before = backend.calls["get"]

    assert await cache.get(TENANT, "ysis-1") is None
    assert await cache.get(TENANT, "ysis-2") is None
    assert backend.calls["get"] == calls_before + 2
    assert any(
        "pending invalidations is reached" in record.getMessage()
        for record in warnings_of(caplog)
    )


async def test_pending_dropped_after_ttl(
    backend: CountingStore,
    own_redis: Redis,
    inspector: Redis,
    killable_redis: RedisServer,
) -> None:
    cache = CachedLinkStore(backend, own_redis, ttl=0.2, negative_ttl=0.1)
    added = await cache.add(TENANT, "ysis-1", "medimo-1", SELF_LINK)

    killable_redis.stop()
    await cache.remove(TENANT, "ysis-1")
    assert cache.pending_invalidations == 1
    await asyncio.sleep(0.3)
    killable_redis.start()
    await backend.inner.add(TENANT, "ysis-1", added.medimo_account, SELF_LINK)
    found = await cache.get(TENANT, "ysis-1")

    # Any entry from before the failure has expired, so nothing was deleted.
    assert found is not None
    assert cache.pending_invalidations == 0
    assert await inspector.exists(link_key(TENANT, "ysis-1")) == 1


async def test_invalid_settings_rejected(
    backend: CountingStore, shared_redis: Redis
) -> None:
    client = shared_redis
    with pytest.raises(ValueError, match="ttl must be positive"):
        CachedLinkStore(backend, client, ttl=0)
    with pytest.raises(ValueError, match="negative_ttl must be 0 or more"):
        CachedLinkStore(backend, client, negative_ttl=-1)
    with pytest.raises(ValueError, match="timeout must be positive"):
        CachedLinkStore(backend, client, timeout=0)
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        CachedLinkStore(backend, client, max_pending=0)
