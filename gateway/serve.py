"""Running the gateway: the runner, its TLS sites, reloads and shutdown.

``serve`` runs one process: SIGHUP or a changed file reloads the
configuration (see ``gateway.reload``), and SIGTERM or SIGINT stops it
gracefully. With ``--workers`` each worker process runs ``serve`` on
listening sockets and a TLS context that its parent created before the fork
(see ``gateway.workers``).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.admin import create_admin_app
from gateway.app import create_app
from gateway.config.loader import Config
from gateway.errors import ListenError
from gateway.inflight import CANCEL_BOUND, TRACKER
from gateway.logs import server_logger
from gateway.protocol import handler_factory, handler_settings
from gateway.reload import Reloader
from gateway.server import MutualTlsSite
from gateway.state import GATEWAY, Gateway
from gateway.tasks import finish
from gateway.tls import server_context
from gateway.watch import Snapshot, snapshot

#: Seconds aiohttp waits for admin requests in progress at a stop. Admin
#: requests are short probes and scrapes, so aiohttp 3.14 may wait this
#: long twice before it cancels them.
ADMIN_SHUTDOWN_TIMEOUT = 1.0


@dataclass
class Listeners:
    """Listening sockets bound before any event loop, to share across a fork."""

    gateway: list[socket.socket] = field(default_factory=list)
    admin: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (*self.gateway, *self.admin):
            sock.close()


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

    @property
    def gateway(self) -> Gateway:
        return self.runner.app[GATEWAY]

    async def stop(self) -> None:
        """Stop gracefully within the configured ``shutdown_timeout``."""
        await self.shutdown(self.gateway.config.gateway.shutdown_timeout)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting connections, close idle ones at once, give requests
        in progress ``timeout`` seconds, cancel the rest, then close the pools.
        """
        tracker = self.runner.app[TRACKER]
        server_logger.info(
            "stopping",
            extra={
                "event": "stopping",
                "requests_in_progress": tracker.active,
                "shutdown_timeout": timeout,
            },
        )
        started = time.monotonic()
        # aiohttp waits for the requests in progress itself, but it cancels
        # them only after waiting up to its shutdown timeout twice (aiohttp
        # 3.14), so the tracker cancels them when ``timeout`` is up.
        deadline = asyncio.create_task(
            tracker.cancel_after(timeout), name="shutdown-deadline"
        )
        # NOTE: aiohttp 3.14 reads its own wait from this private attribute.
        # It is set past the tracker's deadline so that aiohttp never cuts a
        # request short, and set here because a reload may change timeout.
        self.runner._shutdown_timeout = aiohttp_wait(timeout)
        try:
            # cleanup() stops the sites, closes idle keep-alive connections,
            # waits for the requests in progress and closes their
            # connections, and then runs the app's cleanup, which writes the
            # SSO log queue and closes the pools.
            await self.runner.cleanup()
        finally:
            await finish(deadline, server_logger)
        if self.admin is not None:
            await self.admin.cleanup()
        server_logger.info(
            "stopped",
            extra={
                "event": "stopped",
                "requests_cancelled": tracker.cancelled,
                "seconds": round(time.monotonic() - started, 3),
            },
        )


def aiohttp_wait(timeout: float) -> float:
    """Return the shutdown timeout for aiohttp's runner: a backstop that ends
    a second after the tracker's deadline and its cancellations.

    aiohttp 3.14 takes 0 as no limit, so the backstop is never 0. NOTE: a
    handler that outlives the tracker's cancellations delays the stop until
    aiohttp has waited this long twice, and only then is it cancelled again
    and its connection closed.
    """
    return timeout + CANCEL_BOUND + 1.0


async def start(
    config: Config,
    *,
    port: int | None = None,
    clock: Callable[[], float] | None = None,
    listeners: Listeners | None = None,
    context: ssl.SSLContext | None = None,
) -> RunningGateway:
    """Start the gateway on the configured addresses (or ``port``).

    ``listeners`` and ``context``, when given, were made before a fork and
    are used instead of binding and building new ones.
    """
    app = create_app(config, clock=clock)
    limits = config.gateway.limits
    # A client that disconnects cancels its handler, and so its upstream
    # request. The limits on what a client may send are settings of each
    # connection's request handler.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=aiohttp_wait(config.gateway.shutdown_timeout),
        **handler_settings(limits),
    )
    await runner.setup()
    assert runner.server is not None
    handlers = handler_factory(runner.server, limits)
    running = RunningGateway(runner, [], context or server_context(config))
    failures = app[GATEWAY].metrics.tls_handshake_failures

    def site_for(host: str, chosen: int, sock: socket.socket | None) -> MutualTlsSite:
        return MutualTlsSite(
            runner,
            host,
            chosen,
            lambda: running.context,
            handshake_timeout=config.gateway.tls.handshake_timeout,
            on_handshake_failed=lambda reason: failures.inc(),
            handlers=handlers,
            balancers=lambda: app[GATEWAY].config.gateway.balancers,
            sock=sock,
        )

    if listeners is not None:
        for sock in listeners.gateway:
            host, bound = sock.getsockname()[:2]
            site = site_for(host, bound, sock)
            await site.start()
            running.sites.append(site)
    else:
        await _bind_sites(running, config, port, site_for)
    for site in running.sites:
        server_logger.info("listening", extra={"event": "listening", "url": site.name})
    if config.gateway.admin.enabled:
        await _start_admin(running, config, listeners)
    return running


async def _bind_sites(
    running: RunningGateway,
    config: Config,
    port: int | None,
    site_for: Callable[[str, int, socket.socket | None], MutualTlsSite],
) -> None:
    listen = config.gateway.listen
    chosen = listen.port if port is None else port
    for host in listen.host:
        site = site_for(host, chosen, None)
        try:
            await site.start()
        except OSError as exc:
            await running.runner.cleanup()
            raise ListenError(
                f"cannot listen on {site.name}: {exc.strerror or exc}: stop the "
                "program that uses this port, or choose another port"
            ) from exc
        running.sites.append(site)
        # With port 0, every further address takes the port the first one got.
        chosen = site.port


async def _start_admin(
    running: RunningGateway, config: Config, listeners: Listeners | None
) -> None:
    """Start the plain-HTTP admin listener of a started gateway."""
    gateway = running.gateway
    admin = web.AppRunner(
        create_admin_app(
            gateway.health, gateway.metrics, config.gateway.admin.hostnames
        ),
        access_log=None,
        shutdown_timeout=ADMIN_SHUTDOWN_TIMEOUT,
    )
    await admin.setup()
    running.admin = admin
    if listeners is not None:
        for sock in listeners.admin:
            host, bound = sock.getsockname()[:2]
            await web.SockSite(admin, sock).start()
            _log_admin(host, bound)
            running.admin_port = bound
        return
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
        _log_admin(host, chosen)
    running.admin_port = chosen


def _log_admin(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    server_logger.info(
        "admin listening", extra={"event": "listening", "url": f"http://{shown}:{port}"}
    )


async def serve(
    config: Config,
    *,
    baseline: Snapshot | None = None,
    listeners: Listeners | None = None,
    context: ssl.SSLContext | None = None,
    prepare_context: Callable[[ssl.SSLContext], None] | None = None,
    watch: bool = True,
) -> None:
    """Run until SIGTERM or SIGINT, reloading on SIGHUP and changed files.

    ``baseline`` is the snapshot of the watched files taken before ``config``
    was loaded. ``watch`` False leaves the polling to a parent process.
    """
    if baseline is None:
        baseline = await asyncio.to_thread(snapshot, config.path)
    running = await start(config, listeners=listeners, context=context)
    reloader = Reloader(running, baseline, prepare_context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A worker's SIGHUP comes from its parent, whose workers_reload line
    # names the cause.
    trigger = "SIGHUP" if watch else "parent"
    loop.add_signal_handler(signal.SIGHUP, reloader.request, trigger)
    tasks = [asyncio.create_task(reloader.run(), name="config-reload")]
    if watch:
        tasks.append(asyncio.create_task(reloader.watch(), name="config-watch"))
    try:
        await stop.wait()
    finally:
        # A reload during the shutdown would be lost work; SIGHUP's default
        # action, ending the process at once, would cut the requests off.
        loop.add_signal_handler(signal.SIGHUP, _ignore_reload)
        for task in tasks:
            task.cancel()
        # The tasks' own CancelledError is expected here; a cancellation of
        # this coroutine still propagates out of gather.
        await asyncio.gather(*tasks, return_exceptions=True)
        await running.stop()


def _ignore_reload() -> None:
    server_logger.info(
        "SIGHUP ignored: the gateway is stopping", extra={"event": "reload_ignored"}
    )
