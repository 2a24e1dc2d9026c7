"""The application factory: routes, middlewares and the startup hook.

Engines, Redis clients and the upstream client session are created in the
startup hook, never at import time, so that forked workers and test event
loops each get their own.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import ClientSession, web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.loader import Config
from gateway.health import HealthMonitor, api_token_accepted, upstream_reachable
from gateway.inflight import TRACKER, RequestTracker
from gateway.metrics import Metrics
from gateway.flows import forms, launch, logout, notices, proxied
from gateway.flows.attempt_limits import AttemptLimiter
from gateway.links.cache import CachedLinkStore
from gateway.links.sql import SqlLinkStore
from gateway.logs import server_logger
from gateway.middleware.pipeline import MIDDLEWARES, add_security_headers
from gateway.pages import render
from gateway.redis_connect import connect
from gateway.session.announce import announce
from gateway.session.codec import CookieCodec
from gateway.session.pending import PendingCodec
from gateway.session.revocation import FeedTimes, RevocationList
from gateway.session.sessions import SessionCodec
from gateway.ssolog.entry import instance_name
from gateway.ssolog.store import SqlSsoLog
from gateway.ssolog.writer import SsoLogWriter
from gateway.session.subscriber import RevocationSubscriber
from gateway.state import GATEWAY, Gateway
from gateway.storage.database import create_engine, ping, require_current_schema
from gateway.storage.revocations import SqlRevocationStore
from gateway.upstream.api import MedimoApi
from gateway.upstream.proxy import Proxy, create_client_session

TENANT = "{tenant:[a-z0-9][a-z0-9-]{0,62}}"

#: Path under the API URL that the health checks request; any status below 500
#: counts as reachable, so a Medimo without this endpoint passes with 404.
#: The second check sends the API token and fails on 401 or 403.
HEALTH_PATH = "/gateway-api/v1/health"


def redis_client(url: str, timeout: float) -> Redis:
    # Short timeouts: with Redis down, a launch must fall back to SQL quickly.
    return connect(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def session_codecs(config: Config) -> tuple[SessionCodec, PendingCodec]:
    """Build the cookie codecs of ``session.keys``, at start and on each reload."""
    keys = [key.reveal() for key in config.gateway.session.keys]
    sessions = SessionCodec(CookieCodec(keys, "session"))
    pending = PendingCodec(CookieCodec(keys, "pending"), CookieCodec(keys, "csrf"))
    return sessions, pending


def build_proxy(config: Config, http: ClientSession, metrics: Metrics) -> Proxy:
    """Build the proxy, which signs with the first of ``upstream_signing_keys``."""
    settings = config.gateway
    return Proxy(
        http,
        settings.upstream.url,
        settings.upstream_signing_keys[0].reveal(),
        connect_timeout=settings.upstream.connect_timeout,
        read_timeout=settings.upstream.timeout,
        observe=metrics.upstream_latency.labels("proxy").observe,
    )


def build_attempts(config: Config, redis: Redis) -> AttemptLimiter:
    forms = config.gateway.forms
    return AttemptLimiter(
        redis, account=forms.account_attempts, client=forms.client_attempts
    )


def sso_log_writer(
    config: Config, engine: AsyncEngine, clock: Callable[[], float]
) -> SsoLogWriter:
    """Create the SSO log writer of this process; its tasks start separately."""
    settings = config.gateway.sso_log
    store = SqlSsoLog(engine, instance_name(settings.instance))
    return SsoLogWriter(
        store,
        queue_size=settings.queue_size,
        retention=settings.retention,
        now=lambda: dt.datetime.fromtimestamp(clock(), dt.timezone.utc),
    )


def pubsub_client(url: str, timeout: float) -> Redis:
    """Return a Redis client for the revocation subscription alone.

    It has no retries and no health check of its own, so that every failure
    reaches the subscriber at once, which reconnects with its own backoff and
    checks the connection with a PING whose reply it waits for.
    """
    return connect(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _revocations(
    config: Config, engine: AsyncEngine, redis: Redis, clock: Callable[[], float]
) -> RevocationList:
    settings = config.gateway
    feed = settings.revocations
    timeout = settings.redis.timeout
    return RevocationList(
        SqlRevocationStore(engine),
        lifetime=config.longest_session_lifetime,
        times=FeedTimes(
            poll_interval=feed.poll_interval,
            fallback_poll_interval=feed.fallback_poll_interval,
            purge_interval=feed.purge_interval,
        ),
        announce=lambda revocation: announce(redis, revocation.id, timeout),
        clock=clock,
    )


def _resources(config: Config, clock: Callable[[], float] | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        settings = config.gateway
        engine = create_engine(settings.database.url)
        try:
            # Raises SchemaOutdated or DatabaseUnavailable, which serve prints.
            await require_current_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        sso_log = sso_log_writer(config, engine, clock or time.time)
        redis = redis_client(settings.redis.url, settings.redis.timeout)
        http = create_client_session(settings.upstream.max_connections)
        # The API calls (password checks among them) get a pool of their own,
        # so that proxied requests that fill the proxy's pool, such as slow
        # uploads, cannot hold up logins.
        api_http = create_client_session(settings.upstream.max_connections)
        metrics = Metrics()
        sessions, pending = session_codecs(config)
        revocations = _revocations(config, engine, redis, clock or time.time)
        subscriber_redis = pubsub_client(settings.redis.url, settings.redis.timeout)
        subscriber = RevocationSubscriber(
            subscriber_redis,
            revocations,
            ping_interval=settings.revocations.ping_interval,
            reconnect_max_delay=settings.revocations.reconnect_max_delay,
        )
        links = CachedLinkStore(
            SqlLinkStore(engine),
            redis,
            ttl=settings.link_cache.ttl,
            negative_ttl=settings.link_cache.negative_ttl,
        )
        gateway = Gateway(
            config=config,
            sessions=sessions,
            pending=pending,
            links=links,
            revocations=revocations,
            redis=redis,
            engine=engine,
            http=http,
            api=MedimoApi(
                api_http,
                settings.upstream.api_base,
                settings.upstream.api_token.text(),
                settings.upstream.timeout,
                observe=metrics.upstream_latency.labels("api").observe,
            ),
            proxy=build_proxy(config, http, metrics),
            attempts=build_attempts(config, redis),
            metrics=metrics,
            health=HealthMonitor(
                {
                    "redis": redis.ping,
                    "database": lambda: ping(engine),
                    "upstream": lambda: upstream_reachable(
                        http, settings.upstream.api_base + HEALTH_PATH
                    ),
                    "upstream_api": lambda: api_token_accepted(
                        api_http,
                        settings.upstream.api_base + HEALTH_PATH,
                        settings.upstream.api_token.text(),
                    ),
                },
                metrics,
                interval=settings.admin.health_interval,
            ),
            sso_log=sso_log,
        )
        if clock is not None:
            gateway.clock = clock
        metrics.watch(lambda: gateway.config)
        metrics.record_config(config)
        links.cache_stats.listener = metrics.count_link_cache
        app[GATEWAY] = gateway
        await revocations.start()
        await gateway.health.start()
        await sso_log.start()
        subscriber.start()
        server_logger.info(
            "gateway started",
            extra={
                "event": "started",
                "config_hash": config.digest[:16],
                "tenants": len(config.tenants),
                "instance": sso_log.store.instance,
            },
        )
        try:
            yield
        finally:
            await gateway.health.stop()
            await subscriber.stop()
            await revocations.stop()
            # aiohttp ends the requests before the cleanup hooks run, so no
            # entry joins the queue after this flush.
            await sso_log.stop()
            await http.close()
            await api_http.close()
            await subscriber_redis.aclose()
            await redis.aclose()
            await engine.dispose()
            server_logger.info(
                "connection pools closed", extra={"event": "pools_closed"}
            )

    return resources


def create_app(config: Config, *, clock: Callable[[], float] | None = None) -> web.Application:
    """Build the gateway application for one configuration."""
    tracker = RequestTracker()
    app = web.Application(
        middlewares=[tracker.middleware, *MIDDLEWARES],
        client_max_size=config.gateway.limits.max_body_size,
    )
    app[TRACKER] = tracker
    render.setup(app)
    app.cleanup_ctx.append(_resources(config, clock))
    app.on_response_prepare.append(add_security_headers)

    base = f"/sso/ysis/{TENANT}"
    # The resource names are the route classes of the requests metric.
    launches = app.router.add_resource(base, name="launch")
    launches.add_route("GET", launch.launch)
    launches.add_route("POST", launch.launch)
    link = app.router.add_resource(f"{base}/link", name="link_form")
    link.add_route("GET", forms.link_form)
    link.add_route("POST", forms.link_submit)
    confirm = app.router.add_resource(f"{base}/confirm", name="confirm_form")
    confirm.add_route("GET", forms.confirm_form)
    confirm.add_route("POST", forms.confirm_submit)
    app.router.add_resource("/sso/melding/{kind}", name="notice").add_route(
        "GET", notices.notice
    )
    app.router.add_resource("/sso/logout", name="logout").add_route(
        "POST", logout.logout
    )
    app.router.add_resource(logout.LOGGED_OUT_PATH, name="logged_out").add_route(
        "GET", logout.logged_out
    )
    app.router.add_resource("/{path:.*}", name="proxied").add_route("*", proxied.proxied)
    return app
