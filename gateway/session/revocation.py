"""Session revocation: recorded in SQL, announced over Redis, kept in memory.

A proxied request checks only the in-memory copy, so it needs no database or
Redis round trip. SQL is the source of truth: ``revoke`` records a row, then
announces it on Redis pub/sub (``gateway.session.announce``). On an
announcement every instance reads the rows it has not seen yet from SQL at
once; the message itself is never trusted as a revocation.

Pub/sub can lose messages (Redis down, a dropped connection, a publisher
that could not reach Redis), so SQL is also read on a timer: every
``poll_interval`` seconds while the subscription is up, and every
``fallback_poll_interval`` seconds while it is down or the last read failed.
Each (re)subscription triggers a read as well.

Rows live until ``expires_at``: the moment they were recorded plus the
longest session lifetime, after which every session they cover has expired
by itself. Every ``purge_interval`` seconds an instance deletes expired rows
from SQL and drops expired entries from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.logs import FailureLog, describe_error, revocation_logger
from gateway.session.sessions import Session
from gateway.storage.revocations import Revocation, SqlRevocationStore
from gateway.tasks import finish, raise_if_cancelled

#: Sends an announcement of a recorded revocation, or raises.
Announce = Callable[[Revocation], Awaitable[object]]


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class _Cutoff:
    """Sessions issued at or before ``revoked_ms`` are revoked until ``expires_ms``."""

    revoked_ms: int
    expires_ms: int

    def merged(self, other: _Cutoff | None) -> _Cutoff:
        if other is None:
            return self
        return _Cutoff(
            max(self.revoked_ms, other.revoked_ms),
            max(self.expires_ms, other.expires_ms),
        )


@dataclass
class _Index:
    """The in-memory copy, where applying a row twice changes nothing."""

    sessions: dict[str, int] = field(default_factory=dict)
    accounts: dict[tuple[str, str], _Cutoff] = field(default_factory=dict)
    tenants: dict[str, _Cutoff] = field(default_factory=dict)

    def apply(self, revocation: Revocation) -> None:
        cutoff = _Cutoff(_ms(revocation.revoked_at), _ms(revocation.expires_at))
        if revocation.kind == "session":
            sid = revocation.subject
            self.sessions[sid] = max(cutoff.expires_ms, self.sessions.get(sid, 0))
        elif revocation.kind == "account":
            key = (revocation.tenant, revocation.subject)
            self.accounts[key] = cutoff.merged(self.accounts.get(key))
        elif revocation.kind == "tenant":
            name = revocation.tenant
            self.tenants[name] = cutoff.merged(self.tenants.get(name))

    def revokes(self, session: Session) -> bool:
        if session.sid in self.sessions:
            return True
        for cutoff in (
            self.accounts.get((session.tenant, session.account)),
            self.tenants.get(session.tenant),
        ):
            if cutoff is not None and session.issued_at <= cutoff.revoked_ms:
                return True
        return False

    def drop_expired(self, now_ms: int) -> int:
        """Forget entries past their expiry and return how many."""
        before = len(self)
        self.sessions = {
            sid: until for sid, until in self.sessions.items() if until > now_ms
        }
        self.accounts = {
            key: cut for key, cut in self.accounts.items() if cut.expires_ms > now_ms
        }
        self.tenants = {
            key: cut for key, cut in self.tenants.items() if cut.expires_ms > now_ms
        }
        return before - len(self)

    def __len__(self) -> int:
        return len(self.sessions) + len(self.accounts) + len(self.tenants)


@dataclass(frozen=True)
class FeedTimes:
    """The intervals of the revocation feed, in seconds."""

    poll_interval: float = 5.0
    fallback_poll_interval: float = 2.0
    purge_interval: float = 3600.0


class RevocationList:
    """Decides whether a session was revoked, as the module docstring describes.

    ``lifetime`` is the longest session lifetime: how long a revocation stays
    in force. ``clock`` is the gateway's clock, the one sessions expire by.
    Until ``on_subscribed`` is called, SQL is read at the fallback interval.
    """

    def __init__(
        self,
        store: SqlRevocationStore,
        *,
        lifetime: float,
        times: FeedTimes = FeedTimes(),
        announce: Announce | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._lifetime = lifetime
        self._times = times
        self._announce = announce
        self._clock = clock
        self._index = _Index()
        self._last_id = 0
        self._subscribed = False
        self._refresh_requested = False
        self._wake = asyncio.Event()
        self._last_refresh = time.monotonic()
        self._refresh_failures = FailureLog(revocation_logger)
        self._announce_failures = FailureLog(revocation_logger)
        self._purge_failures = FailureLog(revocation_logger)
        self._tasks: list[asyncio.Task[None]] = []

    def extend_lifetime(self, lifetime: float) -> None:
        """Keep revocations for ``lifetime`` seconds if that is longer than now."""
        self._lifetime = max(self._lifetime, lifetime)

    # --- deciding ------------------------------------------------------------

    def is_revoked(self, session: Session) -> bool:
        return self._index.revokes(session)

    @property
    def poll_interval(self) -> float:
        """Seconds until SQL is read again, unless a read is requested sooner."""
        if self._subscribed and not self._refresh_failures.failing:
            return self._times.poll_interval
        return self._times.fallback_poll_interval

    # --- revoking ------------------------------------------------------------

    async def revoke(
        self, kind: str, tenant: str, subject: str, *, revoked_by: str | None = None
    ) -> Revocation:
        """Record a revocation in SQL, apply it here, then announce it.

        Raises when SQL fails. A failed announcement is only logged: SQL has
        the row, and every instance reads it within ``poll_interval``.
        """
        expires = dt.datetime.fromtimestamp(self._clock() + self._lifetime, dt.UTC)
        revocation = await self._store.add(
            kind, tenant, subject, expires, revoked_by=revoked_by
        )
        # SECURITY: applied here before the announcement, so this instance
        # refuses the session even while Redis is slow or down.
        self._index.apply(revocation)
        await self._announced(revocation)
        return revocation

    async def _announced(self, revocation: Revocation) -> None:
        if self._announce is None:
            return
        try:
            await self._announce(revocation)
            raise_if_cancelled()
        except Exception as error:  # noqa: BLE001 - SQL already has the row
            self._announce_failures.failure(
                "announcing a revocation failed; other instances read it from "
                "SQL within the poll interval",
                event="revocation_announce_failed",
                error=describe_error(error),
                poll_interval=self._times.poll_interval,
            )
        else:
            self._announce_failures.success(
                "announcing revocations works again",
                event="revocation_announce_recovered",
            )

    # --- what the subscriber reports -------------------------------------------

    def on_subscribed(self) -> None:
        self._subscribed = True
        self.request_refresh()

    def on_unsubscribed(self) -> None:
        self._subscribed = False
        # Wake the loop only, so that it waits for the shorter interval now.
        self._wake.set()

    def on_announcement(self) -> None:
        self.request_refresh()

    def request_refresh(self) -> None:
        """Request a SQL read as soon as possible.

        Requests made before that read starts share it.
        """
        self._refresh_requested = True
        self._wake.set()

    # --- reading SQL -----------------------------------------------------------

    async def refresh(self) -> int:
        """Apply rows added since the last refresh; return how many."""
        rows = await self._store.since(self._last_id)
        for revocation in rows:
            self._index.apply(revocation)
            self._last_id = max(self._last_id, revocation.id)
        return len(rows)

    async def start(self) -> None:
        """Load every revocation in force, then keep the copy current."""
        await self.refresh()
        self._last_refresh = time.monotonic()
        revocation_logger.info(
            "revocations loaded",
            extra={
                "event": "revocations_loaded",
                "entries": len(self._index),
                "poll_interval": self._times.poll_interval,
                "fallback_poll_interval": self._times.fallback_poll_interval,
                "purge_interval": self._times.purge_interval,
            },
        )
        self._tasks = [
            asyncio.create_task(self._refresh_loop(), name="revocation-refresh"),
            asyncio.create_task(self._purge_loop(), name="revocation-purge"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            await finish(task, revocation_logger)
        self._tasks = []

    async def _refresh_loop(self) -> None:
        while True:
            await self._refresh_due()
            await self._refresh_logged()
            raise_if_cancelled()

    async def _refresh_due(self) -> None:
        """Return once a read was requested or the poll interval has passed."""
        while not self._refresh_requested:
            remaining = self._last_refresh + self.poll_interval - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _refresh_logged(self) -> None:
        # Cleared before the read, so a request made during it gets one more.
        self._refresh_requested = False
        self._last_refresh = time.monotonic()
        try:
            applied = await self.refresh()
        except Exception as error:  # noqa: BLE001 - retried at the fallback interval
            self._refresh_failures.failure(
                "reading revocations from SQL failed",
                event="revocation_refresh_failed",
                error=describe_error(error),
            )
            return
        self._refresh_failures.success(
            "reading revocations from SQL works again",
            event="revocation_refresh_recovered",
        )
        if applied:
            revocation_logger.debug(
                "revocations applied",
                extra={"event": "revocations_applied", "rows": applied},
            )

    # --- expiry ----------------------------------------------------------------

    async def _purge_loop(self) -> None:
        while True:
            await self.purge()
            raise_if_cancelled()
            await asyncio.sleep(self._times.purge_interval)

    async def purge(self) -> None:
        """Delete expired rows from SQL and drop expired entries from memory.

        Safe at any time: a row is only deleted once it no longer revokes any
        session that has not expired by itself, and readers only ask for ids
        above the ones they have seen.
        """
        now = self._clock()
        dropped = self._index.drop_expired(int(now * 1000))
        try:
            deleted = await self._store.purge(dt.datetime.fromtimestamp(now, dt.UTC))
        except Exception as error:  # noqa: BLE001 - tried again next interval
            self._purge_failures.failure(
                "deleting expired revocations failed",
                event="revocation_purge_failed",
                error=describe_error(error),
            )
            return
        self._purge_failures.success(
            "deleting expired revocations works again",
            event="revocation_purge_recovered",
        )
        # A purge that removed nothing is not worth an info line every hour.
        level = logging.INFO if deleted or dropped else logging.DEBUG
        revocation_logger.log(
            level,
            "expired revocations removed",
            extra={"event": "revocations_purged", "rows": deleted, "entries": dropped},
        )
