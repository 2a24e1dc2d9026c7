"""Client context: clientId and BSN matched to a Medimo client at launch."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tests.support.harness import GatewayHarness, launch, whoami

MakeGateway = Callable[..., Awaitable[GatewayHarness]]


async def landing(gateway: GatewayHarness, **params: str) -> tuple[aiohttp.ClientSession, str, str]:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    response = await launch(client, "noord", userId="ysis-jan", **params)
    assert response.status == 303
    location = response.headers["Location"]
    async with client.get(location, allow_redirects=False) as page:
        return client, location, html.unescape(await page.text())


async def test_external_id_opens_client(gateway: GatewayHarness) -> None:
    client, location, _ = await landing(gateway, clientId="ysis-client-1")
    assert location == "/clients/c-1001/status"
    assert (await whoami(client))["X-Medimo-Client"] == "c-1001"


async def test_bsn_fallback_when_external_id_unknown(gateway: GatewayHarness) -> None:
    client, location, _ = await landing(gateway, clientId="unknown-id", bsn="123456782")
    assert location == "/clients/c-1003/status"
    assert (await whoami(client))["X-Medimo-Client"] == "c-1003"


async def test_bsn_alone_opens_client(gateway: GatewayHarness) -> None:
    _, location, _ = await landing(gateway, bsn="123456782")
    assert location == "/clients/c-1003/status"


async def test_several_matches_show_unknown_client(gateway: GatewayHarness) -> None:
    client, location, text = await landing(gateway, clientId="ysis-client-dubbel", bsn="123456782")
    assert location.startswith("/sso/melding/onbekende-client")
    assert "Onbekende cliënt" in text
    assert "X-Medimo-Client" not in await whoami(client)


async def test_no_match_shows_unknown_client_logged_in(gateway: GatewayHarness) -> None:
    client, _, text = await landing(gateway, clientId="no-such-client")
    assert "Onbekende cliënt" in text
    assert 'href="/"' in text
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"


async def test_client_without_access_shows_rights_notice(gateway: GatewayHarness) -> None:
    client, _, text = await landing(gateway, clientId="ysis-client-2")
    assert "Onvoldoende rechten voor deze cliënt" in text
    identity = await whoami(client)
    assert identity["X-Ysis-User"] == "ysis-jan"
    assert "X-Medimo-Client" not in identity


async def test_notice_leads_to_view_without_client(gateway: GatewayHarness) -> None:
    _, _, text = await landing(gateway, clientId="no-such-client", view="werklijst")
    assert 'href="/werklijst"' in text


async def test_notice_leads_to_menu_for_client_view(gateway: GatewayHarness) -> None:
    _, _, text = await landing(gateway, clientId="no-such-client", view="toedienen")
    assert 'href="/"' in text


async def test_notice_needs_session(gateway: GatewayHarness) -> None:
    async with gateway.client("noord").get("/sso/melding/onbekende-client") as response:
        assert response.status == 401


async def test_malformed_bsn_makes_no_lookup(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan", clientId="ysis-client-1", bsn="123456789")
    assert response.status == 400
    assert not [call for call in gateway.api_calls if "/clients" in call]


async def test_client_context_off_ignores_client(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"client_context": False}})
    client, location, _ = await landing(gateway, clientId="ysis-client-1")
    assert location == "/"
    assert "X-Medimo-Client" not in await whoami(client)
    assert not [call for call in gateway.api_calls if "/clients" in call]


async def test_client_context_on_by_default(gateway: GatewayHarness) -> None:
    assert gateway.config is not None
    assert gateway.config.tenants["noord"].config.client_context is True


async def test_client_survives_link_form(gateway: GatewayHarness) -> None:
    from tests.support.harness import form_fields, post_form

    client = gateway.client("noord")
    response = await launch(client, "noord", userId="ysis-piet", clientId="ysis-client-1")
    async with client.get(response.headers["Location"]) as page:
        fields = form_fields(await page.text())
    done = await post_form(client, "/sso/ysis/noord/link", {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)
    assert done.headers["Location"] == "/clients/c-1001/status"
    assert (await whoami(client))["X-Medimo-Client"] == "c-1001"


@pytest.mark.parametrize(
    ("view", "params", "expected"),
    [
        pytest.param(None, {}, "/", id="none-without-client"),
        pytest.param(None, {"clientId": "ysis-client-1"}, "/clients/c-1001/status", id="none-with-client"),
        pytest.param("default", {"clientId": "ysis-client-1"}, "/", id="default"),
        pytest.param("status", {"clientId": "ysis-client-1"}, "/clients/c-1001/status", id="status"),
        pytest.param("status", {}, "/", id="status-without-client"),
        pytest.param("medicatiestatus", {"clientId": "ysis-client-1"}, "/clients/c-1001/medicatiestatus", id="medicatiestatus"),
        pytest.param("medicatiestatus", {}, "/", id="medicatiestatus-without-client"),
        pytest.param("bestellen", {"clientId": "ysis-client-1"}, "/clients/c-1001/bestellen", id="bestellen"),
        pytest.param("toedienen", {"clientId": "ysis-client-1"}, "/clients/c-1001/toedienen", id="toedienen"),
        pytest.param("dispense", {"clientId": "ysis-client-1"}, "/clients/c-1001/dispense", id="dispense"),
        pytest.param("dispense", {}, "/", id="dispense-without-client"),
        pytest.param("bestelronde", {}, "/bestelronde", id="bestelronde"),
        pytest.param("deelronde", {}, "/deelronde", id="deelronde"),
        pytest.param("werklijst", {}, "/werklijst", id="werklijst"),
        pytest.param("werklijstafdeling", {}, "/werklijst/afdeling", id="werklijstafdeling"),
        pytest.param("aanvraagmenu", {}, "/aanvragen", id="aanvraagmenu"),
        pytest.param("tdlmenu", {}, "/tdl", id="tdlmenu"),
        pytest.param("tdrmenu", {}, "/tdr", id="tdrmenu"),
        pytest.param("medimo-app", {"clientId": "ysis-client-1"}, "/app", id="medimo-app-with-client"),
        pytest.param("nonexistent", {}, "/", id="unknown"),
        pytest.param("//evil.example", {}, "/", id="scheme-relative"),
        pytest.param("/\\evil.example", {}, "/", id="backslash"),
        pytest.param("%2F%2Fevil", {}, "/", id="encoded-slashes"),
        pytest.param("javascript:alert(1)", {}, "/", id="javascript"),
        pytest.param("default\r\nSet-Cookie: x=1", {}, "/", id="crlf"),
        pytest.param("default%0d%0aSet-Cookie:%20x=1", {}, "/", id="crlf-encoded"),
        pytest.param("default%250d%250aSet-Cookie:%2520x=1", {}, "/", id="crlf-double-encoded"),
        pytest.param("default\u2028", {}, "/", id="line-separator"),
        pytest.param("/sso/logout", {}, "/", id="gateway-path"),
        pytest.param("https://localhost/sso/ysis/zuid", {}, "/", id="other-tenant"),
    ],
)
async def test_view_landing(gateway: GatewayHarness, view: str | None, params: dict[str, str], expected: str) -> None:
    if view is not None:
        params = {**params, "view": view}
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan", **params)
    assert response.status == 303
    assert response.headers["Location"] == expected
    assert not any(line.startswith("x=") for line in response.headers.getall("Set-Cookie", []))
    assert all("\n" not in value and "\r" not in value for value in response.headers.values())


async def test_view_not_allowed_lands_on_menu(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"views": ["status", "werklijst"]}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    allowed = await launch(gateway.client("noord"), "noord", userId="ysis-jan", view="werklijst")
    refused = await launch(gateway.client("noord"), "noord", userId="ysis-jan", view="deelronde")
    assert allowed.headers["Location"] == "/werklijst"
    assert refused.headers["Location"] == "/"


async def test_status_not_allowed_without_view(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"views": ["werklijst"]}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan", clientId="ysis-client-1")
    assert response.headers["Location"] == "/"


async def test_view_template_from_config(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides={"views": {"werklijst": "/lijsten/werk"}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan", view="werklijst")
    assert response.headers["Location"] == "/lijsten/werk"
