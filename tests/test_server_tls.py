"""The TLS listener: client certificates in the handshake, and the handover.

The clients here are blocking ``ssl`` sockets run in a worker thread, because
the gateway serves on this test's event loop. Each returns the local address
it used, so that the test can find the gateway's log line for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import trustme

from gateway.pages.render import ERRORS
from tests.support.harness import GatewayHarness, launch

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

#: Seconds a test client waits for any one socket operation.
SOCKET_TIMEOUT = 10.0

#: How many times a test looks for the gateway's log line, 50 ms apart.
LOG_POLLS = 100


@dataclass
class Outcome:
    """What a test client saw: its local address, the bytes read or the error."""

    local: str
    data: bytes = b""
    error: BaseException | None = None


def request_bytes(port: int, *paths: str) -> bytes:
    """Return GET requests for ``paths``; the last one asks to close."""
    requests = []
    for index, path in enumerate(paths):
        connection = "close" if index == len(paths) - 1 else "keep-alive"
        requests.append(
            f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
            f"Connection: {connection}\r\n\r\n"
        )
    return "".join(requests).encode("ascii")


def read_to_end(sock: ssl.SSLSocket | socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def exchange(context: ssl.SSLContext, port: int, payload: bytes) -> Outcome:
    """Handshake, send ``payload`` in one write, read until EOF; never raise."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    host, local_port = raw.getsockname()[:2]
    outcome = Outcome(local=f"{host}:{local_port}")
    try:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            outcome.data = read_to_end(tls)
    except (ssl.SSLError, OSError) as error:
        outcome.error = error
    finally:
        raw.close()
    return outcome


def exchange_with_finished(
    context: ssl.SSLContext, port: int, payload: bytes
) -> Outcome:
    """Send the client's last handshake flight and ``payload`` in one segment.

    A memory-BIO client holds back its TLS 1.3 Finished message until the
    requests are encrypted behind it, so the gateway reads handshake and
    requests in one go, before its handover to aiohttp has run.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    host, local_port = raw.getsockname()[:2]
    outcome = Outcome(local=f"{host}:{local_port}")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        tls.write(payload)
        raw.sendall(outgoing.read())
        while True:
            try:
                # An empty read is the server's close_notify.
                decrypted = tls.read(65536)
                if not decrypted:
                    break
                outcome.data += decrypted
            except ssl.SSLWantReadError:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                incoming.write(chunk)
            except ssl.SSLZeroReturnError:
                break
    except (ssl.SSLError, OSError) as error:
        outcome.error = error
    finally:
        raw.close()
    return outcome


def statuses(data: bytes) -> list[int]:
    """Return the status of each response in ``data`` (bodies framed by length)."""
    found = []
    while data:
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        found.append(int(lines[0].split()[1]))
        length = 0
        for line in lines[1:]:
            name, value = line.split(":", 1)
            if name.strip().lower() == "content-length":
                length = int(value)
        data = data[length:]
    return found


async def handshake_failure(
    caplog: pytest.LogCaptureFixture, local: str
) -> logging.LogRecord:
    """Wait for the gateway's ``tls handshake failed`` record for ``local``."""
    for _ in range(LOG_POLLS):
        for record in caplog.records:
            if record.name == "gateway.tls" and getattr(record, "peer", "") == local:
                return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no gateway.tls record for peer {local}")


def past(days: int) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


# --- certificates the handshake rejects ---------------------------------------


async def test_unknown_ca_fails_handshake(gateway: GatewayHarness) -> None:
    stranger = trustme.CA().issue_cert("noord.ysis.example")
    context = gateway.ssl_context(cert=stranger)

    outcome = await asyncio.to_thread(
        exchange, context, gateway.port, request_bytes(gateway.port, "/sso/afgemeld")
    )

    assert isinstance(outcome.error, ssl.SSLError), outcome
    assert outcome.data == b""


async def test_unknown_ca_logged(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    stranger = trustme.CA().issue_cert("noord.ysis.example")
    context = gateway.ssl_context(cert=stranger)

    outcome = await asyncio.to_thread(
        exchange, context, gateway.port, request_bytes(gateway.port, "/sso/afgemeld")
    )

    record = await handshake_failure(caplog, outcome.local)
    assert record.levelno == logging.WARNING
    assert "certificate verify failed" in record.error  # type: ignore[attr-defined]
    assert "unable to get local issuer certificate" in record.error  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "trust",
    [
        pytest.param("pinned", id="pinned"),
        pytest.param("ca_file", id="ca-file"),
    ],
)
async def test_expired_certificate_fails_handshake(
    make_gateway: MakeGateway,
    caplog: pytest.LogCaptureFixture,
    tmp_path_factory: pytest.TempPathFactory,
    trust: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.tls")
    ca = trustme.CA()
    expired = ca.issue_cert(
        "oud.ysis.example",
        common_name="oud.ysis.example",
        not_before=past(60),
        not_after=past(1),
    )
    folder = tmp_path_factory.mktemp("expired")
    expired_pem = folder / "oud-client.pem"
    expired.cert_chain_pems[0].write_to_path(str(expired_pem))
    ca_pem = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    if trust == "pinned":
        tenant = {"certificates": [str(expired_pem)]}
    else:
        tenant = {"ca_file": str(ca_pem), "subject_name": "oud.ysis.example"}
    harness = await make_gateway(ca=ca, tenants={"oud": tenant})
    context = harness.ssl_context(cert=expired)

    outcome = await asyncio.to_thread(
        exchange, context, harness.port, request_bytes(harness.port, "/sso/afgemeld")
    )

    assert isinstance(outcome.error, ssl.SSLError), outcome
    assert outcome.data == b""
    record = await handshake_failure(caplog, outcome.local)
    assert "certificate has expired" in record.error  # type: ignore[attr-defined]


async def test_plain_http_logged(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.tls")

    def send_plain() -> str:
        with socket.create_connection(
            ("127.0.0.1", gateway.port), timeout=SOCKET_TIMEOUT
        ) as sock:
            host, port = sock.getsockname()[:2]
            sock.sendall(request_bytes(gateway.port, "/sso/afgemeld"))
            try:
                read_to_end(sock)
            except ConnectionResetError:
                pass
            return f"{host}:{port}"

    local = await asyncio.to_thread(send_plain)

    record = await handshake_failure(caplog, local)
    assert record.error  # type: ignore[attr-defined]


# --- certificates the handshake admits, and the pages after it ----------------


async def test_no_certificate_completes_handshake(gateway: GatewayHarness) -> None:
    outcome = await asyncio.to_thread(
        exchange,
        gateway.ssl_context(),
        gateway.port,
        request_bytes(gateway.port, "/sso/afgemeld"),
    )

    assert outcome.error is None
    assert statuses(outcome.data) == [200]


async def test_no_certificate_launch_403(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    response = await launch(gateway.client(), "noord", userId="ysis-jan")

    assert response.status == 403
    assert ERRORS[403][0] in await response.text()


async def test_other_tenant_certificate_same_403(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")

    without = await launch(gateway.client(), "noord", userId="ysis-jan")
    other = await launch(gateway.client("zuid"), "noord", userId="ysis-jan")

    assert other.status == 403
    without_page = (await without.text()).replace(without.headers["X-Request-Id"], "")
    other_page = (await other.text()).replace(other.headers["X-Request-Id"], "")
    assert other_page == without_page


# --- the handover from the handshake to aiohttp -------------------------------


async def test_pipelined_requests_after_handshake(gateway: GatewayHarness) -> None:
    payload = request_bytes(gateway.port, "/sso/afgemeld", "/sso/afgemeld")

    outcome = await asyncio.to_thread(
        exchange, gateway.ssl_context("noord"), gateway.port, payload
    )

    assert outcome.error is None
    assert statuses(outcome.data) == [200, 200]


@pytest.mark.parametrize("count", [pytest.param(2, id="two"), pytest.param(5, id="five")])
async def test_pipelined_requests_with_finished(
    gateway: GatewayHarness, count: int
) -> None:
    context = gateway.ssl_context("noord")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    payload = request_bytes(gateway.port, *["/sso/afgemeld"] * count)

    outcome = await asyncio.to_thread(
        exchange_with_finished, context, gateway.port, payload
    )

    assert outcome.error is None
    assert statuses(outcome.data) == [200] * count
