"""Appending SSO log entries without making a request wait for the database.

Handlers put entries in a bounded in-memory queue and go on at once. A
background task, started in the app's startup hook, appends them in batches
of up to ``BATCH_SIZE``. While the database is down the task retries with a
pause that doubles up to ``max_pause`` and logs the error at most once a
minute, so logins with a cached link go on. When the queue is full, new
entries are dropped and counted, and the count becomes an
``entries_dropped`` row once the database takes rows again. A second task
purges rows older than the retention period at start and then daily.

NOTE: the queue lives in memory only. When the process is killed (SIGKILL,
out of memory, power loss), the entries still in it are lost: normally the
last few milliseconds of events, and up to ``queue_size`` entries when the
database was down. A graceful stop appends them first, for at most
``flush_timeout`` seconds (``FLUSH_TIMEOUT`` by default).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from gateway.config.types import RetentionPeriod
from gateway.logs import LogThrottle
from gateway.ssolog.entry import Entry, prepared
from gateway.ssolog.store import SqlSsoLog

logger = logging.getLogger("gateway.ssolog")

#: Maximum number of entries appended in one transaction.
BATCH_SIZE = 100

#: Seconds a graceful stop waits for the queue to reach the database.
FLUSH_TIMEOUT = 10.0

#: Seconds between two purges of rows older than the retention period.
PURGE_INTERVAL = 24 * 3600.0

#: Seconds before a failed purge is tried again.
PURGE_RETRY = 3600.0


class SsoLogWriter:
    """Queue of SSO log entries and the tasks that append and purge them."""

    def __init__(
        self,
        store: SqlSsoLog,
        *,
        queue_size: int,
        retention: RetentionPeriod,
        now: Callable[[], datetime],
        first_pause: float = 0.25,
        max_pause: float = 10.0,
        flush_timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        self.store = store
        self._queue: collections.deque[Entry] = collections.deque()
        self._queue_size = queue_size
        self._retention = retention
        self._now = now
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._flush_timeout = flush_timeout
        self._batch: list[Entry] = []
        self._dropped = 0
        self._failures = 0
        self._wake = asyncio.Event()
        self._stopping = False
        #: Set by stop(), so that a retry pause ends at once.
        self._stop_requested = asyncio.Event()
        self._append_task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._failure_throttle = LogThrottle()
        self._drop_throttle = LogThrottle()

    @property
    def pending(self) -> int:
        """Number of entries not yet in the database."""
        return len(self._queue) + len(self._batch)

    def record(self, entry: Entry) -> None:
        """Queue an entry without waiting; a full queue drops and counts it."""
        try:
            entry = prepared(entry)
        except ValueError:
            # A bug in a caller must not fail the request that it logs.
            logger.exception(
                "invalid SSO log entry dropped", extra={"event": entry.event}
            )
            return
        if len(self._queue) >= self._queue_size:
            self._drop(entry)
            return
        self._queue.append(entry)
        self._wake.set()

    async def start(self) -> None:
        """Start the append and purge tasks."""
        self._append_task = asyncio.create_task(
            self._append_forever(), name="sso-log-append"
        )
        self._purge_task = asyncio.create_task(
            self._purge_forever(), name="sso-log-purge"
        )

    async def stop(self) -> None:
        """Stop purging, then append what is queued for up to ``flush_timeout`` s."""
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        if self._append_task is None:
            return
        try:
            await asyncio.wait_for(self._append_task, self._flush_timeout)
        except TimeoutError:
            logger.error(
                "SSO log entries lost at stop: the database did not take them "
                "within %.1f s",
                self._flush_timeout,
                extra={
                    "event": "sso_log_lost",
                    "entries": self.pending + self._dropped,
                },
            )

    async def flush(self) -> None:
        """Wait until every entry queued so far is in the database."""
        while self.pending:
            await asyncio.sleep(0.01)

    async def purge(self) -> int:
        """Delete rows older than the retention period; return their number."""
        now = self._now()
        deleted = await self.store.purge(self._retention.cutoff(now), logged_at=now)
        if deleted:
            logger.info(
                "SSO log purged",
                extra={
                    "event": "sso_log_purged",
                    "deleted": deleted,
                    "retention": str(self._retention),
                },
            )
        return deleted

    async def _append_forever(self) -> None:
        while True:
            if not self._batch:
                self._batch = self._next_batch()
            if not self._batch:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._append(self._batch):
                self._batch = []
            else:
                await self._retry_pause()

    def _next_batch(self) -> list[Entry]:
        size = min(BATCH_SIZE, len(self._queue))
        batch = [self._queue.popleft() for _ in range(size)]
        if self._dropped:
            detail = f"dropped {self._dropped} entries because the queue was full"
            dropped = Entry("entries_dropped", self._now(), outcome="ok", detail=detail)
            batch.append(dropped)
            self._dropped = 0
        return batch

    async def _append(self, batch: list[Entry]) -> bool:
        try:
            await self.store.append(batch)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - keep the entries and retry
            self._failures += 1
            self._log_failure(error)
            return False
        if self._failures:
            logger.warning(
                "SSO log writes work again",
                extra={"event": "sso_log_recovered", "failures": self._failures},
            )
            self._failures = 0
        return True

    async def _retry_pause(self) -> None:
        """Wait before the next attempt; a stop ends the wait early."""
        pause = self._pause()
        if self._stopping:
            await asyncio.sleep(pause)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), pause)

    def _pause(self) -> float:
        pause = self._first_pause * 2.0 ** min(self._failures - 1, 16)
        if self._stopping:
            # The stop has a deadline, so waiting long would only lose entries.
            return min(pause, 1.0)
        return min(pause, self._max_pause)

    def _log_failure(self, error: Exception) -> None:
        held_back = self._failure_throttle.allow()
        if held_back is None:
            return
        logger.error(
            "writing the SSO log failed, will retry",
            extra={
                "event": "sso_log_write_failed",
                "error": repr(error)[:500],
                "failures": self._failures,
                "pending": self.pending,
                "not_logged": held_back,
            },
        )

    def _drop(self, entry: Entry) -> None:
        self._dropped += 1
        held_back = self._drop_throttle.allow()
        if held_back is None:
            return
        logger.error(
            "SSO log queue full: entry dropped",
            extra={
                "event": "sso_log_entry_dropped",
                "dropped_event": entry.event,
                "dropped": self._dropped,
                "queue_size": self._queue_size,
            },
        )

    async def _purge_forever(self) -> None:
        while True:
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - try again later
                logger.error(
                    "purging the SSO log failed, will retry in %.0f s",
                    PURGE_RETRY,
                    extra={"event": "sso_log_purge_failed", "error": repr(error)[:500]},
                )
                await asyncio.sleep(PURGE_RETRY)
                continue
            await asyncio.sleep(PURGE_INTERVAL)
