"""Database engines and schema migrations of the gateway.

Two drivers are supported: ``sqlite+aiosqlite`` for a single instance and
``postgresql+asyncpg`` for several. Alembic scripts live in the package's
``migrations`` folder, so migrating works from any working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.errors import DatabaseUnavailable, SchemaOutdated

MIGRATIONS_FOLDER = Path(__file__).with_name("migrations")

SQLITE_SCHEME = "sqlite+aiosqlite"
POSTGRES_SCHEME = "postgresql+asyncpg"
ACCEPTED_URL_FORMS = (
    f"'{SQLITE_SCHEME}:///PATH' or "
    f"'{POSTGRES_SCHEME}://USER:PASSWORD@HOST:PORT/DATABASE'"
)
UPGRADE_HINT = "run 'sso-gateway db upgrade'"

#: How long SQLite waits for another writer's lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 5000

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine for a SQLite or PostgreSQL URL.

    Raises ValueError for any other driver. The message names only the URL
    scheme, so a password in the URL never reaches a log.
    """
    scheme = url_scheme(url)
    if scheme == SQLITE_SCHEME:
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    if scheme == POSTGRES_SCHEME:
        return create_async_engine(url, pool_pre_ping=True)
    if scheme is None:
        raise ValueError(f"database URL has no scheme: use {ACCEPTED_URL_FORMS}")
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use {ACCEPTED_URL_FORMS}"
    )


def url_scheme(url: str) -> str | None:
    """Return the scheme of a database URL, such as ``sqlite+aiosqlite``."""
    match = _SCHEME.match(url)
    return match.group(1) if match else None


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers go on while a writer holds the lock.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def shown_url(url: str) -> str:
    """Return a database URL fit for a message: the password is masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return f"{url_scheme(url) or 'database'}://..."


def describe_error(error: BaseException, url: str | None = None) -> str:
    """Word a database error in one line, without the SQL statement or its values.

    The driver's own message is the deepest cause: SQLAlchemy's wrapper adds
    the statement and its parameters, which may hold what a user typed. A
    password of ``url`` that the message repeats is masked.
    """
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    line = lines[0] if lines else type(cause).__name__
    if url is not None:
        try:
            password = make_url(url).password
        except (SQLAlchemyError, ValueError):
            password = None
        if password:
            line = line.replace(str(password), "***")
    return line


def unreachable(url: str, error: BaseException) -> DatabaseUnavailable:
    """Return the error for a database that could not be connected to or opened."""
    if url_scheme(url) == SQLITE_SCHEME:
        advice = "check database.url, and that its folder exists and may be written"
    else:
        advice = (
            "check database.url, that the PostgreSQL server runs and accepts "
            "connections, and that the database exists"
        )
    return DatabaseUnavailable(
        f"database {shown_url(url)} cannot be reached: "
        f"{describe_error(error, url)}: {advice}"
    )


@contextlib.asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Open a connection for an ``async with`` block.

    Raise DatabaseUnavailable when the connection cannot be opened; errors
    inside the block pass unchanged.
    """
    before = set(threading.enumerate())
    try:
        connection = await engine.connect()
    except (SQLAlchemyError, OSError) as error:
        url = engine.url.render_as_string(hide_password=False)
        if url_scheme(url) == SQLITE_SCHEME:
            await _sqlite_threads_stopped(before)
        raise unreachable(url, error) from error
    try:
        yield connection
    finally:
        await connection.close()


#: How long a failed SQLite connection may take to stop its thread, in seconds.
SQLITE_THREAD_STOP_TIMEOUT = 2.0


async def _sqlite_threads_stopped(before: set[threading.Thread]) -> None:
    """Wait until the thread of a failed aiosqlite connection has ended.

    aiosqlite stops a connection that failed to open without waiting: its
    thread reports to the event loop later, and prints a traceback if
    ``asyncio.run`` has closed the loop by then, as a command that exits on
    the failure does. The thread is one that was not there ``before`` and
    carries the name of aiosqlite's thread function.
    """
    for thread in set(threading.enumerate()) - before:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, SQLITE_THREAD_STOP_TIMEOUT)


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1`` to check that the database is reachable."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def alembic_config(url: str | None = None) -> Config:
    """Build an Alembic configuration for the package's migrations.

    The URL travels in ``config.attributes["url"]`` rather than in an ini
    option, because ini interpolation would mangle a ``%`` in a password.
    """
    config = Config()
    # Escape "%" because Alembic stores main options in a ConfigParser.
    config.set_main_option("script_location", str(MIGRATIONS_FOLDER).replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """Return the newest migration revision that this code expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_FOLDER}")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """Return the database's migration revision, or None if it has none.

    Raise DatabaseUnavailable when the database cannot be reached.
    """
    async with connect(engine) as connection:
        return await connection.run_sync(_read_revision)


async def _revision_at(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def require_current_schema(engine: AsyncEngine) -> None:
    """Raise SchemaOutdated unless the database is at the head revision.

    Every user of the database calls this first, so a database that cannot
    be reached raises DatabaseUnavailable here.
    """
    expected = head_revision()
    current = await current_revision(engine)
    if current == expected:
        return
    if current is None:
        raise SchemaOutdated(
            f"database has no gateway tables, expected schema revision "
            f"{expected!r}: {UPGRADE_HINT}"
        )
    if not _is_known_revision(current):
        raise _unknown_revision(current, expected)
    raise SchemaOutdated(
        f"database schema is at revision {current!r}, expected {expected!r}: "
        f"{UPGRADE_HINT}"
    )


def _unknown_revision(current: str, expected: str) -> SchemaOutdated:
    return SchemaOutdated(
        f"database schema is at revision {current!r}, which this gateway "
        f"version does not know (expected {expected!r}): install the gateway "
        f"version that wrote it or restore a matching database"
    )


def _is_known_revision(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(url: str) -> list[tuple[str | None, str]]:
    """Migrate the database at ``url`` to the head revision.

    Return each step that was applied, as the revisions it went from and to
    (``None`` for a database without gateway tables): an empty list means
    that the schema was already at the head. Raise DatabaseUnavailable when
    the database cannot be reached, and SchemaOutdated when a newer gateway
    version wrote it.

    Alembic's environment runs its own event loop, so call this from
    synchronous code or a worker thread, never inside a running loop.
    """
    current = asyncio.run(_revision_at(url))
    if current is not None and not _is_known_revision(current):
        raise _unknown_revision(current, head_revision())
    config = alembic_config(url)
    applied: list[tuple[str | None, str]] = []
    config.attributes["applied"] = applied
    command.upgrade(config, "head")
    return applied
