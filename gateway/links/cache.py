"""Redis cache in front of a link store.

Reads go to Redis first and fall back to the backend. Writes go to the backend
and then delete the cached entry. Redis is optional for correctness: when it
fails, every call is served by the backend and one warning is logged per
``warning_interval``.

A delete that fails is kept in memory and retried before the next Redis read.
Until it succeeds the key is never served from Redis. An entry written before
the failure lives at most ``max(ttl, negative_ttl)`` seconds, so a pending
delete is dropped after that long. When ``max_pending`` deletes are already
pending, a further failure stops all cache reads for that long instead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.links.store import Link, LinkStore

logger = logging.getLogger("gateway.links")

KEY_PREFIX = "sso:link:v1:"

#: Cached value of a Ysis account ID that has no link.
NOT_FOUND_MARKER = "null"

_REDIS_ERRORS = (RedisError, OSError)

_T = TypeVar("_T")


@dataclass
class CacheStats:
    """Counters of a link cache, for metrics.

    Every ``get`` counts as one hit or one miss. ``errors`` counts failed Redis
    commands and unreadable cached values.
    """

    hits: int = 0
    misses: int = 0
    errors: int = 0
    #: Called with the counter's name on each count, such as to update a
    #: metric that several worker processes add up.
    listener: Callable[[str], None] | None = field(
        default=None, repr=False, compare=False
    )

    def count(self, name: Literal["hits", "misses", "errors"]) -> None:
        setattr(self, name, getattr(self, name) + 1)
        if self.listener is not None:
            self.listener(name)


class _SkipCache(Exception):
    """Raised inside the cache when Redis must not be used for this call."""


@dataclass(frozen=True)
class _Hit:
    link: Link | None


def link_key(tenant: str, ysis_user: str) -> str:
    """Return the Redis key that caches the link of a Ysis account ID.

    ``%`` and ``:`` inside the IDs are percent-encoded, so two different
    (tenant, user) pairs never share a key.
    """
    return f"{KEY_PREFIX}{_escape(tenant)}:{_escape(ysis_user)}"


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


class CachedLinkStore:
    """LinkStore that caches ``get`` results of another LinkStore in Redis.

    ``ttl`` and ``negative_ttl`` are the lifetimes in seconds of a cached link
    and of a cached "no link". A ``negative_ttl`` of 0 turns negative caching
    off. Each Redis command is abandoned after ``timeout`` seconds. ``list``
    and ``touch`` always go to the backend, so a cached link may show a
    ``last_used_at`` up to ``ttl`` seconds old.
    """

    def __init__(
        self,
        backend: LinkStore,
        redis: Redis,
        *,
        ttl: float = 60,
        negative_ttl: float = 5,
        timeout: float = 0.5,
        max_pending: int = 10_000,
        warning_interval: float = 60,
    ) -> None:
        _check_settings(ttl, negative_ttl, timeout, max_pending)
        self._backend = backend
        self._redis = redis
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._timeout = timeout
        self._max_pending = max_pending
        self._warning_interval = warning_interval
        self.cache_stats = CacheStats()
        # Failed deletes: key -> (token, monotonic deadline), oldest first.
        self._pending: dict[str, tuple[int, float]] = {}
        self._tokens = itertools.count()
        self._bypass_until = 0.0
        self._writes_started = 0
        self._writes_in_flight = 0
        self._last_warning: float | None = None
        self._suppressed_errors = 0
        self._failures_in_row = 0

    @property
    def pending_invalidations(self) -> int:
        """Number of cache deletes that failed and wait for a retry."""
        return len(self._pending)

    async def get(self, tenant: str, ysis_user: str) -> Link | None:
        """Return the link from Redis, or from the backend on a miss."""
        key = link_key(tenant, ysis_user)
        # A write that overlaps this call may commit after the backend read
        # below, so the value read must not be cached.
        # NOTE: only writes through this instance are seen here. A write by
        # another gateway process during the miss can leave the old value
        # cached for up to ttl seconds.
        may_fill = self._writes_in_flight == 0
        writes_before = self._writes_started
        try:
            hit = await self._lookup(key, tenant)
        except _SkipCache:
            hit, may_fill = None, False
        if hit is not None:
            self.cache_stats.count("hits")
            return hit.link
        self.cache_stats.count("misses")
        link = await self._backend.get(tenant, ysis_user)
        if may_fill and self._writes_started == writes_before:
            await self._fill(key, tenant, link)
        return link

    async def add(
        self, tenant: str, ysis_user: str, medimo_account: str, created_by: str
    ) -> Link:
        """Add the link in the backend, then delete its cache entry."""
        async with self._writing(tenant, ysis_user):
            return await self._backend.add(
                tenant, ysis_user, medimo_account, created_by
            )

    async def remove(self, tenant: str, ysis_user: str) -> Link | None:
        """Remove the link in the backend, then delete its cache entry."""
        async with self._writing(tenant, ysis_user):
            return await self._backend.remove(tenant, ysis_user)

    async def list(self, tenant: str | None = None) -> builtins.list[Link]:
        """Return the backend's links without caching them."""
        return await self._backend.list(tenant)

    async def touch(self, tenant: str, ysis_user: str, when: datetime) -> None:
        """Set ``last_used_at`` in the backend only."""
        await self._backend.touch(tenant, ysis_user, when)

    @contextlib.asynccontextmanager
    async def _writing(self, tenant: str, ysis_user: str) -> AsyncIterator[None]:
        self._writes_started += 1
        self._writes_in_flight += 1
        try:
            yield
        finally:
            # Also after a backend error, because the write may have committed
            # before the error reached us.
            try:
                await self._invalidate(link_key(tenant, ysis_user), tenant)
            finally:
                self._writes_in_flight -= 1

    async def _lookup(self, key: str, tenant: str) -> _Hit | None:
        if time.monotonic() < self._bypass_until:
            raise _SkipCache
        await self._retry_pending(tenant)
        if key in self._pending:
            raise _SkipCache
        raw = await self._run(tenant, "GET", lambda: self._redis.get(key))
        if key in self._pending:
            # A write failed to delete this key while GET was in flight.
            raise _SkipCache
        if raw is None:
            return None
        try:
            return _Hit(_decode(raw))
        except (ValueError, KeyError, TypeError) as error:
            self._record_error(tenant, "decoding a cached link", repr(error))
            return None

    async def _fill(self, key: str, tenant: str, link: Link | None) -> None:
        lifetime = self._ttl if link is not None else self._negative_ttl
        if lifetime <= 0:
            return
        value = _encode(link)
        milliseconds = max(1, round(lifetime * 1000))
        with contextlib.suppress(_SkipCache):
            await self._run(
                tenant, "SET", lambda: self._redis.set(key, value, px=milliseconds)
            )

    async def _invalidate(self, key: str, tenant: str) -> None:
        self._drop_expired_pending(time.monotonic())
        retried = dict(self._pending)
        keys = [key, *(pending for pending in retried if pending != key)]
        try:
            await self._run(tenant, "DEL", lambda: self._redis.delete(*keys))
        except _SkipCache:
            self._add_pending(key)
            return
        self._clear_pending(retried)

    async def _retry_pending(self, tenant: str) -> None:
        self._drop_expired_pending(time.monotonic())
        if not self._pending:
            return
        retried = dict(self._pending)
        await self._run(tenant, "DEL", lambda: self._redis.delete(*retried))
        self._clear_pending(retried)
        logger.info("applied %d pending link cache invalidations", len(retried))

    def _add_pending(self, key: str) -> None:
        now = time.monotonic()
        lifetime = max(self._ttl, self._negative_ttl)
        if key not in self._pending and len(self._pending) >= self._max_pending:
            self._start_bypass(now + lifetime)
            return
        self._pending.pop(key, None)
        self._pending[key] = (next(self._tokens), now + lifetime)

    def _start_bypass(self, until: float) -> None:
        if self._bypass_until <= time.monotonic():
            logger.warning(
                "link cache: the maximum of %d pending invalidations is reached, "
                "so links are read from the backend only for the next %.0f s",
                self._max_pending,
                until - time.monotonic(),
            )
        self._bypass_until = max(self._bypass_until, until)

    def _clear_pending(self, retried: dict[str, tuple[int, float]]) -> None:
        for key, entry in retried.items():
            # A newer failure for the same key has a new token and stays.
            if self._pending.get(key) == entry:
                del self._pending[key]

    def _drop_expired_pending(self, now: float) -> None:
        # Deadlines grow in insertion order, so only the front can be expired.
        while self._pending:
            key, (_, deadline) = next(iter(self._pending.items()))
            if deadline > now:
                return
            del self._pending[key]

    async def _run(
        self, tenant: str, command: str, call: Callable[[], Awaitable[_T]]
    ) -> _T:
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except TimeoutError as error:
            # asyncio.timeout raises a TimeoutError without a message.
            self._record_failure(tenant, command, f"no reply within {self._timeout} s")
            raise _SkipCache from error
        except _REDIS_ERRORS as error:
            self._record_failure(tenant, command, f"{type(error).__name__}: {error}")
            raise _SkipCache from error
        self._record_success()
        return result

    def _record_failure(self, tenant: str, command: str, description: str) -> None:
        self._failures_in_row += 1
        self._record_error(tenant, f"Redis {command}", description)

    def _record_error(self, tenant: str, operation: str, description: str) -> None:
        self.cache_stats.count("errors")
        now = time.monotonic()
        last = self._last_warning
        if last is not None and now - last < self._warning_interval:
            self._suppressed_errors += 1
            return
        logger.warning(
            "link cache: %s failed for tenant %r, serving links from the "
            "backend: %s (%d errors not logged since the previous warning)",
            operation,
            tenant,
            description,
            self._suppressed_errors,
        )
        self._last_warning = now
        self._suppressed_errors = 0

    def _record_success(self) -> None:
        if self._failures_in_row:
            logger.info(
                "link cache: Redis works again after %d failed operations",
                self._failures_in_row,
            )
            self._failures_in_row = 0


def _check_settings(
    ttl: float, negative_ttl: float, timeout: float, max_pending: int
) -> None:
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    if negative_ttl < 0:
        raise ValueError(f"negative_ttl must be 0 or more, got {negative_ttl}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")


def _encode(link: Link | None) -> str:
    if link is None:
        return NOT_FOUND_MARKER
    last_used = link.last_used_at.isoformat() if link.last_used_at else None
    return json.dumps(
        {
            "tenant": link.tenant,
            "ysis_user": link.ysis_user,
            "medimo_account": link.medimo_account,
            "created_at": link.created_at.isoformat(),
            "created_by": link.created_by,
            "last_used_at": last_used,
        }
    )


def _decode(raw: bytes | str) -> Link | None:
    data: Any = json.loads(raw)
    if data is None:
        return None
    last_used = data["last_used_at"]
    return Link(
        tenant=data["tenant"],
        ysis_user=data["ysis_user"],
        medimo_account=data["medimo_account"],
        created_at=datetime.fromisoformat(data["created_at"]),
        created_by=data["created_by"],
        last_used_at=None if last_used is None else datetime.fromisoformat(last_used),
    )
