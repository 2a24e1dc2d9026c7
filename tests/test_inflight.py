"""RequestTracker on its own: counting requests and cancelling them when a
shutdown's time is up. The served tests in tests/ops/test_shutdown.py cover
the whole stop, and these also cover handlers that resist cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

import gateway.inflight
from gateway.inflight import RequestTracker
from gateway.state import GATEWAY

#: Seconds between two cancellations in these tests.
FAST_CANCEL_WAIT = 0.5


class FakeGauge:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


@pytest.fixture(autouse=True)
def fast_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.inflight, "CANCEL_WAIT", FAST_CANCEL_WAIT)


def fake_request(gauge: FakeGauge) -> Any:
    app = {
        GATEWAY: SimpleNamespace(metrics=SimpleNamespace(requests_in_progress=gauge))
    }
    return SimpleNamespace(app=app)


async def start_request(
    tracker: RequestTracker, gauge: FakeGauge, handler: Any
) -> asyncio.Task[web.StreamResponse]:
    """Run ``handler`` through the tracker's middleware in a task of its own,
    as aiohttp runs each request."""
    task = asyncio.create_task(tracker.middleware(fake_request(gauge), handler))
    await asyncio.sleep(0)
    return task


async def quick(request: Any) -> web.StreamResponse:
    await asyncio.sleep(0.05)
    return web.Response(text="ok")


async def endless(request: Any) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def test_tracker_counts_active() -> None:
    tracker = RequestTracker()
    gauge = FakeGauge()

    task = await start_request(tracker, gauge, quick)

    assert tracker.active == 1
    assert gauge.value == 1
    await task
    assert tracker.active == 0
    assert gauge.value == 0


async def test_finished_request_not_cancelled() -> None:
    tracker = RequestTracker()
    gauge = FakeGauge()
    task = await start_request(tracker, gauge, quick)

    await tracker.cancel_after(0.3)

    assert (await task).status == 200
    assert tracker.cancelled == 0


async def test_request_cancelled_at_timeout() -> None:
    tracker = RequestTracker()
    gauge = FakeGauge()
    task = await start_request(tracker, gauge, endless)

    started = time.monotonic()
    await tracker.cancel_after(0.2)
    elapsed = time.monotonic() - started

    assert task.cancelled()
    assert tracker.cancelled == 1
    assert tracker.active == 0
    assert gauge.value == 0
    assert 0.2 <= elapsed < 0.2 + FAST_CANCEL_WAIT


async def test_zero_timeout_cancels_at_once() -> None:
    tracker = RequestTracker()
    task = await start_request(tracker, FakeGauge(), endless)

    await tracker.cancel_after(0)

    assert task.cancelled()
    assert tracker.cancelled == 1


async def test_second_cancellation_ends_slow_cleanup() -> None:
    # Like a WebSocket relay whose close handshake does not finish.
    async def slow_cleanup(request: Any) -> web.StreamResponse:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    tracker = RequestTracker()
    task = await start_request(tracker, FakeGauge(), slow_cleanup)

    await tracker.cancel_after(0)

    assert task.cancelled()
    assert tracker.cancelled == 1


async def test_request_ignoring_cancellation_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn(request: Any) -> web.StreamResponse:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return web.Response(text="late")

    tracker = RequestTracker()
    task = await start_request(tracker, FakeGauge(), stubborn)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="gateway.server"):
        await tracker.cancel_after(0)
    elapsed = time.monotonic() - started
    release.set()
    await task

    assert elapsed < gateway.inflight.CANCEL_ROUNDS * FAST_CANCEL_WAIT + 0.5
    events = [getattr(record, "event", None) for record in caplog.records]
    assert events == ["requests_not_cancelled"]
    assert tracker.cancelled == 0
