"""The database-down mode: cached links still log in, new links answer 503.

The database is a PostgreSQL one of the test's own, made to refuse
connections while the gateway runs, then allowed again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.harness import GatewayHarness, form_fields, launch, post_form, whoami
from tests.support.services import refuse_connections
from tests.test_admin import wait_for_readiness

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def gateway(postgres_database_url: str, make_gateway: MakeGateway) -> AsyncIterator[GatewayHarness]:
    # The database comes first, so that it is dropped after the gateway stops.
    started = await make_gateway(database_url=postgres_database_url)
    await started.add_link("noord", "ysis-jan", "medimo-jan")
    yield started
    await refuse_connections(postgres_database_url, False)


async def test_cached_link_logs_in(gateway: GatewayHarness, postgres_database_url: str) -> None:
    assert (await launch(gateway.client("noord"), "noord", userId="ysis-jan")).status == 303
    await refuse_connections(postgres_database_url, True)
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-jan")

    assert response.status == 303
    assert (await whoami(client))["X-Medimo-Account"] == "medimo-jan"


async def test_session_keeps_working(gateway: GatewayHarness, postgres_database_url: str) -> None:
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")
    await refuse_connections(postgres_database_url, True)

    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"


async def test_unlinked_user_gets_503(gateway: GatewayHarness, postgres_database_url: str) -> None:
    await refuse_connections(postgres_database_url, True)

    response = await launch(gateway.client("noord"), "noord", userId="ysis-piet")

    assert response.status == 503
    assert "Tijdelijk niet beschikbaar" in await response.text()
    assert "Traceback" not in await response.text()


async def test_new_link_gets_503(gateway: GatewayHarness, postgres_database_url: str) -> None:
    client = gateway.client("noord")
    path = (await launch(client, "noord", userId="ysis-piet")).headers["Location"]
    async with client.get(path) as page:
        fields = form_fields(await page.text())
    await refuse_connections(postgres_database_url, True)

    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 503


async def test_links_work_again_after_outage(gateway: GatewayHarness, postgres_database_url: str) -> None:
    await refuse_connections(postgres_database_url, True)
    assert (await launch(gateway.client("noord"), "noord", userId="ysis-piet")).status == 503

    await refuse_connections(postgres_database_url, False)
    client = gateway.client("noord")
    path = (await launch(client, "noord", userId="ysis-piet")).headers["Location"]
    async with client.get(path) as page:
        fields = form_fields(await page.text())
    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 303
    assert await gateway.links("noord") == {"ysis-jan": "medimo-jan", "ysis-piet": "medimo-piet"}


async def test_readyz_names_database(gateway: GatewayHarness, postgres_database_url: str) -> None:
    await refuse_connections(postgres_database_url, True)

    body = await wait_for_readiness(gateway, "degraded")

    assert body["checks"] == {"redis": "up", "database": "down", "upstream": "up", "upstream_api": "up"}
    assert "database" in body["degraded"]  # type: ignore[operator]
