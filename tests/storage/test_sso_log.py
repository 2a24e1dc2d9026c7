"""The SSO log on SQLite and PostgreSQL: chain, verify, purge, filters, writer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config.types import RetentionPeriod
from gateway.ssolog.entry import GENESIS_HASH, Entry, Row, chain_hash
from gateway.ssolog.store import LogQuery, SqlSsoLog
from gateway.ssolog.writer import BATCH_SIZE, SsoLogWriter
from gateway.storage.database import create_engine, upgrade

START = datetime(2026, 3, 2, 8, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Engine on a freshly migrated database."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def log(engine: AsyncEngine) -> SqlSsoLog:
    return SqlSsoLog(engine, "gateway-a")


def launch(minutes: float = 0, **fields: str | None) -> Entry:
    """Return a launch entry logged ``minutes`` after START."""
    values: dict[str, str | None] = {
        "tenant": "noord",
        "ysis_user": "ysis-jan",
        "outcome": "linked",
    }
    values.update(fields)
    return Entry("launch", START + timedelta(minutes=minutes), **values)


async def all_rows(log: SqlSsoLog) -> list[Row]:
    return [row async for row in log.rows(LogQuery())]


async def tamper(engine: AsyncEngine, statement: str) -> None:
    """Run ``statement`` as someone who first drops the update trigger."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("DROP TRIGGER sso_log_no_update ON sso_log"))
        else:
            await connection.execute(text("DROP TRIGGER sso_log_no_update"))
        await connection.execute(text(statement))


# --- append ----------------------------------------------------------------


async def test_first_row_follows_genesis(log: SqlSsoLog) -> None:
    (row,) = await log.append([launch()])

    assert row.id == 1
    assert row.prev_hash == GENESIS_HASH
    assert row.row_hash == chain_hash(1, "gateway-a", row.entry, GENESIS_HASH)


async def test_rows_chain_in_order(log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1)])
    await log.append([launch(2)])

    rows = await all_rows(log)

    assert [row.id for row in rows] == [1, 2, 3]
    assert rows[1].prev_hash == rows[0].row_hash
    assert rows[2].prev_hash == rows[1].row_hash


async def test_fields_round_trip(log: SqlSsoLog) -> None:
    entry = Entry(
        "launch",
        START,
        tenant="noord",
        ysis_user="ysis-jan",
        medimo_account="medimo-jan",
        medimo_client="c-1001",
        client_lookup="found",
        source_ip="2001:db8::7",
        outcome="linked",
        reason="none",
        detail="a detail",
        operator="beheer",
        request_id="0123456789abcdef01234567",
    )
    await log.append([entry])

    (row,) = await all_rows(log)

    assert row.entry == entry
    assert row.instance == "gateway-a"
    assert row.computed_hash() == row.row_hash


async def test_time_kept_to_microsecond(log: SqlSsoLog) -> None:
    await log.append([launch()])

    (row,) = await all_rows(log)

    assert row.entry.logged_at == START
    assert row.entry.logged_at.tzinfo is not None


async def test_control_characters_dropped(log: SqlSsoLog) -> None:
    await log.append([launch(medimo_account="medimo\x00-\x1bjan\ud800")])

    (row,) = await all_rows(log)

    assert row.entry.medimo_account == "medimo-jan"


async def test_long_text_cut_to_column(log: SqlSsoLog) -> None:
    await log.append([launch(medimo_account="m" * 300)])

    (row,) = await all_rows(log)

    assert row.entry.medimo_account == "m" * 128


async def test_unknown_event_rejected(log: SqlSsoLog) -> None:
    with pytest.raises(ValueError) as caught:
        await log.append([Entry("login", START)])

    assert "unknown SSO log event 'login'" in str(caught.value)
    assert await all_rows(log) == []


async def test_naive_time_rejected(log: SqlSsoLog) -> None:
    with pytest.raises(ValueError) as caught:
        await log.append([Entry("launch", START.replace(tzinfo=None))])

    assert "logged_at must be timezone-aware" in str(caught.value)


# --- concurrent writers ------------------------------------------------------------


async def append_many(url: str, instance: str, count: int) -> None:
    """Append ``count`` single rows through an engine of this writer's own."""
    engine = create_engine(url)
    try:
        log = SqlSsoLog(engine, instance)
        for number in range(count):
            await log.append([launch(number, ysis_user=f"{instance}-{number}")])
    finally:
        await engine.dispose()


async def test_concurrent_writers_one_chain(
    database_url: str, engine: AsyncEngine, log: SqlSsoLog
) -> None:
    writers = [append_many(database_url, f"gateway-{name}", 15) for name in "abcd"]

    await asyncio.gather(*writers)

    report = await log.verify()
    assert report.problem is None
    assert report.count == 60
    rows = await all_rows(log)
    assert [row.id for row in rows] == list(range(1, 61))
    assert len({row.entry.ysis_user for row in rows}) == 60


async def test_concurrent_batches_one_chain(
    database_url: str, engine: AsyncEngine, log: SqlSsoLog
) -> None:
    async def batches(instance: str) -> None:
        other = create_engine(database_url)
        try:
            writer = SqlSsoLog(other, instance)
            for number in range(5):
                await writer.append([launch(number), launch(number), launch(number)])
        finally:
            await other.dispose()

    await asyncio.gather(*(batches(f"gateway-{name}") for name in "abc"))

    report = await log.verify()
    assert report.problem is None
    assert report.count == 45
    # A batch is one transaction, so its rows stay together.
    instances = [row.instance for row in await all_rows(log)]
    assert all(len(set(instances[start : start + 3])) == 1 for start in range(0, 45, 3))


# --- verify ------------------------------------------------------------------


async def test_verify_intact_chain(log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2)])

    report = await log.verify()

    assert report.problem is None
    assert report.broken is None
    assert report.count == 3
    assert report.first is not None
    assert report.first.id == 1
    assert report.last is not None
    assert report.last.id == 3


async def test_verify_empty_log(log: SqlSsoLog) -> None:
    report = await log.verify()

    assert report.problem is None
    assert report.count == 0
    assert report.last is None


async def test_verify_detects_edited_field(engine: AsyncEngine, log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2)])

    await tamper(engine, "UPDATE sso_log SET ysis_user = 'ysis-piet' WHERE id = 2")
    report = await log.verify()

    assert report.broken is not None
    assert report.broken.id == 2
    assert report.problem is not None
    assert report.problem.startswith("row 2: ")
    assert "a field or the hash of this row was changed" in report.problem
    assert report.count == 1


async def test_verify_detects_changed_hash(engine: AsyncEngine, log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2)])

    await tamper(engine, f"UPDATE sso_log SET row_hash = '{'a' * 64}' WHERE id = 2")
    report = await log.verify()

    assert report.broken is not None
    assert report.broken.id == 2


async def test_verify_detects_deleted_row(engine: AsyncEngine, log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2)])

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM sso_log WHERE id = 2"))
    report = await log.verify()

    assert report.broken is not None
    assert report.broken.id == 3
    assert report.problem == "row 3: row 2 is missing"


async def test_verify_names_missing_range(engine: AsyncEngine, log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2), launch(3)])

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM sso_log WHERE id IN (2, 3)"))
    report = await log.verify()

    assert report.problem == "row 4: rows 2 to 3 are missing"


async def test_verify_detects_rehashed_row(engine: AsyncEngine, log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(1), launch(2)])
    (_, second, _) = await all_rows(log)
    edited = Entry(**{**vars(second.entry), "ysis_user": "ysis-piet"})
    new_hash = chain_hash(2, second.instance, edited, second.prev_hash)

    await tamper(
        engine,
        f"UPDATE sso_log SET ysis_user = 'ysis-piet', row_hash = '{new_hash}' "
        "WHERE id = 2",
    )
    report = await log.verify()

    # Row 2 is consistent in itself, but row 3 still names its old hash.
    assert report.broken is not None
    assert report.broken.id == 3
    assert report.problem is not None
    assert "prev_hash is not the row_hash of row 2" in report.problem


# --- purge -------------------------------------------------------------------


async def test_purge_deletes_old_rows(log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(10), launch(20)])

    deleted = await log.purge(
        START + timedelta(minutes=15), logged_at=START + timedelta(days=1)
    )

    assert deleted == 2
    remaining = await all_rows(log)
    assert [row.id for row in remaining] == [3, 4]
    assert remaining[1].entry.event == "log_purged"


async def test_purge_logs_itself(log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(20)])
    cutoff = START + timedelta(minutes=15)
    when = START + timedelta(days=1)

    await log.purge(cutoff, logged_at=when, operator="beheer")

    purged = (await all_rows(log))[-1]
    assert purged.entry.event == "log_purged"
    assert purged.entry.logged_at == when
    assert purged.entry.operator == "beheer"
    assert purged.entry.reason == "retention"
    assert purged.entry.detail == f"deleted 1 row(s) logged before {cutoff.isoformat()}"
    assert purged.instance == "gateway-a"


async def test_verify_after_purge(log: SqlSsoLog) -> None:
    await log.append([launch(0), launch(10), launch(20)])
    await log.purge(START + timedelta(minutes=15), logged_at=START + timedelta(days=1))

    report = await log.verify()

    assert report.problem is None
    assert report.count == 2
    assert report.first is not None
    assert report.first.id == 3
    # The anchor is the hash of row 2, which the purge deleted.
    assert report.first.prev_hash != GENESIS_HASH


async def test_purge_everything_keeps_anchor(log: SqlSsoLog) -> None:
    rows = await log.append([launch(0), launch(1)])

    deleted = await log.purge(
        START + timedelta(days=1), logged_at=START + timedelta(days=2)
    )

    (purged,) = await all_rows(log)
    assert deleted == 2
    assert purged.id == 3
    assert purged.prev_hash == rows[-1].row_hash
    assert (await log.verify()).problem is None


async def test_purge_nothing_writes_nothing(log: SqlSsoLog) -> None:
    await log.append([launch(20)])

    deleted = await log.purge(START, logged_at=START + timedelta(days=1))

    assert deleted == 0
    assert len(await all_rows(log)) == 1


async def test_purge_nothing_recorded_on_request(log: SqlSsoLog) -> None:
    await log.append([launch(20)])

    await log.purge(START, logged_at=START, operator="beheer", record_empty=True)

    last = (await all_rows(log))[-1]
    assert last.entry.event == "log_purged"
    assert last.entry.detail is not None
    assert last.entry.detail.startswith("deleted 0 row(s)")


async def test_purge_stops_at_first_kept_row(log: SqlSsoLog) -> None:
    # Row 2 was appended late by a slow instance, with an older time.
    await log.append([launch(0), launch(30), launch(5), launch(40)])

    deleted = await log.purge(START + timedelta(minutes=20), logged_at=START)

    assert deleted == 1
    assert [row.id for row in await all_rows(log)] == [2, 3, 4, 5]
    assert (await log.verify()).problem is None


async def test_purge_rejects_naive_cutoff(log: SqlSsoLog) -> None:
    with pytest.raises(ValueError):
        await log.purge(START.replace(tzinfo=None), logged_at=START)


# --- reading -----------------------------------------------------------------


async def filtered(log: SqlSsoLog, **query: object) -> list[tuple[int, str | None]]:
    found = log.rows(LogQuery(**query))  # type: ignore[arg-type]
    return [(row.id, row.entry.ysis_user) async for row in found]


@pytest.fixture
async def mixed(log: SqlSsoLog) -> SqlSsoLog:
    """Four rows of two tenants, users and accounts, ten minutes apart."""
    await log.append(
        [
            launch(0, ysis_user="ysis-jan", medimo_account="medimo-jan"),
            launch(10, ysis_user="ysis-piet", medimo_account="medimo-piet"),
            launch(
                20, tenant="zuid", ysis_user="ysis-anna", medimo_account="medimo-jan"
            ),
            launch(30, ysis_user="ysis-jan", medimo_account="medimo-jan"),
        ]
    )
    return log


async def test_rows_by_tenant(mixed: SqlSsoLog) -> None:
    assert await filtered(mixed, tenant="zuid") == [(3, "ysis-anna")]


async def test_rows_by_ysis_user(mixed: SqlSsoLog) -> None:
    assert await filtered(mixed, user="ysis-jan") == [(1, "ysis-jan"), (4, "ysis-jan")]


async def test_rows_by_medimo_account(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, user="medimo-jan")

    assert found == [(1, "ysis-jan"), (3, "ysis-anna"), (4, "ysis-jan")]


async def test_rows_by_tenant_and_account(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, tenant="noord", user="medimo-jan")

    assert found == [(1, "ysis-jan"), (4, "ysis-jan")]


async def test_rows_since_inclusive(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, since=START + timedelta(minutes=20))

    assert [row_id for row_id, _ in found] == [3, 4]


async def test_rows_until_exclusive(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, until=START + timedelta(minutes=20))

    assert [row_id for row_id, _ in found] == [1, 2]


async def test_rows_time_window_with_offset(mixed: SqlSsoLog) -> None:
    amsterdam = START.astimezone(timezone_plus(1))

    found = await filtered(
        mixed,
        since=amsterdam + timedelta(minutes=5),
        until=amsterdam + timedelta(minutes=25),
    )

    assert [row_id for row_id, _ in found] == [2, 3]


async def test_rows_limit_keeps_newest(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, limit=2)

    assert [row_id for row_id, _ in found] == [3, 4]


async def test_rows_limit_after_filter(mixed: SqlSsoLog) -> None:
    found = await filtered(mixed, user="ysis-jan", limit=1)

    assert found == [(4, "ysis-jan")]


def timezone_plus(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


# --- the writer --------------------------------------------------------------


def new_writer(log: SqlSsoLog, **options: Any) -> SsoLogWriter:
    """Return a writer with short pauses whose clock stands at START."""
    settings: dict[str, Any] = {
        "queue_size": 1000,
        "retention": RetentionPeriod(1, "d"),
        "now": lambda: START,
        "first_pause": 0.05,
        "max_pause": 0.2,
        "flush_timeout": 5.0,
    }
    settings.update(options)
    return SsoLogWriter(log, **settings)


@pytest.fixture
async def writer(log: SqlSsoLog) -> AsyncIterator[SsoLogWriter]:
    """A started writer from ``new_writer``, stopped after the test."""
    started = new_writer(log)
    await started.start()
    yield started
    await started.stop()


async def rename_table(engine: AsyncEngine, old: str, new: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


def logged(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        record for record in caplog.records if getattr(record, "event", "") == event
    ]


async def test_writer_appends_queue(writer: SsoLogWriter, log: SqlSsoLog) -> None:
    writer.record(launch(0))
    writer.record(launch(1))

    await asyncio.wait_for(writer.flush(), 5)

    assert [row.entry.logged_at for row in await all_rows(log)] == [
        START,
        START + timedelta(minutes=1),
    ]


async def test_writer_keeps_order_across_batches(
    writer: SsoLogWriter, log: SqlSsoLog
) -> None:
    for number in range(BATCH_SIZE + 50):
        writer.record(launch(number, ysis_user=f"ysis-{number}"))
        if number % 40 == 0:
            await asyncio.sleep(0)

    await asyncio.wait_for(writer.flush(), 10)

    rows = await all_rows(log)
    assert [row.entry.ysis_user for row in rows] == [
        f"ysis-{number}" for number in range(BATCH_SIZE + 50)
    ]
    assert (await log.verify()).problem is None


async def test_writer_retries_until_table_back(
    writer: SsoLogWriter,
    log: SqlSsoLog,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await rename_table(engine, "sso_log", "sso_log_away")
    writer.record(launch(0))
    writer.record(launch(1))
    await asyncio.sleep(0.5)
    waiting = writer.pending

    await rename_table(engine, "sso_log_away", "sso_log")
    await asyncio.wait_for(writer.flush(), 5)

    assert waiting == 2
    assert len(await all_rows(log)) == 2
    assert len(logged(caplog, "sso_log_write_failed")) == 1
    assert len(logged(caplog, "sso_log_recovered")) == 1


async def test_writer_drops_when_queue_full(
    log: SqlSsoLog, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = new_writer(log, queue_size=100)
    await writer.start()
    await rename_table(engine, "sso_log", "sso_log_away")
    writer.record(launch(0))
    await asyncio.sleep(0.1)
    # One entry waits in the failed batch, and the queue takes 100 more.
    for number in range(1, 106):
        writer.record(launch(number))

    await rename_table(engine, "sso_log_away", "sso_log")
    await asyncio.wait_for(writer.flush(), 5)
    await writer.stop()

    rows = await all_rows(log)
    assert len(rows) == 102
    dropped = rows[-1].entry
    assert dropped.event == "entries_dropped"
    assert dropped.detail == "dropped 5 entries because the queue was full"
    assert len(logged(caplog, "sso_log_entry_dropped")) == 1


async def test_writer_stop_flushes(log: SqlSsoLog) -> None:
    writer = new_writer(log)
    await writer.start()
    writer.record(launch(0))
    writer.record(launch(1))

    await writer.stop()

    assert len(await all_rows(log)) == 2


async def test_writer_stop_ends_retry_pause(
    log: SqlSsoLog, engine: AsyncEngine
) -> None:
    writer = new_writer(log, first_pause=60.0, max_pause=60.0)
    await writer.start()
    await rename_table(engine, "sso_log", "sso_log_away")
    writer.record(launch(0))
    await asyncio.sleep(0.3)
    await rename_table(engine, "sso_log_away", "sso_log")

    # The first attempt failed, so the writer waits 60 s unless stopped.
    await asyncio.wait_for(writer.stop(), 5)

    assert len(await all_rows(log)) == 1


async def test_writer_stop_gives_up(
    log: SqlSsoLog, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = new_writer(log, flush_timeout=0.5)
    await writer.start()
    await rename_table(engine, "sso_log", "sso_log_away")
    writer.record(launch(0))

    await writer.stop()

    (lost,) = logged(caplog, "sso_log_lost")
    assert lost.entries == 1  # type: ignore[attr-defined]


async def test_writer_purges_at_start(log: SqlSsoLog) -> None:
    # Logged three days before the writer's clock, past a one-day retention.
    await log.append([launch(0)])
    writer = new_writer(log, now=lambda: START + timedelta(days=3))

    await writer.start()
    for _ in range(100):
        rows = await all_rows(log)
        if rows[0].entry.event == "log_purged":
            break
        await asyncio.sleep(0.05)
    await writer.stop()

    assert [row.entry.event for row in rows] == ["log_purged"]
    assert rows[0].entry.logged_at == START + timedelta(days=3)
    assert rows[0].entry.operator is None


async def test_writer_skips_invalid_entry(
    writer: SsoLogWriter, log: SqlSsoLog, caplog: pytest.LogCaptureFixture
) -> None:
    writer.record(Entry("no_such_event", START))
    writer.record(launch(0))

    await asyncio.wait_for(writer.flush(), 5)

    assert [row.entry.event for row in await all_rows(log)] == ["launch"]
    assert any("invalid SSO log entry" in record.message for record in caplog.records)
