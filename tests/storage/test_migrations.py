"""Schema migrations and engine creation on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import SchemaOutdated
from gateway.links.sql import SqlLinkStore
from gateway.links.store import SELF_LINK
from gateway.storage.database import (
    alembic_config,
    create_engine,
    current_revision,
    head_revision,
    ping,
    require_current_schema,
    upgrade,
)
from gateway.storage.revocations import SqlRevocationStore
from gateway.storage.tables import metadata, revocations, utc_now


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Engine on an empty database that the test migrates itself."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def describe_schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "tables": set(inspector.get_table_names()),
        "indexes": {
            index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
            for table in ("links", "revocations", "sso_log")
            for index in inspector.get_indexes(table)
        },
    }


def schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, metadata))


def test_head_revision_is_revoked_by() -> None:
    assert head_revision() == "0003"


async def test_upgrade_creates_tables(
    database_url: str,
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Alembic must not depend on an alembic.ini in the working directory.
    monkeypatch.chdir(tmp_path)

    await asyncio.to_thread(upgrade, database_url)

    async with engine.connect() as connection:
        schema = await connection.run_sync(describe_schema)
    assert {"links", "revocations", "sso_log", "alembic_version"} <= schema["tables"]
    assert schema["indexes"]["ix_links_tenant_ysis_user"] == (
        ("tenant", "ysis_user"),
        True,
    )
    assert schema["indexes"]["ix_links_tenant_medimo_account"] == (
        ("tenant", "medimo_account"),
        True,
    )
    assert schema["indexes"]["ix_revocations_expires_at"] == (("expires_at",), False)
    assert schema["indexes"]["ix_sso_log_prev_hash"] == (("prev_hash",), True)
    assert schema["indexes"]["ix_sso_log_logged_at"] == (("logged_at",), False)
    assert await current_revision(engine) == head_revision()


async def test_upgrade_from_first_revision(
    database_url: str, engine: AsyncEngine
) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0001")
    link = await SqlLinkStore(engine).add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    await asyncio.to_thread(upgrade, database_url)

    assert await current_revision(engine) == "0003"
    assert await SqlLinkStore(engine).list() == [link]


async def test_sso_log_rejects_update(database_url: str, engine: AsyncEngine) -> None:
    await asyncio.to_thread(upgrade, database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sso_log (id, logged_at, instance, event, prev_hash, "
                "row_hash) VALUES (1, CURRENT_TIMESTAMP, 'gw', 'launch', :zero, :one)"
            ),
            {"zero": "0" * 64, "one": "1" * 64},
        )

    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE sso_log SET tenant = 'noord'"))

    assert "sso_log is append-only" in str(caught.value)


async def test_downgrade_drops_sso_log(database_url: str, engine: AsyncEngine) -> None:
    await asyncio.to_thread(upgrade, database_url)

    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0001")

    async with engine.connect() as connection:
        tables = await connection.run_sync(
            lambda sync: set(inspect(sync).get_table_names())
        )
    assert "sso_log" not in tables
    assert "links" in tables


async def test_migration_matches_tables(database_url: str, engine: AsyncEngine) -> None:
    await asyncio.to_thread(upgrade, database_url)

    async with engine.connect() as connection:
        differences = await connection.run_sync(schema_differences)

    assert differences == []


async def test_second_upgrade_is_noop(database_url: str, engine: AsyncEngine) -> None:
    await asyncio.to_thread(upgrade, database_url)
    link = await SqlLinkStore(engine).add("care-north", "ysis-1", "medimo-1", SELF_LINK)

    await asyncio.to_thread(upgrade, database_url)

    assert await current_revision(engine) == head_revision()
    assert await SqlLinkStore(engine).list() == [link]


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    run = command.downgrade if down else command.upgrade
    run(alembic_config(url), revision)


def revocation_columns(connection: Connection) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns("revocations")}


async def test_upgrade_keeps_old_revocations(
    database_url: str, engine: AsyncEngine
) -> None:
    await asyncio.to_thread(migrate, database_url, "0001")
    later = utc_now() + timedelta(hours=1)
    async with engine.begin() as connection:
        await connection.execute(
            revocations.insert().values(
                kind="tenant", tenant="care-north", subject="",
                revoked_at=utc_now(), expires_at=later,
            )
        )

    await asyncio.to_thread(upgrade, database_url)

    (old,) = await SqlRevocationStore(engine).since(0)
    assert (old.kind, old.tenant, old.revoked_by) == ("tenant", "care-north", None)


async def test_downgrade_drops_revoked_by(
    database_url: str, engine: AsyncEngine
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    later = utc_now() + timedelta(hours=1)
    await SqlRevocationStore(engine).add(
        "tenant", "care-north", "", later, revoked_by="beheer"
    )

    await asyncio.to_thread(migrate, database_url, "0001", down=True)

    async with engine.connect() as connection:
        columns = await connection.run_sync(revocation_columns)
        count = await connection.scalar(text("SELECT count(*) FROM revocations"))
    assert "revoked_by" not in columns
    assert count == 1


async def test_require_schema_on_empty_database(engine: AsyncEngine) -> None:
    assert await current_revision(engine) is None

    with pytest.raises(SchemaOutdated) as caught:
        await require_current_schema(engine)

    message = str(caught.value)
    assert "has no gateway tables" in message
    assert f"'{head_revision()}'" in message
    assert "run 'sso-gateway db upgrade'" in message


async def test_require_schema_after_upgrade(
    database_url: str, engine: AsyncEngine
) -> None:
    await asyncio.to_thread(upgrade, database_url)

    await require_current_schema(engine)
    await ping(engine)


async def test_require_schema_unknown_revision(
    database_url: str, engine: AsyncEngine
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE alembic_version SET version_num = '9999'")
        )

    with pytest.raises(SchemaOutdated) as caught:
        await require_current_schema(engine)

    message = str(caught.value)
    assert "at revision '9999'" in message
    assert "does not know" in message
    assert f"expected '{head_revision()}'" in message


async def test_sqlite_pragmas_on(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as connection:
            journal = await connection.scalar(text("PRAGMA journal_mode"))
            foreign_keys = await connection.scalar(text("PRAGMA foreign_keys"))
            busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))
    finally:
        await engine.dispose()

    assert journal == "wal"
    assert foreign_keys == 1
    assert busy_timeout == 5000


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("mysql://gateway:s3cret-pw@db.example/gateway", "mysql"),
        ("mysql+aiomysql://gateway:s3cret-pw@db.example/gateway", "mysql+aiomysql"),
        ("postgresql://gateway:s3cret-pw@db.example/gateway", "postgresql"),
        ("sqlite:///gateway.db", "sqlite"),
    ],
)
def test_create_engine_rejects_driver(url: str, scheme: str) -> None:
    with pytest.raises(ValueError) as caught:
        create_engine(url)

    message = str(caught.value)
    assert f"unsupported database URL scheme {scheme!r}" in message
    assert "sqlite+aiosqlite:///" in message
    assert "postgresql+asyncpg://" in message
    assert "s3cret-pw" not in message


def test_create_engine_rejects_missing_scheme() -> None:
    with pytest.raises(ValueError) as caught:
        create_engine("s3cret-pw@db.example/gateway")

    message = str(caught.value)
    assert "has no scheme" in message
    assert "s3cret-pw" not in message
