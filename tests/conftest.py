"""Fixtures shared by the whole suite: real Redis and real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import GatewayHarness
from tests.support.services import RedisServer, postgres_database, redis_server


@pytest.fixture(scope="session")
def redis_session_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer]:
    """One redis-server for tests that only need Redis to be there."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_session_server: RedisServer) -> Iterator[str]:
    """URL of the shared redis-server, emptied before each test."""
    redis_session_server.flush()
    yield redis_session_server.url


@pytest.fixture
def killable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start."""
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLAlchemy URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """SQLAlchemy URL of an empty PostgreSQL database of this test's own."""
    with postgres_database() as url:
        yield url


@pytest.fixture
async def make_gateway(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[Callable[..., Awaitable[GatewayHarness]]]:
    """Start real gateways for a test: ``await make_gateway(tenants=..., ...)``.

    ``peer_of=first`` starts a second instance of ``first``'s deployment (see
    ``GatewayHarness.peer``); further options then override what it shares.
    """
    started: list[GatewayHarness] = []

    async def factory(
        peer_of: GatewayHarness | None = None, **options: Any
    ) -> GatewayHarness:
        folder = tmp_path / f"gateway-{len(started)}"
        folder.mkdir()
        if peer_of is not None:
            harness = peer_of.peer(folder, **options)
        else:
            options.setdefault("redis_url", redis_url)
            harness = GatewayHarness(folder, **options)
        started.append(harness)
        return await harness.start()

    yield factory
    for harness in started:
        await harness.stop()


@pytest.fixture
async def gateway(make_gateway: Callable[..., Awaitable[GatewayHarness]]) -> GatewayHarness:
    """A gateway with the default tenants ``noord`` and ``zuid``."""
    return await make_gateway()
