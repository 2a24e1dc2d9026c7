"""Fixtures of the operations tests: gateways run by ``sso-gateway serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import GatewayHarness
from tests.support.served import ServedGateway, start_served

#: File watching is off unless a test turns it on, so that a test that edits
#: files and sends SIGHUP sees exactly one reload.
FAST_SETTINGS: dict[str, Any] = {
    "config_watch_interval": "0s",
    "shutdown_timeout": "10s",
}

#: A file watch quick enough for tests.
WATCHING: dict[str, Any] = {"config_watch_interval": "200ms"}

StartServed = Callable[..., Awaitable[ServedGateway]]


@pytest.fixture
async def serve_gateway(tmp_path: Path, redis_url: str) -> AsyncIterator[StartServed]:
    """Start ``sso-gateway serve`` processes: ``await serve_gateway(workers=2)``.

    Keyword arguments other than ``workers`` go to ``GatewayHarness``;
    ``gateway_overrides`` is merged over ``FAST_SETTINGS``.
    """
    started: list[ServedGateway] = []

    async def factory(*, workers: int = 1, **options: Any) -> ServedGateway:
        folder = tmp_path / f"served-{len(started)}"
        folder.mkdir()
        overrides = {**FAST_SETTINGS, **options.pop("gateway_overrides", {})}
        harness = GatewayHarness(
            folder, redis_url=redis_url, gateway_overrides=overrides, **options
        )
        served = await start_served(harness, workers=workers)
        started.append(served)
        return served

    yield factory
    for served in started:
        await served.close()
