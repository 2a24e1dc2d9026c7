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
from typing import Any

access_logger = logging.getLogger("gateway.access")
auth_logger = logging.getLogger("gateway.auth")
tls_logger = logging.getLogger("gateway.tls")
upstream_logger = logging.getLogger("gateway.upstream")
server_logger = logging.getLogger("gateway.server")

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
