"""End to end: launches over real mutual TLS through to the demo upstream."""

from __future__ import annotations

import html

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.signature import verify_request
from tests.support.harness import GatewayHarness, launch, whoami

SESSION = "__Host-sso_session"
PENDING = "__Host-sso_pending"


def cookie_names(client: aiohttp.ClientSession) -> set[str]:
    return {cookie.key for cookie in client.cookie_jar}


async def test_linked_launch_lands_logged_in(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-jan")

    assert response.status == 303
    assert response.headers["Location"] == "/"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert SESSION in cookie_names(client)
    identity = await whoami(client)
    assert identity["X-Medimo-Account"] == "medimo-jan"
    assert identity["X-Medimo-Tenant"] == "noord"
    assert identity["X-Ysis-User"] == "ysis-jan"
    assert identity["X-Medimo-Auth-Method"] == "ysis"
    assert "X-Medimo-Client" not in identity


async def test_linked_launch_signature_verifies(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")

    async with client.get("/demo/echo?a=1&b=%2F") as response:
        echo = await response.json()

    headers = CIMultiDict((name, value) for name, value in echo["headers"])
    target = echo["path_qs"]
    assert target.startswith("/demo/echo?a=1&b=")
    assert verify_request([gateway.signing_key], "GET", target, headers)
    assert not verify_request([b"x" * 32], "GET", target, headers)
    assert not verify_request([gateway.signing_key], "POST", target, headers)


async def test_launch_cookie_flags(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-jan")

    cookie = next(line for line in response.headers.getall("Set-Cookie") if line.startswith(SESSION))
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes
    assert not any(part.startswith(("domain", "max-age", "expires")) for part in attributes)
    assert response.headers["Cache-Control"] == "no-store"


async def test_unlinked_launch_goes_to_link_form(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-piet")

    assert response.status == 303
    assert response.headers["Location"] == "/sso/ysis/noord/link"
    assert cookie_names(client) == {PENDING}


async def test_linked_confirm_tenant_goes_to_confirm_form(gateway: GatewayHarness) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    client = gateway.client("zuid")

    response = await launch(client, "zuid", userId="ysis-anna")

    assert response.status == 303
    assert response.headers["Location"] == "/sso/ysis/zuid/confirm"
    assert cookie_names(client) == {PENDING}


async def test_post_launch_reads_form_body(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    async with client.post("/sso/ysis/noord", data={"userId": "ysis-jan"}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"


async def test_post_launch_with_query_is_400(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")

    async with client.post("/sso/ysis/noord?userId=ysis-jan", data={"userId": "ysis-jan"}, allow_redirects=False) as response:
        assert response.status == 400
    assert cookie_names(client) == set()


async def test_second_user_replaces_first(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await gateway.add_link("noord", "ysis-piet", "medimo-piet")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")
    first_cookie = next(c.value for c in client.cookie_jar if c.key == SESSION)

    await launch(client, "noord", userId="ysis-piet")

    assert (await whoami(client))["X-Ysis-User"] == "ysis-piet"
    replay = gateway.client("noord")
    replay.cookie_jar.update_cookies({SESSION: first_cookie})
    async with replay.get("/whoami") as response:
        assert response.status == 401


# --- refusals: each leaves no cookie, no link and nothing upstream -------------


async def assert_refused(client: aiohttp.ClientSession, path: str, status: int) -> str:
    async with client.get(path, allow_redirects=False) as response:
        body = await response.text()
        assert response.status == status
        assert "Set-Cookie" not in response.headers
        assert response.headers["Cache-Control"] == "no-store"
        assert '<html lang="nl">' in body
    assert cookie_names(client) == set()
    return body


async def test_no_certificate_is_403(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    body = await assert_refused(gateway.client(), "/sso/ysis/noord?userId=ysis-jan", 403)
    assert "Toegang geweigerd" in body


async def test_other_tenant_certificate_is_403(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await assert_refused(gateway.client("zuid"), "/sso/ysis/noord?userId=ysis-jan", 403)


async def test_unknown_tenant_is_same_403(gateway: GatewayHarness) -> None:
    known = await assert_refused(gateway.client("zuid"), "/sso/ysis/noord?userId=ysis-jan", 403)
    unknown = await assert_refused(gateway.client("noord"), "/sso/ysis/nergens?userId=ysis-jan", 403)
    invalid = await assert_refused(gateway.client("noord"), "/sso/ysis/Noord?userId=ysis-jan", 403)

    def strip_id(page: str) -> str:
        return page.split("verzoek-ID")[0]

    assert strip_id(known) == strip_id(unknown) == strip_id(invalid)


async def test_address_outside_allowlist_is_403(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(tenants={"noord": {"allowed_ips": ["10.9.0.0/16"]}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await assert_refused(gateway.client("noord"), "/sso/ysis/noord?userId=ysis-jan", 403)


async def test_empty_allowlist_admits_nobody(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(tenants={"noord": {"allowed_ips": []}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await assert_refused(gateway.client("noord"), "/sso/ysis/noord?userId=ysis-jan", 403)


async def test_forwarded_for_from_untrusted_peer_ignored(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(tenants={"noord": {"allowed_ips": ["10.9.0.0/16"]}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    async with client.get(
        "/sso/ysis/noord?userId=ysis-jan",
        headers={"X-Forwarded-For": "10.9.0.5", "X-Real-IP": "10.9.0.5", "Forwarded": "for=10.9.0.5"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403
    assert cookie_names(client) == set()


async def test_forwarded_for_from_trusted_proxy_used(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(
        tenants={"noord": {"allowed_ips": ["10.9.0.0/16"]}},
        gateway_overrides={"trusted_proxies": ["127.0.0.1/32"]},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    allowed = await client.get("/sso/ysis/noord?userId=ysis-jan", headers={"X-Forwarded-For": "10.9.0.5"}, allow_redirects=False)
    prepended = await gateway.client("noord").get(
        "/sso/ysis/noord?userId=ysis-jan",
        headers={"X-Forwarded-For": "10.9.0.5, 192.0.2.1"},
        allow_redirects=False,
    )

    assert allowed.status == 303
    assert prepended.status == 403


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="missing"),
        pytest.param("userId=", id="empty"),
        pytest.param("userId=a&userId=b", id="repeated"),
        pytest.param("userId=" + "a" * 65, id="too-long"),
        pytest.param("userId=jan%20de%20boer", id="space"),
        pytest.param("userId=%3Cscript%3E", id="markup"),
        pytest.param("userId=jan%0d%0a", id="crlf"),
        pytest.param("userId=j%C3%A1n", id="non-ascii"),
        pytest.param("userId=jan&view=a&view=b", id="repeated-view"),
        pytest.param("userId=jan&clientId=a%2Fb", id="bad-client-id"),
        pytest.param("userId=jan&bsn=123456789", id="bsn-elfproef"),
        pytest.param("userId=jan&bsn=12345678", id="bsn-short"),
    ],
)
async def test_bad_parameters_are_400(gateway: GatewayHarness, query: str) -> None:
    body = await assert_refused(gateway.client("noord"), f"/sso/ysis/noord?{query}", 400)
    assert "Ongeldig verzoek" in body
    assert await gateway.links("noord") == {}


async def test_bad_bsn_page_hides_value(gateway: GatewayHarness) -> None:
    body = await assert_refused(gateway.client("noord"), "/sso/ysis/noord?userId=jan&bsn=123456789", 400)
    assert "'bsn'" in html.unescape(body)
    assert "123456789" not in body


async def test_self_link_disabled_is_403(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = await make_gateway(tenants={"noord": {"allow_self_link": False}})
    await assert_refused(gateway.client("noord"), "/sso/ysis/noord?userId=ysis-piet", 403)


async def test_request_without_cookie_is_401(gateway: GatewayHarness) -> None:
    body = await assert_refused(gateway.client("noord"), "/whoami", 401)
    assert "Start Medimo opnieuw vanuit Ysis" in body


async def test_wrong_host_is_421(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    async with client.get("/sso/ysis/noord?userId=jan", headers={"Host": "evil.example"}) as response:
        assert response.status == 421


@pytest.mark.parametrize("host", ["LOCALHOST", "localhost.", "127.0.0.1:1234"])
async def test_host_normalised(gateway: GatewayHarness, host: str) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    async with client.get("/sso/ysis/noord?userId=ysis-jan", headers={"Host": host}, allow_redirects=False) as response:
        assert response.status == 303


async def test_unsupported_method_is_405(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    async with client.request("TRACE", "/whoami") as response:
        assert response.status == 405


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        pytest.param("GET", "/sso/logout", "POST", id="get-logout"),
        pytest.param("PUT", "/sso/ysis/noord", "GET,POST", id="put-launch"),
        pytest.param("DELETE", "/sso/ysis/noord/link", "GET,POST", id="delete-link-form"),
    ],
)
async def test_wrong_method_on_own_route_is_405(
    gateway: GatewayHarness, method: str, path: str, allow: str
) -> None:
    async with gateway.client("noord").request(method, path, allow_redirects=False) as response:
        assert response.status == 405
        assert response.headers["Allow"] == allow
        assert "Methode niet toegestaan" in await response.text()


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("localhost:abc", id="letters-as-port"),
        pytest.param("localhost:99999", id="port-out-of-range"),
        pytest.param("localhost:", id="empty-port"),
        pytest.param("local host", id="space"),
        pytest.param("[::1", id="open-bracket"),
        pytest.param("localhost:1:2", id="two-ports"),
    ],
)
async def test_malformed_host_is_400(gateway: GatewayHarness, host: str) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    async with client.get("/sso/ysis/noord?userId=ysis-jan", headers={"Host": host}, allow_redirects=False) as response:
        assert response.status == 400
        assert host not in await response.text()


@pytest.mark.parametrize("path", ["/sso/ysis/no%72d", "/sso/ysis/%6Eoord/link"])
async def test_encoded_tenant_name_is_403(gateway: GatewayHarness, path: str) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    async with client.get(f"{path}?userId=ysis-jan", allow_redirects=False) as response:
        assert response.status == 403
    assert "__Host-sso_session" not in {cookie.key for cookie in client.cookie_jar}


@pytest.mark.parametrize("path", ["/gateway-api/v1/accounts/verify", "/gateway-api"])
async def test_upstream_api_not_proxied(gateway: GatewayHarness, path: str) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")
    before = len(gateway.upstream_received)

    async with client.post(path, json={"username": "jan", "password": "x"}) as response:
        assert response.status == 404
    assert len(gateway.upstream_received) == before
