"""The link and confirm forms, end to end over mutual TLS."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tests.support.harness import GatewayHarness, form_fields, launch, post_form, whoami
from tests.support.services import RedisServer

PENDING = "__Host-sso_pending"
SESSION = "__Host-sso_session"


async def open_form(gateway: GatewayHarness, client: aiohttp.ClientSession, tenant: str, user: str) -> tuple[str, dict[str, str]]:
    response = await launch(client, tenant, userId=user)
    path = response.headers["Location"]
    async with client.get(path) as page:
        assert page.status == 200
        assert page.headers["Cache-Control"] == "no-store"
        assert "Content-Security-Policy" in page.headers
        return path, form_fields(await page.text())


async def test_self_link_then_launch_without_form(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    assert path == "/sso/ysis/noord/link"

    response = await post_form(client, path, {**fields, "username": " Piet ", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 303
    assert response.headers["Location"] == "/"
    assert await gateway.links("noord") == {"ysis-piet": "medimo-piet"}
    assert (await whoami(client))["X-Medimo-Account"] == "medimo-piet"
    second = await launch(gateway.client("noord"), "noord", userId="ysis-piet")
    assert second.status == 303
    assert second.headers["Location"] == "/"


async def test_link_form_shows_tenant_and_user(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    response = await launch(client, "noord", userId="ysis-piet")
    async with client.get(response.headers["Location"]) as page:
        text = await page.text()
    assert "Noord" in text
    assert "ysis-piet" in text
    assert '<label for="username">' in text
    assert '<label for="password">' in text


async def test_link_wrong_password_changes_nothing(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    response = await post_form(client, path, {**fields, "username": "piet", "password": "fout"}, origin=gateway.base_url)

    assert response.status == 401
    assert await gateway.links("noord") == {}
    assert SESSION not in {cookie.key for cookie in client.cookie_jar}
    async with client.get("/whoami") as who:
        assert who.status == 401


async def test_link_unknown_user_same_answer(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    wrong_password = await client.post(path, data={**fields, "username": "piet", "password": "fout"}, headers={"Origin": gateway.base_url})
    unknown_user = await client.post(path, data={**fields, "username": "niemand", "password": "fout"}, headers={"Origin": gateway.base_url})

    assert wrong_password.status == unknown_user.status == 401
    first, second = await wrong_password.text(), await unknown_user.text()
    first = first.replace('value="piet"', 'value=""')
    second = second.replace('value="niemand"', 'value=""')
    assert first == second


async def test_rejected_api_token_not_wrong_password(
    make_gateway: Callable[..., Awaitable[GatewayHarness]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The signing key's file contains a secret that the upstream's API does not know.
    gateway = await make_gateway(
        gateway_overrides={"upstream": {"api_token": {"file": "secrets/signing-key"}}}
    )
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    # The user typed the right password; the gateway's own token failed.
    assert response.status == 502
    assert "onjuist" not in await response.text()
    events = [getattr(record, "event", "") for record in caplog.records]
    assert "api_token_rejected" in events
    assert "link_password_wrong" not in events
    assert await gateway.links("noord") == {}


async def test_failed_check_waits_minimum_time(make_gateway: Callable[..., Awaitable[GatewayHarness]]) -> None:
    gateway = await make_gateway(gateway_overrides={"forms": {"min_failure_time": "400ms"}})
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    started = time.monotonic()
    response = await post_form(client, path, {**fields, "username": "niemand", "password": "x"}, origin=gateway.base_url)

    assert response.status == 401
    assert time.monotonic() - started >= 0.4


async def test_pending_cookie_survives_wrong_password(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    await post_form(client, path, {**fields, "username": "piet", "password": "fout"}, origin=gateway.base_url)

    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 303


async def test_pending_launch_is_single_use(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    pending = next(cookie.value for cookie in client.cookie_jar if cookie.key == PENDING)
    await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    replay = gateway.client("noord")
    replay.cookie_jar.update_cookies({PENDING: pending})
    response = await post_form(replay, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 403
    assert SESSION not in {cookie.key for cookie in replay.cookie_jar}


async def test_form_post_without_origin_is_403(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    missing = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=None)
    foreign = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin="https://evil.example")

    assert missing.status == 403
    assert foreign.status == 403
    assert await gateway.links("noord") == {}


async def test_rejected_form_explains_way_on(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    response = await client.post(path, data={**fields, "username": "piet", "password": "x"}, headers={"Origin": "https://evil.example"})
    text = await response.text()

    assert response.status == 403
    assert "Dit formulier is verlopen, al gebruikt of niet vanaf deze pagina verstuurd." in text


async def test_form_post_with_bad_csrf_is_403(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    other = gateway.client("noord")
    _, other_fields = await open_form(gateway, other, "noord", "ysis-klaas")

    missing = await post_form(client, path, {"username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)
    foreign = await post_form(client, path, {**other_fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert missing.status == 403
    assert foreign.status == 403
    assert await gateway.links("noord") == {}


async def test_form_needs_pending_of_same_certificate(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    pending = next(cookie.value for cookie in client.cookie_jar if cookie.key == PENDING)
    stranger = gateway.client("zuid")
    stranger.cookie_jar.update_cookies({PENDING: pending})

    response = await post_form(stranger, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 403
    assert await gateway.links("noord") == {}


async def test_account_linked_elsewhere_is_refused(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-pieter", "medimo-piet")
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")

    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 409
    assert await gateway.links("noord") == {"ysis-pieter": "medimo-piet"}
    assert SESSION not in {cookie.key for cookie in client.cookie_jar}


async def test_confirm_right_password_logs_in(gateway: GatewayHarness) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    client = gateway.client("zuid")
    path, fields = await open_form(gateway, client, "zuid", "ysis-anna")

    response = await post_form(client, path, {**fields, "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 303
    assert (await whoami(client))["X-Medimo-Account"] == "medimo-anna"


async def test_confirm_wrong_password_refused(gateway: GatewayHarness) -> None:
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    client = gateway.client("zuid")
    path, fields = await open_form(gateway, client, "zuid", "ysis-anna")

    response = await post_form(client, path, {**fields, "password": "fout"}, origin=gateway.base_url)

    assert response.status == 401
    assert SESSION not in {cookie.key for cookie in client.cookie_jar}
    assert await gateway.links("zuid") == {"ysis-anna": "medimo-anna"}
    async with client.get("/whoami") as who:
        assert who.status == 401


async def test_forms_503_when_redis_down(
    make_gateway: Callable[..., Awaitable[GatewayHarness]], killable_redis: RedisServer
) -> None:
    gateway = await make_gateway(redis_url=killable_redis.url)
    client = gateway.client("noord")
    path, fields = await open_form(gateway, client, "noord", "ysis-piet")
    killable_redis.stop()

    response = await post_form(client, path, {**fields, "username": "piet", "password": "demo-wachtwoord"}, origin=gateway.base_url)

    assert response.status == 503
    assert await gateway.links("noord") == {}


async def test_linked_launch_works_without_redis(
    make_gateway: Callable[..., Awaitable[GatewayHarness]], killable_redis: RedisServer
) -> None:
    gateway = await make_gateway(redis_url=killable_redis.url)
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    killable_redis.stop()
    client = gateway.client("noord")

    response = await launch(client, "noord", userId="ysis-jan")

    assert response.status == 303
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"


async def test_logout_revokes_session(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")
    cookie = next(c.value for c in client.cookie_jar if c.key == SESSION)

    response = await post_form(client, "/sso/logout", {}, origin=gateway.base_url)

    assert response.status == 303
    assert response.headers["Location"] == "/sso/afgemeld"
    assert response.headers["Clear-Site-Data"] == '"cookies"'
    async with client.get("/sso/afgemeld") as page:
        assert "U bent afgemeld" in await page.text()
    replay = gateway.client("noord")
    replay.cookie_jar.update_cookies({SESSION: cookie})
    async with replay.get("/whoami") as who:
        assert who.status == 401


async def test_logout_without_origin_is_403(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-jan")

    response = await post_form(client, "/sso/logout", {}, origin=None)

    assert response.status == 403
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"
