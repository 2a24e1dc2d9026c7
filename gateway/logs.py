"""The gateway's named loggers and its JSON log format.

Every log line is one JSON object with the message, the logger, the level and
the structured fields passed through ``extra`` (request ID, tenant, peer,
event). Auth outcomes use a closed set of event names, so that operators can
count them. Nothing logged here may hold a secret, a cookie value or a BSN.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

access_logger = logging.getLogger("gateway.access")
auth_logger = logging.getLogger("gateway.auth")
tls_logger = logging.getLogger("gateway.tls")
upstream_logger = logging.getLogger("gateway.upstream")
server_logger = logging.getLogger("gateway.server")
revocation_logger = logging.getLogger("gateway.revocations")

#: Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            # The process ID distinguishes the workers of serve --workers.
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "info", stream: Any = None) -> None:
    """Send every ``gateway`` log line to ``stream`` (stderr) as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("gateway").setLevel(level.upper())
    # aiohttp's own access log is replaced by gateway.access.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class LogThrottle:
    """Lets a repeated log line through at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._last: float | None = None
        self._suppressed = 0

    def allow(self) -> int | None:
        """Return how many lines were held back since the last one, or None.

        None means that this line is held back too, because the last one went
        out less than ``interval`` seconds ago.
        """
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            self._suppressed += 1
            return None
        held_back, self._suppressed, self._last = self._suppressed, 0, now
        return held_back
def describe_error(error: BaseException) -> str:
    """Return an error's type and text for a log line."""
    text = str(error)
    if not text and isinstance(error, TimeoutError):
        # asyncio.timeout raises a TimeoutError without a message.
        return "TimeoutError: timed out"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class FailureLog:
    """Logs a run of failures of one background job without flooding the log.

    The first failure of a run is logged, then at most one line per
    ``interval`` seconds with the number of failures since the previous line.
    The first success after a run logs the recovery. Every line names the
    event and the error, so nothing caught goes unreported.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._failures = 0
        self._unlogged = 0
        self._started: float | None = None
        self._last_line = 0.0

    @property
    def failing(self) -> bool:
        """Tell whether the most recent outcome was a failure."""
        return self._failures > 0

    def failure(self, message: str, *, event: str, error: str, **fields: Any) -> None:
        now = self._clock()
        self._failures += 1
        if self._started is None:
            self._started = now
        elif now - self._last_line < self._interval:
            self._unlogged += 1
            return
        self._logger.warning(
            message,
            extra={
                "event": event,
                "error": error,
                "failures": self._failures,
                "failures_not_logged": self._unlogged,
                **fields,
            },
        )
        self._last_line = now
        self._unlogged = 0

    def success(self, message: str, *, event: str, **fields: Any) -> None:
        """Log the recovery if failures came before, and otherwise do nothing."""
        if self._started is None:
            return
        self._logger.info(
            message,
            extra={
                "event": event,
                "failures": self._failures,
                "outage_seconds": round(self._clock() - self._started, 3),
                **fields,
            },
        )
        self._failures = 0
        self._unlogged = 0
        self._started = None
