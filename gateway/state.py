"""The app-wide objects of a running gateway, created in the startup hook."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.loader import Config, Tenant
from gateway.flows.attempt_limits import AttemptLimiter
from gateway.health import HealthMonitor
from gateway.links.store import LinkStore
from gateway.metrics import Metrics
from gateway.middleware.pins import PinCheck
from gateway.session.pending import PendingCodec
from gateway.session.revocation import RevocationList
from gateway.session.sessions import Lifetimes, SessionCodec
from gateway.ssolog.writer import SsoLogWriter
from gateway.upstream.api import MedimoApi
from gateway.upstream.proxy import Proxy


@dataclass
class Gateway:
    """Everything a handler needs, reachable as ``request.app[GATEWAY]``."""

    config: Config
    sessions: SessionCodec
    pending: PendingCodec
    links: LinkStore
    revocations: RevocationList
    redis: Redis
    engine: AsyncEngine
    http: aiohttp.ClientSession
    api: MedimoApi
    proxy: Proxy
    attempts: AttemptLimiter
    metrics: Metrics
    health: HealthMonitor
    sso_log: SsoLogWriter
    clock: Callable[[], float] = field(default=time.time)
    _pins: PinCheck | None = field(default=None, init=False, repr=False)

    @property
    def pins(self) -> PinCheck:
        """The certificate check of the configuration in force."""
        if self._pins is None or self._pins.config is not self.config:
            self._pins = PinCheck(self.config)
        return self._pins

    def utcnow(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def tenant(self, name: str) -> Tenant | None:
        return self.config.tenants.get(name)

    def lifetimes(self, tenant: Tenant) -> Lifetimes:
        defaults = self.config.gateway.session
        overrides = tenant.config.session
        return Lifetimes(
            lifetime=overrides.lifetime or defaults.lifetime,
            idle_timeout=overrides.idle_timeout or defaults.idle_timeout,
            refresh_after=defaults.refresh_after,
        )


GATEWAY = web.AppKey("gateway", Gateway)
