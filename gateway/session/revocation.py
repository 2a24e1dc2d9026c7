"""Session revocation: recorded in SQL, kept in memory on every instance.

A proxied request checks only the in-memory copy, so it needs no database or
Redis round trip. Each instance loads the active revocations at start and
then polls SQL for newer rows, so a logout on one instance is enforced by
every other within ``poll_interval`` seconds, with or without Redis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field

from gateway.session.sessions import Session
from gateway.storage.revocations import Revocation, SqlRevocationStore

logger = logging.getLogger("gateway.session")


@dataclass
class _Index:
    sessions: set[str] = field(default_factory=set)
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)
    tenants: dict[str, int] = field(default_factory=dict)

    def apply(self, revocation: Revocation) -> None:
        at = int(revocation.revoked_at.timestamp() * 1000)
        if revocation.kind == "session":
            self.sessions.add(revocation.subject)
        elif revocation.kind == "account":
            key = (revocation.tenant, revocation.subject)
            self.accounts[key] = max(at, self.accounts.get(key, 0))
        elif revocation.kind == "tenant":
            self.tenants[revocation.tenant] = max(at, self.tenants.get(revocation.tenant, 0))


class RevocationList:
    """Decides whether a session was revoked; see the module docstring."""

    def __init__(self, store: SqlRevocationStore, *, poll_interval: float = 2.0) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._index = _Index()
        self._last_id = 0
        self._task: asyncio.Task[None] | None = None

    def is_revoked(self, session: Session) -> bool:
        index = self._index
        if session.sid in index.sessions:
            return True
        account_at = index.accounts.get((session.tenant, session.account), 0)
        tenant_at = index.tenants.get(session.tenant, 0)
        return session.issued_at <= max(account_at, tenant_at)

    async def revoke(
        self, kind: str, tenant: str, subject: str, expires_at: dt.datetime
    ) -> Revocation:
        """Record a revocation in SQL and apply it here at once."""
        revocation = await self._store.add(kind, tenant, subject, expires_at)
        self._index.apply(revocation)
        return revocation

    async def refresh(self) -> int:
        """Apply rows added since the last refresh; return how many."""
        rows = await self._store.since(self._last_id)
        for revocation in rows:
            self._index.apply(revocation)
            self._last_id = max(self._last_id, revocation.id)
        return len(rows)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="revocation-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _poll(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling whatever failed
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    logger.error(
                        "reading revocations failed",
                        extra={"event": "revocation_poll_failed", "error": repr(exc), "failures": failures},
                    )
            else:
                if failures:
                    logger.warning("reading revocations recovered", extra={"event": "revocation_poll_recovered"})
                failures = 0
