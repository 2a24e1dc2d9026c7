"""The ``sso-gateway log`` commands, and SSO log rows of administrators' commands.

Each function opens its own engine, checks the schema, and returns the exit
code: 0 on success, 1 when the chain is broken. An outdated schema, a database
that cannot be reached and a failing one raise, and the command line prints
them as it does for every database command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.loader import Config
from gateway.ssolog.entry import Entry, instance_name
from gateway.ssolog.store import ChainReport, LogQuery, SqlSsoLog
from gateway.storage.database import (
    create_engine,
    describe_error,
    require_current_schema,
)

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def parse_time(text: str) -> datetime:
    """Parse ``--since`` or ``--until``: an ISO 8601 date, or a time with offset.

    A date alone means midnight UTC. A time without a UTC offset is
    rejected, because the log cannot guess the zone it was meant in.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time: write it as 2026-03-01 "
            "or 2026-03-01T08:00:00+01:00"
        ) from None
    if _DATE.match(text):
        return value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset: add one, such as {text}+01:00 or {text}Z"
        )
    return value


def positive_count(text: str) -> int:
    """Parse ``--limit``: a whole number of at least 1."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive whole number"
        )
    return int(text)


def store_of(config: Config, engine: AsyncEngine) -> SqlSsoLog:
    """Return the SSO log of this process, named as the gateway names itself."""
    return SqlSsoLog(engine, instance_name(config.gateway.sso_log.instance))


async def _run(
    config: Config, work: Callable[[SqlSsoLog], Awaitable[int]]
) -> int:
    engine = create_engine(config.gateway.database.url)
    try:
        await require_current_schema(engine)
        return await work(store_of(config, engine))
    finally:
        await engine.dispose()


async def print_rows(config: Config, query: LogQuery) -> int:
    """Print the rows that match ``query`` as one JSON object per line."""

    async def work(log: SqlSsoLog) -> int:
        async for row in log.rows(query):
            print(json.dumps(row.document(), ensure_ascii=False))
        return 0

    return await _run(config, work)


async def verify(config: Config) -> int:
    """Walk the chain; print the count, or the first row that breaks it."""

    async def work(log: SqlSsoLog) -> int:
        report = await log.verify()
        if report.problem is not None:
            print(
                f"error: the SSO log chain is broken: {report.problem}",
                file=sys.stderr,
            )
            print(f"{report.count} row(s) before it are intact", file=sys.stderr)
            return 1
        for line in _intact_lines(report):
            print(line)
        return 0

    return await _run(config, work)


def _intact_lines(report: ChainReport) -> list[str]:
    if report.first is None or report.last is None:
        return ["SSO log intact: 0 rows"]
    first, last = report.first, report.last
    return [
        (
            f"SSO log intact: {report.count} row(s), from row {first.id} "
            f"({first.entry.logged_at.isoformat()}) to row {last.id} "
            f"({last.entry.logged_at.isoformat()})"
        ),
        # Deleting the newest rows cannot show in the chain, so operators
        # keep this hash elsewhere to compare with a later run.
        f"anchor (prev_hash of row {first.id}): {first.prev_hash}",
        f"row_hash of row {last.id}: {last.row_hash}",
    ]


async def purge(config: Config, operator: str) -> int:
    """Delete rows older than the retention period and log the purge."""
    retention = config.gateway.sso_log.retention

    async def work(log: SqlSsoLog) -> int:
        now = datetime.now(UTC)
        cutoff = retention.cutoff(now)
        deleted = await log.purge(
            cutoff, logged_at=now, operator=operator, record_empty=True
        )
        print(
            f"deleted {deleted} row(s) logged before {cutoff.isoformat()} "
            f"(retention {retention})"
        )
        return 0

    return await _run(config, work)


async def log_admin(
    config: Config, engine: AsyncEngine, entries: Sequence[Entry]
) -> bool:
    """Append the rows of an administrator's command; print an error if that fails.

    The command's change is already made, so a failure is reported but not
    undone.
    """
    try:
        await store_of(config, engine).append(entries)
    except (SQLAlchemyError, OSError) as exc:
        print(
            "error: the change was made, but writing it to the SSO log failed: "
            f"{describe_error(exc)}",
            file=sys.stderr,
        )
        return False
    return True
