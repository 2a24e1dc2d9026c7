"""Requests in progress, counted for a graceful shutdown and its log lines."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.state import GATEWAY


class RequestTracker:
    """Counts the requests in progress, and those a shutdown cancelled.

    Its middleware runs first, so it counts every request that reaches the
    application, including ones that a later middleware rejects.
    """

    def __init__(self) -> None:
        self.active = 0
        #: Requests cancelled after ``stopping`` was set: the shutdown's
        #: time ran out on them, or their client went away meanwhile.
        self.cancelled = 0
        self.stopping = False

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        gauge = request.app[GATEWAY].metrics.requests_in_progress
        self.active += 1
        gauge.inc()
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if self.stopping:
                self.cancelled += 1
            raise
        finally:
            self.active -= 1
            gauge.dec()


TRACKER = web.AppKey("tracker", RequestTracker)
