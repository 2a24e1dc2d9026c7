"""Link table interface: which Medimo account a Ysis account signs in as.

A link is scoped to a tenant (a care organisation). Within a tenant, a Ysis
account ID links to at most one Medimo account and a Medimo account to at most
one Ysis account ID.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

#: ``created_by`` of links that users made themselves, not an administrator.
SELF_LINK = "self-link"


@dataclass(frozen=True)
class Link:
    """Mapping of one Ysis account ID in a tenant to one Medimo account ID.

    Datetimes are timezone-aware UTC. ``created_by`` is ``SELF_LINK`` or the
    name of the administrator who made the link.
    """

    tenant: str
    ysis_user: str
    medimo_account: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None


class LinkStore(Protocol):
    """Storage of links, implemented by SQL and by a Redis cache in front of it."""

    async def get(self, tenant: str, ysis_user: str) -> Link | None:
        """Return the link of a Ysis account ID, or None if it has none."""
        ...

    async def add(
        self, tenant: str, ysis_user: str, medimo_account: str, created_by: str
    ) -> Link:
        """Store a new link and return it.

        Raises ``LinkConflict`` with field ``ysis_user`` if the Ysis account ID
        is already linked in the tenant, or ``medimo_account`` if the Medimo
        account is. Nothing is stored in either case.
        """
        ...

    async def remove(self, tenant: str, ysis_user: str) -> Link | None:
        """Delete the link of a Ysis account ID and return it, or None if absent."""
        ...

    async def list(self, tenant: str | None = None) -> builtins.list[Link]:
        """Return the links of one tenant, or of all, ordered by tenant and user.

        Order is by Unicode code point, the same on SQLite and PostgreSQL.
        """
        ...

    async def touch(self, tenant: str, ysis_user: str, when: datetime) -> None:
        """Set ``last_used_at`` of a link, or do nothing if the link is absent."""
        ...
