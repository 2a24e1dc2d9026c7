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
