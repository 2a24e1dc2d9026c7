"""The proxy end to end: a real gateway in front of the demo upstream.

Most checks read ``/demo/echo``, which returns the headers upstream received.
Header spoofing is also sent over raw TLS sockets, because aiohttp's client
may rewrite some headers (such as ``Connection``) before they leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.demo.upstream import GZIP_TEXT, stream_chunk
from gateway.middleware.pipeline import HSTS
from gateway.pages.render import ERRORS
from gateway.signature import verify_request
from tests.support.harness import GatewayHarness, launch
from tests.support.services import free_port

SESSION = "__Host-sso_session"
PENDING = "__Host-sso_pending"
ECHO_TARGET = "/demo/echo?x=1&y=%2F"
MakeGateway = Callable[..., Awaitable[GatewayHarness]]


# --- helpers ------------------------------------------------------------------


async def logged_in(
    harness: GatewayHarness,
    ysis_user: str = "ysis-jan",
    account: str = "medimo-jan",
) -> aiohttp.ClientSession:
    """Return a noord browser with a session for ``ysis_user``."""
    await harness.add_link("noord", ysis_user, account)
    client = harness.client("noord")
    response = await launch(client, "noord", userId=ysis_user)
    assert response.status == 303
    return client


def session_cookie(harness: GatewayHarness, client: aiohttp.ClientSession) -> str:
    cookies = client.cookie_jar.filter_cookies(URL(harness.base_url))
    return cookies[SESSION].value


async def echo(
    client: aiohttp.ClientSession, target: str = ECHO_TARGET, **options: Any
) -> dict[str, Any]:
    async with client.get(
        URL(target, encoded=True), allow_redirects=False, **options
    ) as response:
        assert response.status == 200, await response.text()
        return dict(json.loads(await response.read()))


def echoed_headers(body: dict[str, Any]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict((name, value) for name, value in body["headers"]))


def upstream_requests(harness: GatewayHarness) -> int:
    """Return how many requests the demo upstream has received so far."""
    assert harness.upstream_runner is not None
    server = harness.upstream_runner.server
    assert server is not None
    return server.requests_count


class RawResponse:
    """One HTTP/1.1 response parsed from bytes off the wire."""

    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, rest = data.split(b"\r\n", 1)
            return body, rest
        body += data[:size]
        data = data[size + 2 :]


def parse_responses(data: bytes) -> list[RawResponse]:
    """Split a stream of HTTP/1.1 responses (each with a framed body)."""
    responses = []
    while data:
        head, data = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines:
            name, value = line.split(":", 1)
            headers.add(name.strip(), value.strip())
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            body, data = _dechunk(data)
        else:
            length = int(headers.get("Content-Length", "0"))
            body, data = data[:length], data[length:]
        responses.append(RawResponse(int(status_line.split()[1]), headers, body))
    return responses


async def raw_exchange(harness: GatewayHarness, tenant: str, payload: bytes) -> bytes:
    """Send ``payload`` over one mutual-TLS connection and read until EOF."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        harness.port,
        ssl=harness.ssl_context(tenant),
        server_hostname="localhost",
    )
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


def raw_get(harness: GatewayHarness, target: str, *lines: str) -> bytes:
    head = [
        f"GET {target} HTTP/1.1",
        f"Host: localhost:{harness.port}",
        *lines,
    ]
    if not any(line.lower().startswith("connection:") for line in lines):
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


async def raw_echo(
    harness: GatewayHarness, client: aiohttp.ClientSession, *lines: str
) -> RawResponse:
    cookie = f"Cookie: {SESSION}={session_cookie(harness, client)}"
    payload = raw_get(harness, ECHO_TARGET, cookie, *lines)
    (response,) = parse_responses(await raw_exchange(harness, "noord", payload))
    return response


def received_as_sent(
    received: CIMultiDictProxy[str], name: str, value: str
) -> list[tuple[str, str]]:
    """Return the received headers whose name (any case, ``_`` for ``-``) and
    value equal the spoofed ones."""
    wanted = name.lower().replace("_", "-")
    return [
        (key, got)
        for key, got in received.items()
        if key.lower().replace("_", "-") == wanted and got == value
    ]


# --- identity headers and their signature ---------------------------------------


async def test_echo_signature_verifies(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    body = await echo(client)

    assert body["path_qs"] == ECHO_TARGET
    received = echoed_headers(body)
    assert verify_request([gateway.signing_key], "GET", ECHO_TARGET, received)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        pytest.param("POST", ECHO_TARGET, id="other-method"),
        pytest.param("GET", "/demo/echo?x=1&y=/", id="decoded-query"),
        pytest.param("GET", "/demo/echo?x=1", id="shorter-query"),
        pytest.param("GET", "/demo/echo", id="no-query"),
    ],
)
async def test_echo_signature_bound_to_request(
    gateway: GatewayHarness, method: str, target: str
) -> None:
    client = await logged_in(gateway)

    received = echoed_headers(await echo(client))

    assert not verify_request([gateway.signing_key], method, target, received)


async def test_echo_identity_headers(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    received = echoed_headers(await echo(client))

    assert received.getall("X-Medimo-Account") == ["medimo-jan"]
    assert received.getall("X-Medimo-Tenant") == ["noord"]
    assert received.getall("X-Ysis-User") == ["ysis-jan"]
    assert received.getall("X-Medimo-Auth-Method") == ["ysis"]
    assert received.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert received.getall("X-Forwarded-Proto") == ["https"]
    assert received.getall("X-Forwarded-Host") == [f"localhost:{gateway.port}"]


async def test_echo_request_id_matches_response(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        body = json.loads(await response.read())
        request_id = response.headers["X-Request-Id"]

    assert echoed_headers(body).getall("X-Request-Id") == [request_id]


# --- spoofed headers from the browser -------------------------------------------

SPOOFED = [
    pytest.param("X-Medimo-Account", "evil", id="medimo-account"),
    pytest.param("x_medimo_account", "evil", id="medimo-account-underscores"),
    pytest.param("X-MEDIMO-TENANT", "zuid", id="medimo-tenant-upper"),
    pytest.param("X-Medimo-Client", "c-1002", id="medimo-client"),
    pytest.param("X-Ysis-User", "ysis-admin", id="ysis-user"),
    pytest.param("X-Gateway-Signature", "t=1,v1=" + "0" * 64, id="signature"),
    pytest.param("X-Forwarded-For", "10.6.6.6", id="forwarded-for"),
    pytest.param("X-Forwarded-Host", "evil.example", id="forwarded-host"),
    pytest.param("Forwarded", "for=10.6.6.6;proto=http", id="forwarded"),
    pytest.param("X-Forwarded-User", "admin", id="forwarded-user"),
    pytest.param("Remote-User", "admin", id="remote-user"),
    pytest.param("X-Real-IP", "10.6.6.6", id="real-ip"),
    pytest.param("X-SSL-Client-Cert", "-----BEGIN%20CERTIFICATE-----", id="ssl-cert"),
    pytest.param("X-Request-Id", "chosen-by-browser", id="request-id"),
]


@pytest.mark.parametrize(("name", "value"), SPOOFED)
async def test_spoofed_header_not_forwarded(
    gateway: GatewayHarness, name: str, value: str
) -> None:
    client = await logged_in(gateway)

    received = echoed_headers(await echo(client, headers={name: value}))

    assert received_as_sent(received, name, value) == []


async def test_spoofed_account_keeps_gateway_value(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    body = await echo(client, headers={"X-Medimo-Account": "evil"})

    received = echoed_headers(body)
    assert received.getall("X-Medimo-Account") == ["medimo-jan"]
    assert verify_request([gateway.signing_key], "GET", ECHO_TARGET, received)


async def test_raw_spoofed_headers_not_forwarded(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    spoofed = [
        ("X-Medimo-Account", "evil-1"),
        ("x-medimo-account", "evil-2"),
        ("X_Medimo_Account", "evil-3"),
        ("x_MEDIMO_account", "evil-4"),
        ("X-Ysis-User", "evil-5"),
        ("X-Forwarded-For", "10.6.6.6"),
        ("Forwarded", "for=10.6.6.7"),
        ("X-Forwarded-User", "evil-6"),
        ("Remote-User", "evil-7"),
        ("X-SSL-Client-Cert", "evil-8"),
        ("X-Gateway-Signature", "evil-9"),
    ]

    response = await raw_echo(
        gateway, client, *(f"{name}: {value}" for name, value in spoofed)
    )

    assert response.status == 200
    received = echoed_headers(response.json())
    for name, value in spoofed:
        assert received_as_sent(received, name, value) == [], name
    assert not [name for name in received if "_" in name]
    assert received.getall("X-Medimo-Account") == ["medimo-jan"]


async def test_raw_connection_named_spoof_dropped(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    response = await raw_echo(
        gateway,
        client,
        "Connection: close, X-Medimo-Account",
        "X-Medimo-Account: evil",
    )

    received = echoed_headers(response.json())
    assert received_as_sent(received, "X-Medimo-Account", "evil") == []


async def test_raw_connection_named_custom_dropped(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    response = await raw_echo(
        gateway, client, "Connection: close, X-Custom", "X-Custom: hop-only"
    )

    assert "X-Custom" not in echoed_headers(response.json())


async def test_raw_connection_keeps_gateway_headers(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    response = await raw_echo(
        gateway, client, "Connection: close, X-Medimo-Account, X-Request-Id"
    )

    assert response.status == 200
    received = echoed_headers(response.json())
    assert received.getall("X-Medimo-Account") == ["medimo-jan"]
    assert received.getall("X-Request-Id") == [response.headers["X-Request-Id"]]
    assert verify_request([gateway.signing_key], "GET", ECHO_TARGET, received)


async def test_raw_ordinary_headers_kept(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    response = await raw_echo(
        gateway, client, "X-Trace: one", "Accept-Language: nl", "X-Trace: two"
    )

    received = echoed_headers(response.json())
    assert received.getall("X-Trace") == ["one", "two"]
    assert received.getall("Accept-Language") == ["nl"]


# --- cookies --------------------------------------------------------------------


async def test_gateway_cookies_not_forwarded(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    client.cookie_jar.update_cookies({"theme": "dark"}, URL(gateway.base_url))

    received = echoed_headers(await echo(client))

    assert received.getall("Cookie") == ["theme=dark"]


async def test_raw_gateway_cookies_not_forwarded(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    cookie = session_cookie(gateway, client)
    payload = raw_get(
        gateway,
        ECHO_TARGET,
        f"Cookie: a=1; {SESSION}={cookie}; {PENDING}=p; b=2",
    )

    (response,) = parse_responses(await raw_exchange(gateway, "noord", payload))

    assert echoed_headers(response.json()).getall("Cookie") == ["a=1; b=2"]


async def test_only_gateway_cookie_leaves_no_header(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    received = echoed_headers(await echo(client))

    assert "Cookie" not in received


async def test_upstream_set_cookie_lines(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get("/demo/set-cookie") as response:
        assert response.status == 200
        lines = response.headers.getall("Set-Cookie")

    assert lines == ["a=1; Path=/", "b=2; Path=/"]


async def test_upstream_forged_session_not_stored(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    before = session_cookie(gateway, client)

    async with client.get("/demo/set-cookie") as response:
        await response.read()

    assert session_cookie(gateway, client) == before


async def test_upstream_cookie_not_shared(gateway: GatewayHarness) -> None:
    first = await logged_in(gateway, "ysis-jan", "medimo-jan")
    async with first.get("/demo/set-cookie") as response:
        assert response.status == 200
    second = await logged_in(gateway, "ysis-piet", "medimo-piet")

    received = echoed_headers(await echo(second))

    assert "Cookie" not in received
    assert received.getall("X-Medimo-Account") == ["medimo-piet"]


# --- responses ------------------------------------------------------------------


async def test_redirect_passed_to_browser(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get(
        "/demo/redirect", params={"to": "https://evil.example/x"}, allow_redirects=False
    ) as response:
        status = response.status
        location = response.headers.get("Location")

    assert status == 302
    assert location == "https://evil.example/x"


async def test_response_vary_cookie(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get("/demo/gzip") as response:
        vary = response.headers.getall("Vary", [])

    assert "Cookie" in vary


async def test_response_hsts(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get("/demo/gzip") as response:
        hsts = response.headers.getall("Strict-Transport-Security", [])

    assert hsts == [HSTS]


async def test_response_gzip_untouched(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get(
        "/demo/gzip", headers={"Accept-Encoding": "gzip"}
    ) as response:
        encoding = response.headers.get("Content-Encoding")
        body = await response.read()

    assert encoding == "gzip"
    assert gzip.decompress(body).decode("utf-8") == GZIP_TEXT


async def test_response_stream_complete(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    chunks = 200

    async with client.get("/demo/stream", params={"chunks": str(chunks)}) as response:
        assert response.status == 200
        body = await response.read()

    assert len(body) == chunks * 1024
    assert body == b"".join(stream_chunk(index) for index in range(chunks))


async def test_response_stream_not_buffered(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    # 300 chunks take upstream at least 3 s (10 ms pause between chunks).
    started = time.monotonic()

    async with client.get("/demo/stream", params={"chunks": "300"}) as response:
        first = await response.content.readexactly(1024)
        first_after = time.monotonic() - started
        await response.read()

    assert first == stream_chunk(0)
    assert first_after < 1.5


async def test_head_proxied(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    async with client.get("/") as response:
        length = len(await response.read())

    async with client.head("/") as response:
        status = response.status
        head_body = await response.read()
        head_length = response.headers.get("Content-Length")

    assert status == 200
    assert head_body == b""
    assert head_length == str(length)


# --- request bodies -------------------------------------------------------------


async def test_post_body_passes_through(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    payload = os.urandom(3 * 1024 * 1024)

    # BytesIO, because aiohttp warns about large raw bytes bodies; the size
    # is still known, so the request carries Content-Length.
    async with client.post("/demo/echo", data=io.BytesIO(payload)) as response:
        assert response.status == 200
        body = json.loads(await response.read())

    assert body["body_length"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_chunked_post_body_passes_through(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    parts = [os.urandom(256 * 1024) for _ in range(12)]

    async def upload() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async with client.post("/demo/echo", data=upload()) as response:
        assert response.status == 200
        body = json.loads(await response.read())

    assert body["body_length"] == 3 * 1024 * 1024
    assert body["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


# --- refusals and upstream failures ---------------------------------------------


async def test_no_session_is_401(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    before = upstream_requests(gateway)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        status = response.status
        page = await response.text()

    assert status == 401
    assert ERRORS[401][0] in page
    assert '<html lang="nl">' in page
    assert upstream_requests(gateway) == before


async def test_forged_session_is_401(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    client.cookie_jar.update_cookies({SESSION: "forged"}, URL(gateway.base_url))
    before = upstream_requests(gateway)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        status = response.status

    assert status == 401
    assert upstream_requests(gateway) == before


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/sso/anything", id="sso-unknown"),
        pytest.param("/sso/ysis", id="sso-ysis-bare"),
        pytest.param("/sso/", id="sso-slash"),
        pytest.param("/sso", id="sso-bare"),
        pytest.param("/sso/logout/extra", id="sso-logout-extra"),
    ],
)
async def test_sso_unknown_path_404(gateway: GatewayHarness, path: str) -> None:
    client = await logged_in(gateway)
    before = upstream_requests(gateway)

    async with client.get(path, allow_redirects=False) as response:
        status = response.status
        page = await response.text()

    assert status == 404
    assert ERRORS[404][0] in page
    assert upstream_requests(gateway) == before


async def test_sso_unknown_path_head_404(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    before = upstream_requests(gateway)

    async with client.head("/sso/anything", allow_redirects=False) as response:
        status = response.status
        body = await response.read()

    assert status == 404
    assert body == b""
    assert upstream_requests(gateway) == before


async def test_upstream_stopped_is_502(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    assert gateway.upstream_runner is not None
    await gateway.upstream_runner.cleanup()
    gateway.upstream_runner = None

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        status = response.status
        page = await response.text()

    assert status == 502
    assert ERRORS[502][0] in page


async def test_upstream_closed_port_is_502(make_gateway: MakeGateway) -> None:
    # The launch calls no upstream API, so the closed port is met on the
    # first proxied request.
    harness = await make_gateway(
        gateway_overrides={"upstream": {"url": f"http://127.0.0.1:{free_port()}"}}
    )
    client = await logged_in(harness)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        status = response.status
        page = await response.text()

    assert status == 502
    assert ERRORS[502][0] in page


async def test_upstream_slow_is_504(make_gateway: MakeGateway) -> None:
    harness = await make_gateway(gateway_overrides={"upstream": {"timeout": "1s"}})
    client = await logged_in(harness)
    started = time.monotonic()

    async with client.get("/demo/slow", params={"seconds": "3"}) as response:
        status = response.status
        page = await response.text()
    elapsed = time.monotonic() - started

    assert status == 504
    assert ERRORS[504][0] in page
    assert 0.9 <= elapsed < 2.5


async def test_slow_upstream_pool_stays_bounded(make_gateway: MakeGateway) -> None:
    overrides = {"upstream": {"timeout": "1s", "max_connections": 2}}
    harness = await make_gateway(gateway_overrides=overrides)
    client = await logged_in(harness)

    async def slow() -> int:
        async with client.get("/demo/slow", params={"seconds": "3"}) as response:
            await response.read()
            return response.status

    started = time.monotonic()
    requests = [asyncio.create_task(slow()) for _ in range(8)]
    await asyncio.sleep(0.5)
    reached = [r for r in harness.upstream_received if r.path_qs.startswith("/demo/slow")]
    statuses = await asyncio.gather(*requests)
    elapsed = time.monotonic() - started

    # Two requests hold the pool; the other six wait for it, not upstream.
    assert len(reached) == 2
    assert statuses == [504] * 8
    # Waiting for a pooled connection counts against the same timeout.
    assert elapsed < 2.8
    async with client.get("/whoami") as response:
        assert response.status == 200


# --- session refresh ------------------------------------------------------------


async def test_refreshed_cookie_no_store(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    assert gateway.config is not None
    gateway.clock.advance(gateway.config.gateway.session.refresh_after + 1)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        await response.read()
        set_cookies = response.headers.getall("Set-Cookie", [])
        cache_control = response.headers.getall("Cache-Control", [])

    assert [line for line in set_cookies if line.startswith(f"{SESSION}=")]
    assert cache_control == ["no-store"]


async def test_fresh_session_not_reissued(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get(URL(ECHO_TARGET, encoded=True)) as response:
        await response.read()
        set_cookies = response.headers.getall("Set-Cookie", [])

    assert set_cookies == []


async def test_comma_joined_session_cookie_not_forwarded(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    session = next(cookie.value for cookie in client.cookie_jar if cookie.key == "__Host-sso_session")
    bare = gateway.client("noord")
    before = len(gateway.upstream_received)

    headers = {"Cookie": f"other=1, __Host-sso_session={session}; keep=2"}
    async with bare.get("/whoami", headers=headers) as response:
        assert response.status == 200

    (received,) = gateway.upstream_received[before:]
    cookies = [value for name, value in received.headers if name.lower() == "cookie"]
    assert cookies == ["keep=2"]
