"""Health of the gateway's dependencies: Redis, the database and upstream.

A background task checks all three every ``interval`` seconds, sets the
``sso_gateway_dependency_up`` gauges and logs each change, so that an
operator sees when the gateway entered or left a degraded mode. ``/readyz``
asks for a fresh check, at most once a second.

The instance can serve while upstream answers: with Redis down, linked
launches come from the database and sessions keep working; with the
database down, cached links still log in. Only without upstream is nothing
left to serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from gateway.logs import server_logger
from gateway.metrics import Metrics

DEPENDENCIES = ("redis", "database", "upstream", "upstream_api")

#: What each dependency's absence means, for /readyz and the log.
DEGRADED_MODES = {
    "redis": "password forms and signed launches answer 503; linked launches "
    "read the database; revocations are read from the database",
    "database": "new links answer 503; cached links still log in",
    "upstream": "proxied requests and password checks fail with 502 or 504",
    "upstream_api": "the upstream API rejects upstream.api_token: the link and "
    "confirm forms and client lookups answer 502; linked launches and proxied "
    "requests still work",
}

#: Seconds a fresh /readyz result is reused, so that probes cannot flood.
READY_REUSE = 1.0

Check = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Health:
    """The outcome of one round of checks."""

    up: dict[str, bool]
    checked_at: float

    @property
    def ready(self) -> bool:
        return self.up["upstream"]

    @property
    def degraded(self) -> list[str]:
        return [name for name in DEPENDENCIES if not self.up[name]]

    def report(self) -> dict[str, object]:
        status = "ok" if not self.degraded else ("degraded" if self.ready else "unavailable")
        return {
            "status": status,
            "checks": {name: "up" if self.up[name] else "down" for name in DEPENDENCIES},
            "degraded": {name: DEGRADED_MODES[name] for name in self.degraded},
        }


class HealthMonitor:
    """Runs the dependency checks and keeps their last outcome.

    ``checks`` maps each dependency to a coroutine function that raises when
    the dependency is unreachable; each gets ``timeout`` seconds.
    """

    def __init__(
        self,
        checks: dict[str, Check],
        metrics: Metrics,
        *,
        interval: float = 10.0,
        timeout: float = 2.0,
    ) -> None:
        self._checks = checks
        self._metrics = metrics
        self._interval = interval
        self._timeout = timeout
        self._last: Health | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Health:
        """Check every dependency now, or reuse a result under a second old."""
        async with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.checked_at < READY_REUSE:
                return last
            results = await asyncio.gather(*(self._probe(name) for name in DEPENDENCIES))
            health = Health(dict(zip(DEPENDENCIES, results)), time.monotonic())
            self._record(health)
            return health

    async def _probe(self, name: str) -> bool:
        try:
            await asyncio.wait_for(self._checks[name](), self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - any failure means the dependency is down
            return False
        return True

    def _record(self, health: Health) -> None:
        previous = self._last
        self._last = health
        for name, up in health.up.items():
            self._metrics.up.labels(name).set(1 if up else 0)
            was_up = previous.up[name] if previous is not None else True
            if up and not was_up:
                server_logger.warning(
                    "dependency recovered", extra={"event": "dependency_up", "dependency": name}
                )
            elif not up and was_up:
                server_logger.error(
                    "dependency unavailable",
                    extra={
                        "event": "dependency_down",
                        "dependency": name,
                        "degraded_mode": DEGRADED_MODES[name],
                    },
                )

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()


async def upstream_reachable(session: aiohttp.ClientSession, url: str) -> None:
    """Raise unless upstream answers ``url`` with any status below 500."""
    timeout = aiohttp.ClientTimeout(total=None)
    async with session.get(url, allow_redirects=False, timeout=timeout) as response:
        if response.status >= 500:
            raise ConnectionError(f"upstream answered {response.status}")


async def api_token_accepted(
    session: aiohttp.ClientSession, url: str, token: str
) -> None:
    """Raise if the upstream API responds to ``url`` and ``token`` with 401 or 403.

    An unreachable or failing upstream passes, because the ``upstream``
    check reports it, and this check names only a refused token.
    """
    timeout = aiohttp.ClientTimeout(total=None)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with session.get(
            url, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            status = response.status
    except (aiohttp.ClientError, OSError):
        return
    if status in (401, 403):
        raise PermissionError(f"upstream API rejected the token with {status}")
