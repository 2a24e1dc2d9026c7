"""Running the gateway: the runner, its TLS sites, and signal handling."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.app import create_app
from gateway.config.loader import Config
from gateway.errors import ListenError
from gateway.logs import server_logger
from gateway.protocol import handler_factory, handler_settings
from gateway.server import MutualTlsSite
from gateway.tls import server_context


@dataclass
class RunningGateway:
    """A started gateway: its runner, its sites and the TLS context in force."""

    runner: web.AppRunner
    sites: list[MutualTlsSite]
    context: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.sites[0].port

    async def stop(self) -> None:
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
    listen = config.gateway.listen
    chosen = listen.port if port is None else port
    for host in listen.host:
        site = MutualTlsSite(
            runner,
            host,
            chosen,
            lambda: running.context,
            handshake_timeout=config.gateway.tls.handshake_timeout,
            handlers=handlers,
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
    return running


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
