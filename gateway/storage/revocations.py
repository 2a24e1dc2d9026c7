"""Revocation feed: sessions, accounts and tenants cut off before expiry.

Every gateway instance reads ``since(last_id)`` and applies the new rows, so
the feed must hand out ids in commit order and never reuse one. Deleting
expired rows (``purge``) is safe at any time: a reader only asks for ids above
the ones it has, and an expired row no longer revokes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import RowMapping, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.tables import (
    REVOKED_BY_LENGTH,
    SUBJECT_LENGTH,
    TENANT_LENGTH,
    require_aware,
    require_text,
    revocations,
    utc_now,
)

#: ``subject`` is a session ID, an account ID, or empty for a whole tenant.
REVOCATION_KINDS = ("session", "account", "tenant")


@dataclass(frozen=True)
class Revocation:
    """Revoked session, account or tenant, in force until ``expires_at``.

    ``revoked_by`` is the administrator's name, or None when the gateway
    recorded the revocation itself.
    """

    id: int
    kind: str
    tenant: str
    subject: str
    revoked_at: datetime
    expires_at: datetime
    revoked_by: str | None = None


class SqlRevocationStore:
    """Revocation feed in the ``revocations`` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        kind: str,
        tenant: str,
        subject: str,
        expires_at: datetime,
        *,
        revoked_by: str | None = None,
    ) -> Revocation:
        """Record a revocation and return it with its new id."""
        _check_revocation(kind, tenant, subject, expires_at)
        if revoked_by is not None:
            require_text("revoked_by", revoked_by, REVOKED_BY_LENGTH)
        revoked_at = utc_now()
        expires_at = expires_at.astimezone(UTC)
        async with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # A sequence hands out ids before commit, so two concurrent
                # inserts could commit out of order and a poller that has seen
                # the higher id would skip the lower one. The lock makes
                # writers take turns, but readers are not blocked.
                await connection.execute(
                    text("LOCK TABLE revocations IN EXCLUSIVE MODE")
                )
            result = await connection.execute(
                revocations.insert()
                .values(
                    kind=kind,
                    tenant=tenant,
                    subject=subject,
                    revoked_at=revoked_at,
                    expires_at=expires_at,
                    revoked_by=revoked_by,
                )
                .returning(revocations.c.id)
            )
            new_id = result.scalar_one()
        return Revocation(
            new_id, kind, tenant, subject, revoked_at, expires_at, revoked_by
        )

    async def since(self, last_id: int) -> list[Revocation]:
        """Return unexpired revocations with an id above ``last_id``, by id."""
        query = (
            select(revocations)
            .where(revocations.c.id > last_id)
            .where(revocations.c.expires_at > utc_now())
            .order_by(revocations.c.id)
        )
        async with self._engine.connect() as connection:
            result = await connection.execute(query)
            return [_to_revocation(row) for row in result.mappings()]

    async def purge(self, now: datetime) -> int:
        """Delete revocations that expired at or before ``now`` and return the count."""
        require_aware("now", now)
        statement = revocations.delete().where(revocations.c.expires_at <= now)
        async with self._engine.begin() as connection:
            result = await connection.execute(statement)
        return result.rowcount


def _check_revocation(
    kind: str, tenant: str, subject: str, expires_at: datetime
) -> None:
    if kind not in REVOCATION_KINDS:
        raise ValueError(
            f"invalid revocation kind {kind!r}: expected one of {REVOCATION_KINDS}"
        )
    require_text("tenant", tenant, TENANT_LENGTH)
    if kind == "tenant" and subject:
        raise ValueError("a tenant revocation must have an empty subject")
    require_text("subject", subject, SUBJECT_LENGTH, allow_empty=kind == "tenant")
    require_aware("expires_at", expires_at)


def _to_revocation(row: RowMapping) -> Revocation:
    return Revocation(
        id=row["id"],
        kind=row["kind"],
        tenant=row["tenant"],
        subject=row["subject"],
        revoked_at=row["revoked_at"],
        expires_at=row["expires_at"],
        revoked_by=row["revoked_by"],
    )
