"""Running the gateway: the runner, its TLS sites, and signal handling."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.admin import create_admin_app
from gateway.app import create_app
from gateway.config.loader import Config
from gateway.errors import ListenError
from gateway.logs import server_logger
from gateway.protocol import handler_factory, handler_settings
from gateway.server import MutualTlsSite
from gateway.state import GATEWAY
from gateway.tls import server_context


@dataclass
class RunningGateway:
    """A started gateway: its runner, its sites and the TLS context in force."""

    runner: web.AppRunner
    sites: list[MutualTlsSite]
    context: ssl.SSLContext
    admin: web.AppRunner | None = None
    admin_port: int | None = None

    @property
    def port(self) -> int:
        return self.sites[0].port

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.cleanup()
        await self.runner.cleanup()


async def start(
    config: Config,
    *,
    port: int | None = None,
    clock: Callable[[], float] | None = None,
) -> RunningGateway:
    """Start the gateway on the configured addresses (or ``port``)."""
    app = create_app(config, clock=clock)
    limits = config.gateway.limits
    # A client that disconnects cancels its handler, and so its upstream
    # request. The limits on what a client may send are settings of each
    # connection's request handler.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        **handler_settings(limits),
    )
    await runner.setup()
    assert runner.server is not None
    handlers = handler_factory(runner.server, limits)
    running = RunningGateway(runner, [], server_context(config))
    failures = app[GATEWAY].metrics.tls_handshake_failures
    listen = config.gateway.listen
    chosen = listen.port if port is None else port
    for host in listen.host:
        site = MutualTlsSite(
            runner,
            host,
            chosen,
            lambda: running.context,
            handshake_timeout=config.gateway.tls.handshake_timeout,
            on_handshake_failed=lambda reason: failures.inc(),
            handlers=handlers,
            balancers=config.gateway.balancers,
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(
                f"cannot listen on {site.name}: {exc.strerror or exc}: stop the "
                "program that uses this port, or choose another port"
            ) from exc
        running.sites.append(site)
        # With port 0, every further address takes the port the first one got.
        chosen = site.port
    for site in running.sites:
        server_logger.info("listening", extra={"event": "listening", "url": site.name})
    if config.gateway.admin.enabled:
        await _start_admin(running, config)
    return running


async def _start_admin(running: RunningGateway, config: Config) -> None:
    """Start the plain-HTTP admin listener of a started gateway."""
    gateway = running.runner.app[GATEWAY]
    admin = web.AppRunner(create_admin_app(gateway.health, gateway.metrics), access_log=None)
    await admin.setup()
    running.admin = admin
    settings = config.gateway.admin
    chosen = settings.port
    for host in settings.host:
        site = web.TCPSite(admin, host, chosen, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await running.stop()
            raise ListenError(
                f"cannot listen on admin address {host}:{chosen}: "
                f"{exc.strerror or exc}: change admin.port or admin.host"
            ) from exc
        sockets = site._server.sockets if site._server else ()  # type: ignore[union-attr]
        chosen = sockets[0].getsockname()[1] if sockets else chosen
        server_logger.info(
            "admin listening", extra={"event": "listening", "url": f"http://{host}:{chosen}"}
        )
    running.admin_port = chosen


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = await start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server_logger.info("stopping", extra={"event": "stopping"})
        await running.stop()
