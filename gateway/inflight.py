"""Requests in progress, counted and cancelled for a graceful shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.logs import server_logger
from gateway.state import GATEWAY

#: Seconds to wait for cancelled request handlers to end before cancelling
#: them again, and how many times to cancel. A WebSocket relay, for one,
#: awaits the close handshake of both sockets when cancelled, and a second
#: cancellation cuts that short.
CANCEL_WAIT = 1.0
CANCEL_ROUNDS = 2

#: Upper bound, in seconds, of the time ``cancel_after`` takes past its
#: timeout.
CANCEL_BOUND = CANCEL_WAIT * CANCEL_ROUNDS


class RequestTracker:
    """Tracks the requests in progress, and cancels them when a shutdown's
    time is up.

    Its middleware runs first, so it tracks every request that reaches the
    application, including ones that a later middleware rejects. Each
    request runs in a task of its own (aiohttp 3.14 starts one per request),
    which is the task the middleware records and a shutdown cancels.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        #: Requests that ended in a cancellation after the shutdown's
        #: timeout: those it cancelled, and any whose client went away at
        #: that moment.
        self.cancelled = 0
        self._cancelling = False

    @property
    def active(self) -> int:
        """Number of requests in progress."""
        return len(self._tasks)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        gauge = request.app[GATEWAY].metrics.requests_in_progress
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        gauge.inc()
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if self._cancelling:
                self.cancelled += 1
            raise
        finally:
            self._tasks.discard(task)
            gauge.dec()

    async def cancel_after(self, timeout: float) -> None:
        """Let the requests in progress run for ``timeout`` seconds, then
        cancel those still running and wait for them to end.

        Returns at most ``CANCEL_BOUND`` seconds after the timeout. A
        request that started meanwhile is cancelled too.
        """
        await asyncio.sleep(timeout)
        self._cancelling = True
        for _ in range(CANCEL_ROUNDS):
            tasks = set(self._tasks)
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
        if self._tasks:
            server_logger.error(
                "requests still running after %d cancellations",
                CANCEL_ROUNDS,
                extra={"event": "requests_not_cancelled", "requests": len(self._tasks)},
            )


TRACKER = web.AppKey("tracker", RequestTracker)
