"""Debian's HAProxy in TCP mode with send-proxy-v2 in front of two gateways.

The allowlist must decide on the client's address from the PROXY header,
not on HAProxy's, and both gateways must serve through the balancer.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.support.harness import GatewayHarness
from tests.support.services import free_port
from tests.test_server_tls import SOCKET_TIMEOUT, read_to_end, request_bytes, statuses

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend gateways
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance roundrobin
    server first 127.0.0.1:{first} send-proxy-v2
    server second 127.0.0.1:{second} send-proxy-v2
"""


async def gateway_behind_balancer(make_gateway: MakeGateway, ca: trustme.CA) -> GatewayHarness:
    gateway = await make_gateway(
        ca=ca,
        gateway_overrides={"balancers": ["127.0.0.1/32"]},
        tenants={
            "noord": {
                "ca_file": "ca.pem",
                "subject_name": "noord.ysis.example",
                "allowed_ips": ["127.0.0.1/32"],
            }
        },
    )
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    return gateway


@pytest.fixture
async def balancer(
    make_gateway: MakeGateway, tmp_path: Path
) -> AsyncIterator[tuple[int, list[GatewayHarness]]]:
    """HAProxy's port, and the two gateways behind it."""
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is missing: apt-get install haproxy (CI installs it)")
    ca = trustme.CA()
    gateways = [await gateway_behind_balancer(make_gateway, ca) for _ in range(2)]
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(port=port, first=gateways[0].port, second=gateways[1].port))
    process = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "haproxy exited"
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not listen"
                await asyncio.sleep(0.05)
        yield port, gateways
    finally:
        process.terminate()
        process.wait(10)


def launch_from(source: str, port: int, gateway: GatewayHarness, cert: trustme.LeafCert) -> list[int]:
    raw = socket.socket()
    raw.settimeout(SOCKET_TIMEOUT)
    raw.bind((source, 0))
    raw.connect(("127.0.0.1", port))
    context = gateway.ssl_context(cert=cert)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request_bytes(port, "/sso/ysis/noord?userId=ysis-jan"))
        return statuses(read_to_end(tls))


async def test_allowlist_sees_real_client(balancer: tuple[int, list[GatewayHarness]]) -> None:
    port, gateways = balancer
    cert = gateways[0].ca.issue_cert("noord.ysis.example", common_name="noord.ysis.example")

    allowed = [await asyncio.to_thread(launch_from, "127.0.0.1", port, gateways[0], cert) for _ in range(4)]
    refused = [await asyncio.to_thread(launch_from, "127.0.0.2", port, gateways[0], cert) for _ in range(4)]

    assert allowed == [[303]] * 4
    assert refused == [[403]] * 4


async def test_both_gateways_serve(balancer: tuple[int, list[GatewayHarness]]) -> None:
    port, gateways = balancer
    cert = gateways[0].ca.issue_cert("noord.ysis.example", common_name="noord.ysis.example")

    for _ in range(4):
        await asyncio.to_thread(launch_from, "127.0.0.1", port, gateways[0], cert)

    for gateway in gateways:
        async with aiohttp.ClientSession() as session:
            async with session.get(gateway.admin_url + "/metrics") as response:
                text = await response.text()
        assert 'sso_gateway_launches_total{outcome="logged_in",tenant="noord"} 2.0' in text
