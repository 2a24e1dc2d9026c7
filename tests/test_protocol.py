"""The parts of gateway.protocol that need no connection: the body clock,
the choice of status and the rate-limited rejection log."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, LineTooLong

from gateway.protocol import (
    BodyClock,
    BodyTimeout,
    HeadTimeout,
    RejectionLog,
    rejection_status,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def clock(min_rate: int = 0) -> BodyClock:
    return BodyClock(timeout=10.0, min_rate=min_rate, started=0.0, last_byte=0.0)


# --- BodyClock ---------------------------------------------------------------------


def test_body_clock_pause_overdue() -> None:
    body = clock()
    body.add(100, 5.0)

    assert body.overdue(15.0)


def test_body_clock_steady_not_overdue() -> None:
    body = clock(min_rate=10)
    for second in range(1, 30):
        body.add(20, float(second))

    assert not body.overdue(29.5)


def test_body_clock_slow_overdue() -> None:
    body = clock(min_rate=100)
    for second in range(1, 12):
        body.add(10, float(second))

    assert body.overdue(11.5)


def test_body_clock_slow_allowed_before_timeout() -> None:
    body = clock(min_rate=100)
    body.add(10, 9.0)

    assert not body.overdue(9.5)


def test_body_clock_shift_skips_paused_time() -> None:
    body = clock()
    body.add(100, 5.0)
    body.shift(20.0)

    assert not body.overdue(30.0)


def test_body_clock_next_check_at_pause_end() -> None:
    body = clock()
    body.add(100, 5.0)

    assert body.next_check(6.0) == 15.0


def test_body_clock_next_check_at_rate_end() -> None:
    body = clock(min_rate=100)
    body.add(1500, 9.0)

    assert body.next_check(9.5) == 15.0


def test_body_clock_next_check_after_now() -> None:
    body = clock()

    assert body.next_check(50.0) > 50.0


# --- rejection_status --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "long_line", "status"),
    [
        pytest.param(BadStatusLine("x"), False, 400, id="bad-line"),
        pytest.param(LineTooLong(b"x", 10), True, 414, id="long-request-line"),
        pytest.param(LineTooLong(b"x", 10), False, 431, id="long-field"),
        pytest.param(
            BadHttpMessage("Too many headers received"), False, 431, id="headers"
        ),
        pytest.param(
            BadHttpMessage("Too many trailers received"), False, 431, id="trailers"
        ),
        pytest.param(HeadTimeout(), False, 408, id="head-timeout"),
        pytest.param(BodyTimeout(), False, 408, id="body-timeout"),
    ],
)
def test_rejection_status(error: BaseException, long_line: bool, status: int) -> None:
    assert rejection_status(error, long_line) == status


# --- RejectionLog ------------------------------------------------------------------


def rejected(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


async def test_rejection_log_first_lines_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.access")
    log = RejectionLog(per_window=3, window=60.0, clock=FakeClock())

    for _ in range(10):
        log.record("127.0.0.1:1", 400, BadStatusLine("x"))

    assert len(rejected(caplog, "request_rejected")) == 3


async def test_rejection_log_summary_at_window_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.access")
    fake = FakeClock()
    log = RejectionLog(per_window=3, window=0.2, clock=fake)
    for _ in range(10):
        log.record("127.0.0.1:1", 400, BadStatusLine("x"))

    fake.now += 0.2
    await asyncio.sleep(0.3)

    (summary,) = rejected(caplog, "request_rejected_summary")
    assert summary.count == 7  # type: ignore[attr-defined]
    assert summary.errors == {"BadStatusLine": 7}  # type: ignore[attr-defined]


async def test_rejection_log_new_window_logs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.access")
    fake = FakeClock()
    log = RejectionLog(per_window=2, window=60.0, clock=fake)
    for _ in range(5):
        log.record("127.0.0.1:1", 400, BadStatusLine("x"))

    fake.now += 61.0
    log.record("127.0.0.1:1", 400, BadStatusLine("x"))

    assert len(rejected(caplog, "request_rejected")) == 3
    assert len(rejected(caplog, "request_rejected_summary")) == 1
