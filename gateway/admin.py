"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics``.

It is plain HTTP on its own address, loopback by default, because a
Prometheus scraper or a load balancer's probe presents no client
certificate. Nothing on it reveals a session, a link or a secret.
"""

from __future__ import annotations

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


def create_admin_app(monitor: HealthMonitor, registry: Metrics) -> web.Application:
    app = web.Application()
    app[MONITOR] = monitor
    app[METRICS] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
