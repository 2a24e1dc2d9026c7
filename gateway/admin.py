"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics``.

It is plain HTTP on its own address, loopback by default, because a
Prometheus scraper or a load balancer's probe presents no client
certificate. Nothing on it reveals a session, a link or a secret.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.health import HealthMonitor
from gateway.metrics import Metrics

MONITOR = web.AppKey("monitor", HealthMonitor)
METRICS = web.AppKey("metrics", Metrics)


async def healthz(request: web.Request) -> web.Response:
    """Answer 200 while the process runs its event loop."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 while the instance can serve, naming degraded parts; else 503."""
    health = await request.app[MONITOR].check()
    return web.json_response(health.report(), status=200 if health.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: A ``Host`` value: a bracketed IPv6 address or a name, then an optional port.
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


def _host_name(host: str) -> str | None:
    """Return the name or address of a ``Host`` value, or None if malformed.

    A trailing dot is dropped once, and names are compared in lower case.
    """
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    if match.group(1) is not None:
        return match.group(1)
    return match.group(2).lower().removesuffix(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_check(names: Collection[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Return a middleware that responds 421 to a ``Host`` the listener does not serve.

    SECURITY: a web page in a browser on this machine could otherwise point
    a name of its own at 127.0.0.1 (DNS rebinding) and read the responses.
    """
    allowed = {"localhost", *names}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = request.headers.getall("Host", [])
        name = _host_name(hosts[0]) if len(hosts) == 1 else None
        # An absolute-form target names a host of its own, so only the
        # origin form ("/healthz") is served.
        origin_form = request.raw_path.startswith("/")
        if name is None or not origin_form or not (name in allowed or _is_address(name)):
            return web.Response(
                status=421,
                text="421: name this listener by IP address, localhost or admin.hostnames\n",
            )
        return await handler(request)

    return middleware


def create_admin_app(
    monitor: HealthMonitor, registry: Metrics, hostnames: Collection[str] = ()
) -> web.Application:
    app = web.Application(middlewares=[host_check(hostnames)])
    app[MONITOR] = monitor
    app[METRICS] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
