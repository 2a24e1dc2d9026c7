"""The SSO log in the ``sso_log`` table: append, purge, verify and read.

Every change of the chain runs in one transaction that first makes the
other writers wait: PostgreSQL takes an EXCLUSIVE lock on the table, which
still lets readers in, and SQLite starts with ``BEGIN IMMEDIATE``. A writer
that still loses a race, because SQLite's lock wait timed out or a unique
index rejected its row, retries the whole transaction with the new last row.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import RowMapping, Select, func, or_, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ssolog.entry import GENESIS_HASH, Entry, Row, chain
from gateway.storage.tables import require_aware, sso_log

#: Transactions tried before a lost race is raised to the caller.
CHAIN_ATTEMPTS = 30

#: Upper bound of the random pause after a lost race, in seconds.
MAX_RETRY_PAUSE = 0.05

_T = TypeVar("_T")


@dataclass(frozen=True)
class LastRow:
    """Id and hash of the newest row, which the next row must follow."""

    id: int
    row_hash: str


@dataclass(frozen=True)
class LogQuery:
    """Filters of ``SqlSsoLog.rows``. ``user`` matches Ysis user or Medimo account."""

    tenant: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ChainReport:
    """Outcome of a walk over the chain, from its oldest row to its newest."""

    count: int
    first: Row | None
    last: Row | None
    #: The first row that breaks the chain, and why. Both are None when intact.
    broken: Row | None = None
    problem: str | None = None


class SqlSsoLog:
    """The SSO log of one instance over an async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, instance: str) -> None:
        self._engine = engine
        self.instance = instance

    async def append(self, entries: Sequence[Entry]) -> list[Row]:
        """Append entries in one transaction, in order, and return their rows."""
        if not entries:
            return []

        async def insert(connection: AsyncConnection, last: LastRow) -> list[Row]:
            rows = chain(last.id, last.row_hash, self.instance, entries)
            await connection.execute(sso_log.insert(), [row.columns() for row in rows])
            return rows

        return await self._in_chain(insert)

    async def purge(
        self,
        cutoff: datetime,
        *,
        logged_at: datetime,
        operator: str | None = None,
        record_empty: bool = False,
    ) -> int:
        """Delete the rows logged before ``cutoff`` and log that; return the count.

        Only a run of oldest rows is deleted, up to the first row logged at or
        after ``cutoff``, so the rest of the chain stays whole. A row that an
        instance appended late, with an older time than the row before it, is
        kept until the rows before it are due. Without ``record_empty``, a
        purge that deletes nothing writes no row.
        """
        require_aware("cutoff", cutoff)

        async def delete(connection: AsyncConnection, last: LastRow) -> int:
            deleted = await _delete_before(connection, cutoff)
            if deleted == 0 and not record_empty:
                return 0
            entry = Entry(
                "log_purged",
                logged_at,
                operator=operator,
                outcome="ok",
                reason="retention",
                detail=f"deleted {deleted} row(s) logged before {cutoff.isoformat()}",
            )
            rows = chain(last.id, last.row_hash, self.instance, [entry])
            await connection.execute(sso_log.insert(), [rows[0].columns()])
            return deleted

        return await self._in_chain(delete)

    async def verify(self) -> ChainReport:
        """Walk the chain by id and return the first row that breaks it, if any.

        The oldest row's ``prev_hash`` is taken as the anchor, because a purge
        deletes the row it names.
        """
        count = 0
        first: Row | None = None
        previous: Row | None = None
        async with self._engine.connect() as connection:
            result = await connection.stream(select(sso_log).order_by(sso_log.c.id))
            async for mapping in result.mappings():
                row = to_row(mapping)
                problem = chain_problem(previous, row)
                if problem is not None:
                    return ChainReport(count, first, previous, row, problem)
                count += 1
                if first is None:
                    first = row
                previous = row
        return ChainReport(count, first, previous)

    async def rows(self, query: LogQuery) -> AsyncIterator[Row]:
        """Yield the rows that match ``query`` by id, oldest first.

        With ``query.limit``, only the newest ``limit`` matching rows come.
        """
        statement = _filtered(query)
        async with self._engine.connect() as connection:
            if query.limit is not None:
                newest = statement.order_by(sso_log.c.id.desc()).limit(query.limit)
                found = (await connection.execute(newest)).mappings().all()
                for mapping in reversed(found):
                    yield to_row(mapping)
                return
            result = await connection.stream(statement.order_by(sso_log.c.id))
            async for mapping in result.mappings():
                yield to_row(mapping)

    async def _in_chain(
        self, work: Callable[[AsyncConnection, LastRow], Awaitable[_T]]
    ) -> _T:
        for attempt in range(1, CHAIN_ATTEMPTS + 1):
            try:
                async with _chain_transaction(self._engine) as connection:
                    return await work(connection, await _last_row(connection))
            except (IntegrityError, OperationalError) as error:
                if attempt == CHAIN_ATTEMPTS or not _lost_race(error):
                    raise
            await asyncio.sleep(random.uniform(0, MAX_RETRY_PAUSE))
        raise AssertionError("unreachable: the last attempt raises")


@asynccontextmanager
async def _chain_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Open a transaction in which no other writer can append; commit on exit."""
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("LOCK TABLE sso_log IN EXCLUSIVE MODE"))
        else:
            # The write lock comes first, so the last row read below stays last.
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection
        await connection.commit()


def _lost_race(error: IntegrityError | OperationalError) -> bool:
    if isinstance(error, IntegrityError):
        # Another writer took this id or prev_hash first.
        return True
    # SQLite ran out of busy_timeout while another writer held the lock.
    return "database is locked" in str(error.orig)


async def _last_row(connection: AsyncConnection) -> LastRow:
    query = select(sso_log.c.id, sso_log.c.row_hash).order_by(sso_log.c.id.desc())
    found = (await connection.execute(query.limit(1))).first()
    if found is None:
        return LastRow(0, GENESIS_HASH)
    return LastRow(found.id, found.row_hash)


async def _delete_before(connection: AsyncConnection, cutoff: datetime) -> int:
    first_kept = await connection.scalar(
        select(func.min(sso_log.c.id)).where(sso_log.c.logged_at >= cutoff)
    )
    statement = sso_log.delete()
    if first_kept is not None:
        statement = statement.where(sso_log.c.id < first_kept)
    result = await connection.execute(statement)
    return result.rowcount


def chain_problem(previous: Row | None, row: Row) -> str | None:
    """Return why ``row`` breaks the chain after ``previous``, or None."""
    if row.computed_hash() != row.row_hash:
        return (
            f"row {row.id}: its fields and prev_hash do not give its row_hash, so "
            "a field or the hash of this row was changed"
        )
    if previous is None:
        return None
    if row.id == previous.id + 2:
        return f"row {row.id}: row {previous.id + 1} is missing"
    if row.id != previous.id + 1:
        return f"row {row.id}: rows {previous.id + 1} to {row.id - 1} are missing"
    if row.prev_hash != previous.row_hash:
        return (
            f"row {row.id}: its prev_hash is not the row_hash of row "
            f"{previous.id}, so one of these two rows was changed"
        )
    return None


def _filtered(query: LogQuery) -> Select[tuple[object, ...]]:
    statement = select(sso_log)
    if query.tenant is not None:
        statement = statement.where(sso_log.c.tenant == query.tenant)
    if query.user is not None:
        statement = statement.where(
            or_(
                sso_log.c.ysis_user == query.user,
                sso_log.c.medimo_account == query.user,
            )
        )
    if query.since is not None:
        statement = statement.where(sso_log.c.logged_at >= query.since)
    if query.until is not None:
        statement = statement.where(sso_log.c.logged_at < query.until)
    return statement


def to_row(mapping: RowMapping) -> Row:
    """Return a ``Row`` from a mapping of every ``sso_log`` column."""
    entry = Entry(
        event=mapping["event"],
        logged_at=mapping["logged_at"],
        tenant=mapping["tenant"],
        ysis_user=mapping["ysis_user"],
        medimo_account=mapping["medimo_account"],
        medimo_client=mapping["medimo_client"],
        client_lookup=mapping["client_lookup"],
        source_ip=mapping["source_ip"],
        outcome=mapping["outcome"],
        reason=mapping["reason"],
        detail=mapping["detail"],
        operator=mapping["operator"],
        request_id=mapping["request_id"],
    )
    return Row(
        id=mapping["id"],
        instance=mapping["instance"],
        entry=entry,
        prev_hash=mapping["prev_hash"],
        row_hash=mapping["row_hash"],
    )
