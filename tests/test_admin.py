"""The admin listener: liveness, readiness with degraded modes, and metrics."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import GatewayHarness, launch
from tests.support.services import RedisServer
from tests.test_server_tls import exchange, request_bytes

MakeGateway = Callable[..., Awaitable[GatewayHarness]]


async def admin_get(gateway: GatewayHarness, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.admin_url + path) as response:
            return response.status, await response.text()


async def readiness(gateway: GatewayHarness) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.admin_url + "/readyz") as response:
            return response.status, await response.json()


async def samples(gateway: GatewayHarness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every metric sample by name and sorted labels."""
    status, text = await admin_get(gateway, "/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def wait_for_readiness(gateway: GatewayHarness, status: str) -> dict[str, object]:
    """Poll /readyz until its status is ``status``; the answer is reused for 1 s."""
    for _ in range(40):
        _, body = await readiness(gateway)
        if body["status"] == status:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never reported {status!r}: {body}")


# --- health and readiness ---------------------------------------------------------


async def test_healthz_alive(gateway: GatewayHarness) -> None:
    status, _ = await admin_get(gateway, "/healthz")

    assert status == 200


async def test_readyz_all_up(gateway: GatewayHarness) -> None:
    # A loaded test machine can make one Redis check miss its 500 ms timeout.
    await wait_for_readiness(gateway, "ok")
    status, body = await readiness(gateway)

    assert status == 200
    assert body == {
        "status": "ok",
        "checks": {"redis": "up", "database": "up", "upstream": "up", "upstream_api": "up"},
        "degraded": {},
    }


async def test_readyz_redis_down_degraded(make_gateway: MakeGateway, killable_redis: RedisServer) -> None:
    gateway = await make_gateway(redis_url=killable_redis.url)
    killable_redis.stop()

    body = await wait_for_readiness(gateway, "degraded")

    assert body["checks"] == {"redis": "down", "database": "up", "upstream": "up", "upstream_api": "up"}
    assert "redis" in body["degraded"]  # type: ignore[operator]
    status, _ = await readiness(gateway)
    assert status == 200


async def test_readyz_recovers_with_redis(make_gateway: MakeGateway, killable_redis: RedisServer) -> None:
    gateway = await make_gateway(redis_url=killable_redis.url)
    killable_redis.stop()
    await wait_for_readiness(gateway, "degraded")

    killable_redis.start()

    assert (await wait_for_readiness(gateway, "ok"))["degraded"] == {}


async def test_readyz_upstream_down_unavailable(gateway: GatewayHarness) -> None:
    await gateway.stop_upstream()

    body = await wait_for_readiness(gateway, "unavailable")

    assert body["checks"]["upstream"] == "down"  # type: ignore[index]
    status, _ = await readiness(gateway)
    assert status == 503


async def test_readyz_rejected_api_token_degraded(
    make_gateway: MakeGateway,
) -> None:
    # The signing key's file contains a secret that the upstream's API does not know.
    gateway = await make_gateway(
        gateway_overrides={"upstream": {"api_token": {"file": "secrets/signing-key"}}}
    )

    status, body = await readiness(gateway)

    assert status == 200
    assert body["status"] == "degraded"
    assert body["checks"] == {"redis": "up", "database": "up", "upstream": "up", "upstream_api": "down"}
    assert "upstream.api_token" in body["degraded"]["upstream_api"]  # type: ignore[index]


async def status_with_host(gateway: GatewayHarness, host: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.admin_url + "/healthz", headers={"Host": host}) as response:
            return response.status


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:9180", "localhost:9180", "LOCALHOST.", "[::1]:9180"])
async def test_admin_host_address_served(gateway: GatewayHarness, host: str) -> None:
    assert await status_with_host(gateway, host) == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:9180",
        "127.0.0.1.evil.example",
        "",
        "[::1]evil.example",
        "[::1].evil.example:80",
        "localhost:evil.example",
        "fe80::1%evil.example",
        "localhost..",
    ],
)
async def test_admin_foreign_host_is_421(gateway: GatewayHarness, host: str) -> None:
    assert await status_with_host(gateway, host) == 421


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


async def test_admin_absolute_target_is_421(gateway: GatewayHarness) -> None:
    assert gateway.running is not None and gateway.running.admin_port is not None
    request = (
        b"GET http://evil.example/healthz HTTP/1.1\r\nHost: localhost\r\n"
        b"Connection: close\r\n\r\n"
    )

    reply = await asyncio.to_thread(raw_exchange, gateway.running.admin_port, request)

    assert reply.startswith(b"HTTP/1.1 421")


async def test_admin_configured_hostname_served(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides={"admin": {"hostnames": ["Metrics.Internal."]}})

    assert await status_with_host(gateway, "metrics.internal:9180") == 200
    assert await status_with_host(gateway, "other.internal:9180") == 421


async def test_admin_listener_is_plain_loopback(gateway: GatewayHarness) -> None:
    assert gateway.admin_url.startswith("http://127.0.0.1:")
    assert gateway.running is not None
    assert gateway.running.admin_port != gateway.port


# --- metrics -----------------------------------------------------------------------


async def test_metrics_after_scripted_run(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    jan = gateway.client("noord")
    await launch(jan, "noord", userId="ysis-jan")
    await launch(gateway.client("noord"), "noord", userId="ysis-jan")
    async with jan.get("/whoami") as response:
        assert response.status == 200
    await launch(gateway.client("noord"), "noord", userId="ysis-piet")
    await launch(gateway.client("zuid"), "noord", userId="ysis-jan")
    await launch(gateway.client("noord"), "noord", userId="bad id")
    await launch(gateway.client("noord"), "oost", userId="ysis-jan")

    found = await samples(gateway)

    assert found[("sso_gateway_launches_total", (("outcome", "logged_in"), ("tenant", "noord")))] == 2
    assert found[("sso_gateway_launches_total", (("outcome", "link_form"), ("tenant", "noord")))] == 1
    assert found[("sso_gateway_launches_total", (("outcome", "refused_certificate"), ("tenant", "noord")))] == 1
    assert found[("sso_gateway_launches_total", (("outcome", "refused_parameters"), ("tenant", "noord")))] == 1
    assert found[("sso_gateway_launches_total", (("outcome", "refused_tenant"), ("tenant", "")))] == 1
    assert found[("sso_gateway_requests_total", (("route", "launch"), ("status", "303")))] == 3
    assert found[("sso_gateway_requests_total", (("route", "proxied"), ("status", "200")))] == 1
    assert found[("sso_gateway_link_cache_misses_total", ())] >= 1
    assert found[("sso_gateway_link_cache_hits_total", ())] >= 1
    assert found[("sso_gateway_upstream_request_duration_seconds_count", (("call", "proxy"),))] == 1
    assert found[("sso_gateway_upstream_request_duration_seconds_count", (("call", "api"),))] == 0


async def test_metrics_config_and_certificates(gateway: GatewayHarness) -> None:
    assert gateway.config is not None
    found = await samples(gateway)

    assert found[("sso_gateway_config_info", (("hash", gateway.config.digest[:16]),))] == 1
    assert found[("sso_gateway_config_last_reload_success", ())] == 1
    pinned = [
        value for (name, labels), value in found.items()
        if name == "sso_gateway_certificate_expiry_days" and ("kind", "pinned") in labels
    ]
    assert len(pinned) == 2
    assert all(days > 300 for days in pinned)
    assert any(
        name == "sso_gateway_certificate_expiry_days" and ("kind", "server") in labels
        for name, labels in found
    )


async def test_metrics_dependency_up(make_gateway: MakeGateway, killable_redis: RedisServer) -> None:
    gateway = await make_gateway(redis_url=killable_redis.url)
    killable_redis.stop()
    await wait_for_readiness(gateway, "degraded")

    found = await samples(gateway)

    assert found[("sso_gateway_dependency_up", (("dependency", "redis"),))] == 0
    assert found[("sso_gateway_dependency_up", (("dependency", "database"),))] == 1
    assert found[("sso_gateway_dependency_up", (("dependency", "upstream"),))] == 1


async def test_metrics_count_handshake_failures(gateway: GatewayHarness) -> None:
    context = gateway.ssl_context(cert=trustme.CA().issue_cert("noord.ysis.example"))
    await asyncio.to_thread(exchange, context, gateway.port, request_bytes(gateway.port, "/sso/afgemeld"))

    for _ in range(40):
        found = await samples(gateway)
        if found[("sso_gateway_tls_handshake_failures_total", ())] >= 1:
            break
        await asyncio.sleep(0.05)
    assert found[("sso_gateway_tls_handshake_failures_total", ())] == 1


async def test_metric_labels_ignore_request_values(gateway: GatewayHarness) -> None:
    for name in ("evil-1", "evil-2", "evil-3"):
        await launch(gateway.client("noord"), name, userId="ysis-jan")

    found = await samples(gateway)

    assert not any(value.startswith("evil") for _, labels in found for _, value in labels)
