"""Debian's HAProxy in TCP mode with send-proxy-v2 in front of two
``sso-gateway serve`` processes.

The allowlist must decide on the client's address from the PROXY header,
not on HAProxy's, and both gateways must serve through the balancer.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from gateway.proxy_protocol import V2_SIGNATURE
from tests.ops.conftest import FAST_SETTINGS
from tests.support.harness import GatewayHarness
from tests.support.served import ServedGateway, accepts, start_served, start_served_peer
from tests.support.services import free_port
from tests.test_server_tls import SOCKET_TIMEOUT, read_to_end, request_bytes, statuses

#: A PROXY v2 header with the LOCAL command: well formed, from anyone.
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"

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


@pytest.fixture
async def balancer(
    tmp_path: Path, redis_url: str
) -> AsyncIterator[tuple[int, list[ServedGateway]]]:
    """HAProxy's port, and the two gateway processes behind it."""
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is missing: apt-get install haproxy (CI installs it)")
    folder = tmp_path / "first"
    folder.mkdir()
    harness = GatewayHarness(
        folder,
        redis_url=redis_url,
        gateway_overrides={**FAST_SETTINGS, "balancers": ["127.0.0.1/32"]},
        tenants={
            "noord": {
                "ca_file": "ca.pem",
                "subject_name": "noord.ysis.example",
                "allowed_ips": ["127.0.0.1/32"],
            }
        },
    )
    gateways = [await start_served(harness)]
    process = None
    try:
        gateways.append(await start_served_peer(gateways[0], tmp_path / "second"))
        await harness.add_link("noord", "ysis-jan", "medimo-jan")
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(port=port, first=gateways[0].port, second=gateways[1].port))
        process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not accepts(port):
            assert process.poll() is None, "haproxy exited"
            assert time.monotonic() < deadline, "haproxy did not listen"
            await asyncio.sleep(0.05)
        yield port, gateways
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        for served in gateways:
            await served.close()


def client_cert(gateway: ServedGateway) -> trustme.LeafCert:
    return gateway.harness.ca.issue_cert("noord.ysis.example", common_name="noord.ysis.example")


def launch_from(
    source: str, port: int, gateway: ServedGateway, cert: trustme.LeafCert, header: bytes = b""
) -> tuple[list[int], BaseException | None]:
    """Connect from ``source`` to ``port``, send ``header``, then a TLS launch."""
    raw = socket.socket()
    raw.settimeout(SOCKET_TIMEOUT)
    raw.bind((source, 0))
    raw.connect(("127.0.0.1", port))
    try:
        raw.sendall(header)
        context = gateway.harness.ssl_context(cert=cert)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request_bytes(port, "/sso/ysis/noord?userId=ysis-jan"))
            return statuses(read_to_end(tls)), None
    except (ssl.SSLError, OSError) as error:
        return [], error
    finally:
        raw.close()


async def test_allowlist_sees_real_client(balancer: tuple[int, list[ServedGateway]]) -> None:
    port, gateways = balancer
    cert = client_cert(gateways[0])

    allowed = [await asyncio.to_thread(launch_from, "127.0.0.1", port, gateways[0], cert) for _ in range(4)]
    refused = [await asyncio.to_thread(launch_from, "127.0.0.2", port, gateways[0], cert) for _ in range(4)]

    assert allowed == [([303], None)] * 4
    assert refused == [([403], None)] * 4


async def test_both_gateways_serve(balancer: tuple[int, list[ServedGateway]]) -> None:
    port, gateways = balancer
    cert = client_cert(gateways[0])

    for _ in range(4):
        await asyncio.to_thread(launch_from, "127.0.0.1", port, gateways[0], cert)

    for gateway in gateways:
        assert await gateway.metric("sso_gateway_launches_total", outcome="logged_in", tenant="noord") == 2


@pytest.mark.parametrize(
    ("source", "header", "event"),
    [
        # Only a balancer may send a header; from anyone else it is bytes
        # where the TLS handshake should be.
        pytest.param("127.0.0.2", V2_LOCAL, "tls_handshake_failed", id="header-from-other-peer"),
        pytest.param(
            "127.0.0.1",
            b"PROXY TCP4 127.0.0.1 127.0.0.1 99999 443\r\n",
            "proxy_header_rejected",
            id="malformed-header",
        ),
        pytest.param("127.0.0.1", b"", "proxy_header_rejected", id="balancer-without-header"),
    ],
)
async def test_bad_proxy_header_closes_connection(
    balancer: tuple[int, list[ServedGateway]], source: str, header: bytes, event: str
) -> None:
    _, gateways = balancer
    cert = client_cert(gateways[0])

    for gateway in gateways:
        found, error = await asyncio.to_thread(launch_from, source, gateway.port, gateway, cert, header)

        assert found == []
        assert error is not None
        await gateway.wait_for(
            lambda record: record.get("event") == event
            and str(record.get("peer", "")).startswith(source + ":")
        )
