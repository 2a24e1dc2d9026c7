"""Which address the allowlist sees, through a real gateway over mutual TLS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from tests.support.harness import GatewayHarness, launch
from tests.test_proxy_protocol import send_through_balancer
from tests.test_server_tls import statuses

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

FORWARDING_HEADERS = [
    pytest.param({"X-Forwarded-For": "192.0.2.7"}, id="x-forwarded-for"),
    pytest.param({"X-Real-IP": "192.0.2.7"}, id="x-real-ip"),
    pytest.param({"Forwarded": "for=192.0.2.7"}, id="forwarded"),
    pytest.param({"True-Client-IP": "192.0.2.7"}, id="true-client-ip"),
]


@pytest.mark.parametrize("headers", FORWARDING_HEADERS)
async def test_untrusted_forwarding_ignored_and_logged(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.auth")
    gateway = await make_gateway(tenants={"noord": {"allowed_ips": ["192.0.2.7/32"]}})
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    async with client.get("/sso/ysis/noord?userId=ysis-jan", headers=headers, allow_redirects=False) as response:
        assert response.status == 403

    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "ip_not_allowed"]
    assert record.peer == "127.0.0.1"  # type: ignore[attr-defined]
    assert record.client == "127.0.0.1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("headers", FORWARDING_HEADERS[1:])
async def test_only_x_forwarded_for_from_trusted_proxy(make_gateway: MakeGateway, headers: dict[str, str]) -> None:
    gateway = await make_gateway(
        tenants={"noord": {"allowed_ips": ["192.0.2.7/32"]}},
        gateway_overrides={"trusted_proxies": ["127.0.0.1/32"]},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    async with gateway.client("noord").get("/sso/ysis/noord?userId=ysis-jan", headers=headers, allow_redirects=False) as response:
        assert response.status == 403


async def test_trusted_proxy_in_range_admits_not_all(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        tenants={"noord": {"allowed_ips": ["127.0.0.0/8"]}},
        gateway_overrides={"trusted_proxies": ["127.0.0.1/32"]},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    behind = await gateway.client("noord").get(
        "/sso/ysis/noord?userId=ysis-jan", headers={"X-Forwarded-For": "198.51.100.7"}, allow_redirects=False
    )
    itself = await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    assert behind.status == 403
    assert itself.status == 303


async def test_forwarded_lines_read_together(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        tenants={"noord": {"allowed_ips": ["10.9.0.0/16"]}},
        gateway_overrides={"trusted_proxies": ["127.0.0.1/32", "10.1.0.0/16"]},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    headers = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "10.9.0.5, 10.1.0.1")]

    allowed = await gateway.client("noord").get("/sso/ysis/noord?userId=ysis-jan", headers=headers, allow_redirects=False)
    prepended = await gateway.client("noord").get(
        "/sso/ysis/noord?userId=ysis-jan",
        headers=[("X-Forwarded-For", "10.9.0.5"), ("X-Forwarded-For", "198.51.100.7, 10.1.0.1")],
        allow_redirects=False,
    )

    assert allowed.status == 303
    assert prepended.status == 403


async def test_mapped_forwarded_address_as_ipv4(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        tenants={"noord": {"allowed_ips": ["10.9.0.0/16"]}},
        gateway_overrides={"trusted_proxies": ["::ffff:127.0.0.1/128", "127.0.0.1/32"]},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    response = await gateway.client("noord").get(
        "/sso/ysis/noord?userId=ysis-jan", headers={"X-Forwarded-For": "::ffff:10.9.0.5"}, allow_redirects=False
    )

    assert response.status == 303


async def test_mapped_balanced_client_as_ipv4(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        gateway_overrides={"balancers": ["127.0.0.1/32"]},
        tenants={"noord": {"allowed_ips": ["192.0.2.7/32"]}},
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    header = b"PROXY TCP6 ::ffff:192.0.2.7 ::1 50000 443\r\n"

    data, error = await asyncio.to_thread(send_through_balancer, gateway, header)

    assert error is None
    assert statuses(data) == [303]
