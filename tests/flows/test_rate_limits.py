"""Limits on failed password checks, end to end over mutual TLS.

Each test starts a real gateway with small limits, a real redis-server and
the demo upstream, whose password for every account is ``demo-wachtwoord``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.harness import (
    GatewayHarness,
    UpstreamRequest,
    form_fields,
    launch,
    post_form,
)
from tests.support.services import RedisServer

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

RIGHT = "demo-wachtwoord"
WRONG = "fout"
SESSION = "__Host-sso_session"
LIMITED_TITLE = "Te veel pogingen"


def limits(
    account: int = 3, client: int = 50, per: str = "15m", **forms: Any
) -> dict[str, Any]:
    """Return gateway_overrides that set both attempt limits."""
    return {
        "forms": {
            "account_attempts": {"limit": account, "per": per},
            "client_attempts": {"limit": client, "per": per},
            **forms,
        }
    }


@dataclass
class Form:
    """A link or confirm form opened by a launch, ready to be posted."""

    gateway: GatewayHarness
    client: aiohttp.ClientSession
    path: str
    fields: dict[str, str]

    async def post(self, **values: str) -> aiohttp.ClientResponse:
        data = {**self.fields, **values}
        origin = self.gateway.base_url
        return await post_form(self.client, self.path, data, origin=origin)


async def open_form(gateway: GatewayHarness, tenant: str, user: str) -> Form:
    client = gateway.client(tenant)
    response = await launch(client, tenant, userId=user)
    path = response.headers["Location"]
    async with client.get(path) as page:
        assert page.status == 200
        fields = form_fields(await page.text())
    return Form(gateway, client, path, fields)


async def open_confirm(gateway: GatewayHarness) -> Form:
    """Open the confirm form of ``ysis-anna``, linked to ``medimo-anna``."""
    if await gateway.links("zuid") == {}:
        await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    return await open_form(gateway, "zuid", "ysis-anna")


def verify_calls(gateway: GatewayHarness) -> list[str]:
    """Return the upstream password checks: accounts/verify and verify-password."""
    return [call for call in gateway.api_calls if "/verify" in call]


async def fail_times(form: Form, count: int, **values: str) -> list[int]:
    """Post a wrong password ``count`` times and return the statuses."""
    statuses = []
    for _ in range(count):
        response = await form.post(**{"password": WRONG, **values})
        statuses.append(response.status)
    return statuses


def without_request_id(response: aiohttp.ClientResponse, text: str) -> str:
    return text.replace(response.headers["X-Request-Id"], "")


async def test_upstream_fault_charges_address(make_gateway: MakeGateway) -> None:
    # The signing key's file contains a secret that the upstream's API rejects,
    # so every password check ends in the API's Bearer challenge.
    overrides = limits(account=50, client=3)
    overrides["upstream"] = {"api_token": {"file": "secrets/signing-key"}}
    gateway = await make_gateway(gateway_overrides=overrides)
    form = await open_form(gateway, "noord", "ysis-piet")

    statuses = [(await form.post(username=f"user-{n}", password=WRONG)).status for n in range(3)]
    response = await form.post(username="piet", password=RIGHT)

    assert statuses == [502, 502, 502]
    # A fault upstream counts like a wrong password for the address.
    assert response.status == 429


# --- per account -----------------------------------------------------------------


async def test_link_account_locked_after_limit(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    form = await open_form(gateway, "noord", "ysis-piet")

    statuses = await fail_times(form, 3, username="piet")
    response = await form.post(username="piet", password=WRONG)

    assert statuses == [401, 401, 401]
    assert response.status == 429
    assert LIMITED_TITLE in await response.text()


async def test_link_lockout_refuses_right_password(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    form = await open_form(gateway, "noord", "ysis-piet")
    await fail_times(form, 3, username="piet")
    calls_before = len(verify_calls(gateway))

    response = await form.post(username="piet", password=RIGHT)

    assert response.status == 429
    assert len(verify_calls(gateway)) == calls_before
    assert await gateway.links("noord") == {}
    assert SESSION not in {cookie.key for cookie in form.client.cookie_jar}


async def test_link_lockout_ignores_case_and_spaces(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    form = await open_form(gateway, "noord", "ysis-piet")
    for variant in ("Piet", " PIET ", "piet"):
        await form.post(username=variant, password=WRONG)

    response = await form.post(username="pIeT", password=RIGHT)

    assert response.status == 429


async def test_confirm_account_locked_after_limit(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    form = await open_confirm(gateway)

    statuses = await fail_times(form, 3)
    response = await form.post(password=WRONG)

    assert statuses == [401, 401, 401]
    assert response.status == 429
    assert LIMITED_TITLE in await response.text()


async def test_confirm_lockout_refuses_right_password(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    form = await open_confirm(gateway)
    await fail_times(form, 3)
    calls_before = len(verify_calls(gateway))

    response = await form.post(password=RIGHT)

    assert response.status == 429
    assert len(verify_calls(gateway)) == calls_before
    assert SESSION not in {cookie.key for cookie in form.client.cookie_jar}


async def test_confirm_lockout_spans_launches(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=3))
    await fail_times(await open_confirm(gateway), 3)

    response = await (await open_confirm(gateway)).post(password=RIGHT)

    assert response.status == 429


async def test_unknown_and_known_user_alike(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=2))
    known = await open_form(gateway, "noord", "ysis-piet")
    unknown = await open_form(gateway, "noord", "ysis-klaas")

    known_statuses = await fail_times(known, 3, username="piet")
    unknown_statuses = await fail_times(unknown, 3, username="niemand")
    known_page = await known.post(username="piet", password=RIGHT)
    unknown_page = await unknown.post(username="niemand", password=RIGHT)

    assert known_statuses == unknown_statuses == [401, 401, 429]
    assert known_page.status == unknown_page.status == 429
    known_text = without_request_id(known_page, await known_page.text())
    unknown_text = without_request_id(unknown_page, await unknown_page.text())
    assert known_text == unknown_text


# --- successes -------------------------------------------------------------------


async def test_successes_never_lock_out(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=2))
    statuses = []
    for _ in range(3):
        response = await (await open_confirm(gateway)).post(password=RIGHT)
        statuses.append(response.status)

    failures = await fail_times(await open_confirm(gateway), 3)

    assert statuses == [303, 303, 303]
    assert failures == [401, 401, 429]


async def test_success_clears_account_failures(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=2))
    before = await fail_times(await open_confirm(gateway), 1)
    success = await (await open_confirm(gateway)).post(password=RIGHT)

    after = await fail_times(await open_confirm(gateway), 3)

    assert before == [401]
    assert success.status == 303
    assert after == [401, 401, 429]


async def test_success_keeps_client_failures(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=50, client=2))
    first = await fail_times(await open_form(gateway, "noord", "ysis-klaas"), 1)
    linked = await (await open_form(gateway, "noord", "ysis-piet")).post(
        username="piet", password=RIGHT
    )
    form = await open_form(gateway, "noord", "ysis-kees")

    later = [
        (await form.post(username=name, password=WRONG)).status
        for name in ("niemand-2", "niemand-3")
    ]

    assert first == [401]
    assert linked.status == 303
    assert later == [401, 429]


# --- per tenant and client address -----------------------------------------------


async def test_client_limit_across_usernames(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=50, client=3))
    form = await open_form(gateway, "noord", "ysis-piet")
    statuses = [
        (await form.post(username=f"niemand-{index}", password=WRONG)).status
        for index in range(3)
    ]

    response = await form.post(username="piet", password=RIGHT)

    assert statuses == [401, 401, 401]
    assert response.status == 429
    assert await gateway.links("noord") == {}


async def test_client_limit_is_per_tenant(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=50, client=2))
    noord = await open_form(gateway, "noord", "ysis-piet")
    statuses = [
        (await noord.post(username=f"niemand-{index}", password=WRONG)).status
        for index in range(3)
    ]

    response = await (await open_confirm(gateway)).post(password=RIGHT)

    assert statuses == [401, 401, 429]
    assert response.status == 303


# --- the window, timing, logs and Redis ------------------------------------------


async def test_lockout_ends_after_window(make_gateway: MakeGateway) -> None:
    # limits reads time.time() itself, so the harness clock cannot move its
    # window: the test uses a one-second window and waits it out.
    gateway = await make_gateway(gateway_overrides=limits(account=2, per="1s"))
    form = await open_form(gateway, "noord", "ysis-piet")
    locked = await fail_times(form, 3, username="piet")

    await asyncio.sleep(1.2)
    response = await form.post(username="piet", password=RIGHT)

    assert locked == [401, 401, 429]
    assert response.status == 303
    assert await gateway.links("noord") == {"ysis-piet": "medimo-piet"}


async def test_lockout_waits_minimum_time(make_gateway: MakeGateway) -> None:
    overrides = limits(account=1, min_failure_time="400ms")
    gateway = await make_gateway(gateway_overrides=overrides)
    form = await open_form(gateway, "noord", "ysis-piet")
    await fail_times(form, 1, username="piet")

    started = time.monotonic()
    response = await form.post(username="piet", password=RIGHT)
    elapsed = time.monotonic() - started

    assert response.status == 429
    assert elapsed >= 0.4


async def test_lockout_logged_without_username(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(gateway_overrides=limits(account=1))
    form = await open_form(gateway, "noord", "ysis-piet")
    await fail_times(form, 1, username="pietje-puk")
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="gateway"):
        response = await form.post(username="pietje-puk", password="geheim-123")

    assert response.status == 429
    [record] = [
        record
        for record in caplog.records
        if record.name == "gateway.auth" and record.__dict__.get("status") == 429
    ]
    assert record.__dict__["event"] == "password_rate_limited"
    assert record.__dict__["tenant"] == "noord"
    assert record.__dict__["request_id"] == response.headers["X-Request-Id"]
    assert record.__dict__["client"] == "127.0.0.1"
    logged = " ".join(
        str(value) for record in caplog.records for value in vars(record).values()
    )
    assert "pietje-puk" not in logged
    assert "geheim-123" not in logged


async def test_redis_loss_during_check_is_503(
    make_gateway: MakeGateway, killable_redis: RedisServer
) -> None:
    gateway = await make_gateway(
        redis_url=killable_redis.url, gateway_overrides=limits()
    )
    form = await open_form(gateway, "noord", "ysis-piet")

    def kill_redis_on_verify(request: UpstreamRequest) -> None:
        if request.path_qs.endswith("/accounts/verify"):
            killable_redis.stop()

    gateway.upstream_hooks.append(kill_redis_on_verify)

    # The failure cannot be counted, so the gateway must not return a 401.
    response = await form.post(username="piet", password=WRONG)

    assert response.status == 503
    assert await gateway.links("noord") == {}
