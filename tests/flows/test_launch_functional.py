"""End to end: launches over real mutual TLS through to the demo upstream."""

from __future__ import annotations

from gateway.signature import verify_request
from tests.support.harness import GatewayHarness, launch, whoami


async def test_linked_launch_lands_logged_in(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-jan")

    assert response.status == 303
    assert response.headers["Location"] == "/"
    assert "__Host-sso_session" in {cookie.key for cookie in client.cookie_jar}
    identity = await whoami(client)
    assert identity["X-Medimo-Account"] == "medimo-jan"
    assert identity["X-Medimo-Tenant"] == "noord"
    assert identity["X-Ysis-User"] == "ysis-jan"
    assert identity["X-Medimo-Auth-Method"] == "ysis"
    assert "X-Medimo-Client" not in identity
