"""Link store in the SQL ``links`` table, the source of truth for links."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, RowMapping, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import LinkConflict, StorageError
from gateway.links.store import Link
from gateway.storage.tables import (
    CREATED_BY_LENGTH,
    MEDIMO_ACCOUNT_LENGTH,
    TENANT_LENGTH,
    YSIS_USER_LENGTH,
    links,
    require_aware,
    require_text,
    utc_now,
)

#: Inserts retried when a conflicting row vanished before it could be named.
ADD_ATTEMPTS = 3

_LINK_COLUMNS = (
    links.c.tenant,
    links.c.ysis_user,
    links.c.medimo_account,
    links.c.created_at,
    links.c.created_by,
    links.c.last_used_at,
)


class SqlLinkStore:
    """LinkStore over an async SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, ysis_user: str) -> Link | None:
        """Return the link of a Ysis account ID, or None if it has none."""
        query = select(*_LINK_COLUMNS).where(_key(tenant, ysis_user))
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        return None if row is None else _to_link(row)

    async def find_account(self, tenant: str, medimo_account: str) -> Link | None:
        """Return the link of a Medimo account in a tenant, or None if it has none."""
        query = select(*_LINK_COLUMNS).where(
            (links.c.tenant == tenant) & (links.c.medimo_account == medimo_account)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        return None if row is None else _to_link(row)

    async def add(
        self, tenant: str, ysis_user: str, medimo_account: str, created_by: str
    ) -> Link:
        """Insert a new link, or raise LinkConflict naming the taken field.

        The unique indexes decide, so two concurrent adds cannot both win.
        """
        _check_link(tenant, ysis_user, medimo_account, created_by)
        link = Link(tenant, ysis_user, medimo_account, utc_now(), created_by, None)
        for _ in range(ADD_ATTEMPTS):
            try:
                await self._insert(link)
            except IntegrityError as error:
                field = await self._conflicting_field(link)
                if field is not None:
                    raise LinkConflict(tenant, field) from error
                # The row that blocked the insert was removed meanwhile.
                continue
            return link
        raise StorageError(
            f"tenant {tenant!r}: adding a link failed {ADD_ATTEMPTS} times on a "
            f"unique index, but no conflicting link was found afterwards"
        )

    async def add_all(self, new: Sequence[Link]) -> None:
        """Insert links in one transaction: all of them, or none.

        Raise LinkConflict when a unique index refuses one, which leaves the
        table as it was.
        """
        for link in new:
            _check_link(link.tenant, link.ysis_user, link.medimo_account, link.created_by)
        rows = [{column.name: getattr(link, column.name) for column in _LINK_COLUMNS} for link in new]
        if not rows:
            return
        try:
            async with self._engine.begin() as connection:
                await connection.execute(links.insert(), rows)
        except IntegrityError as error:
            raise LinkConflict(new[0].tenant, "ysis_user or medimo_account") from error

    async def _insert(self, link: Link) -> None:
        values = {column.name: getattr(link, column.name) for column in _LINK_COLUMNS}
        async with self._engine.begin() as connection:
            await connection.execute(links.insert().values(values))

    async def _conflicting_field(self, link: Link) -> str | None:
        same_user = _key(link.tenant, link.ysis_user)
        same_account = (links.c.tenant == link.tenant) & (
            links.c.medimo_account == link.medimo_account
        )
        query = select(exists().where(same_user), exists().where(same_account))
        async with self._engine.connect() as connection:
            user_taken, account_taken = (await connection.execute(query)).one()
        if user_taken:
            return "ysis_user"
        if account_taken:
            return "medimo_account"
        return None

    async def remove(self, tenant: str, ysis_user: str) -> Link | None:
        """Delete the link of a Ysis account ID and return it, or None if absent."""
        statement = (
            links.delete().where(_key(tenant, ysis_user)).returning(*_LINK_COLUMNS)
        )
        async with self._engine.begin() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _to_link(row)

    async def list(self, tenant: str | None = None) -> builtins.list[Link]:
        """Return the links of one tenant, or of all, ordered by tenant and user."""
        query = select(*_LINK_COLUMNS)
        if tenant is not None:
            query = query.where(links.c.tenant == tenant)
        if self._engine.dialect.name == "postgresql":
            # The database's default collation may sort by locale, but "C" sorts
            # by code point as SQLite's BINARY collation does.
            query = query.order_by(
                links.c.tenant.collate("C"), links.c.ysis_user.collate("C")
            )
        else:
            query = query.order_by(links.c.tenant, links.c.ysis_user)
        async with self._engine.connect() as connection:
            result = await connection.execute(query)
            return [_to_link(row) for row in result.mappings()]

    async def touch(self, tenant: str, ysis_user: str, when: datetime) -> None:
        """Set ``last_used_at`` of a link, or do nothing if the link is absent."""
        require_aware("when", when)
        statement = (
            links.update().where(_key(tenant, ysis_user)).values(last_used_at=when)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)


def _key(tenant: str, ysis_user: str) -> ColumnElement[bool]:
    return (links.c.tenant == tenant) & (links.c.ysis_user == ysis_user)


def _check_link(
    tenant: str, ysis_user: str, medimo_account: str, created_by: str
) -> None:
    require_text("tenant", tenant, TENANT_LENGTH)
    require_text("ysis_user", ysis_user, YSIS_USER_LENGTH)
    require_text("medimo_account", medimo_account, MEDIMO_ACCOUNT_LENGTH)
    require_text("created_by", created_by, CREATED_BY_LENGTH)


def _to_link(row: RowMapping) -> Link:
    return Link(
        tenant=row["tenant"],
        ysis_user=row["ysis_user"],
        medimo_account=row["medimo_account"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_used_at=row["last_used_at"],
    )
