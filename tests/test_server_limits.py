"""Slow, large and malformed requests over raw mutual-TLS connections.

An HTTP client library would refuse to send most of these requests or
would repair them first, so each test writes bytes to a TLS socket. Every
malformed request carries a valid session cookie and a proxied target, so
anything the gateway let through would show in ``upstream_received``.

The whole file runs twice: once with aiohttp's C parser (llhttp) and once,
in a subprocess that ``test_pure_python_parser_run`` starts, with
``AIOHTTP_NO_EXTENSIONS=1`` and so aiohttp's pure-Python parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import http_parser
from multidict import CIMultiDict

from gateway.logs import JsonFormatter
from gateway.middleware.pipeline import HSTS
from tests.support.harness import GatewayHarness, form_fields, launch, post_form

MakeGateway = Callable[..., Awaitable[GatewayHarness]]

SESSION = "__Host-sso_session"
#: A value shaped like a BSN; it must never show in a log line or a response.
BSN = "111222333"
TARGET = f"/demo/echo?bsn={BSN}"
#: Short timeouts, so that the timeout tests take seconds.
FAST_LIMITS = {
    "header_timeout": "1s",
    "keepalive_timeout": "3s",
    "body_timeout": "1s",
}
#: Seconds a raw client waits for the gateway to respond and close.
READ_TIMEOUT = 8.0
PURE_PYTHON = os.environ.get("AIOHTTP_NO_EXTENSIONS", "") not in ("", "0")


# --- raw clients ---------------------------------------------------------------


@dataclass
class Reply:
    """The first response on a connection, parsed from the bytes read."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    raw: bytes


def parse_reply(data: bytes) -> Reply:
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, value = line.split(":", 1)
        headers.add(name.strip(), value.strip())
    length = int(headers.get("Content-Length", "0"))
    return Reply(int(status_line.split()[1]), headers, rest[:length], data)


async def open_tls(
    harness: GatewayHarness, tenant: str = "noord"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1",
        harness.port,
        ssl=harness.ssl_context(tenant),
        server_hostname="localhost",
    )


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Read until the gateway closes; raise TimeoutError if it keeps it open."""
    data = b""
    with contextlib.suppress(ssl.SSLError, ConnectionResetError):
        async with asyncio.timeout(READ_TIMEOUT):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def exchange(harness: GatewayHarness, payload: bytes) -> bytes:
    """Send ``payload`` in one write and return every byte until EOF."""
    reader, writer = await open_tls(harness)
    try:
        writer.write(payload)
        await writer.drain()
        return await read_to_eof(reader)
    finally:
        await close(writer)


async def session_cookie(harness: GatewayHarness) -> str:
    """Log ``ysis-jan`` in and return the session cookie's value."""
    await harness.add_link("noord", "ysis-jan", "medimo-jan")
    client = harness.client("noord")
    response = await launch(client, "noord", userId="ysis-jan")
    assert response.status == 303
    return response.cookies[SESSION].value


def request_head(
    harness: GatewayHarness,
    cookie: str,
    *lines: str,
    start: str = f"GET {TARGET} HTTP/1.1",
) -> str:
    host = f"Host: localhost:{harness.port}"
    return "\r\n".join([start, host, f"Cookie: {SESSION}={cookie}", *lines]) + "\r\n"


def upstream_headers(harness: GatewayHarness) -> list[str]:
    return [
        name.lower() for seen in harness.upstream_received for name, _ in seen.headers
    ]


@pytest.fixture
async def fast(make_gateway: MakeGateway) -> GatewayHarness:
    """A gateway with one-second head and body timeouts."""
    return await make_gateway(gateway_overrides={"limits": FAST_LIMITS})


# --- malformed requests ----------------------------------------------------------

#: Requests that aiohttp's parsers or the gateway's guards reject. ``{head}``
#: stands for the request line, Host and Cookie of a logged-in user; ``{host}``
#: and ``{cookie}`` for those lines alone.
MALFORMED = {
    "request-line-extra-field": "GET {target} HTTP/1.1 x\r\n{host}{cookie}\r\n",
    "space-in-target": "GET /demo/echo?bsn=111 222333 HTTP/1.1\r\n{host}{cookie}\r\n",
    "control-in-target": "GET {target}\x01 HTTP/1.1\r\n{host}{cookie}\r\n",
    "bare-lf": "GET {target} HTTP/1.1\n{host_lf}{cookie_lf}\n",
    "unknown-version": "GET {target} HTTP/7.1\r\n{host}{cookie}\r\n",
    "unknown-method": "FOO {target} HTTP/1.1\r\n{host}{cookie}\r\n",
    "connect": "CONNECT localhost:443 HTTP/1.1\r\n{host}{cookie}\r\n",
    "missing-host": "GET {target} HTTP/1.1\r\n{cookie}\r\n",
    "duplicate-host": "{head}{host}\r\n",
    "length-and-chunked": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Content-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two-lengths": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Content-Length: 5\r\n"
        "Content-Length: 6\r\n\r\nhello!"
    ),
    "signed-length": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Content-Length: +5\r\n\r\nhello"
    ),
    "bad-chunk-size": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Transfer-Encoding: chunked\r\n\r\n"
        "zz\r\nhello\r\n0\r\n\r\n"
    ),
    "chunk-without-crlf": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Transfer-Encoding: chunked\r\n\r\n"
        "5\r\nhelloXX0\r\n\r\n"
    ),
    "gzip-chunked": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}"
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-gzip": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}"
        "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    ),
    "identity-coding": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}"
        "Transfer-Encoding: identity\r\n\r\nhello"
    ),
    "repeated-coding": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}Transfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunked-in-http-1-0": (
        "POST {target} HTTP/1.0\r\n{host}{cookie}"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "space-before-colon": (
        "POST {target} HTTP/1.1\r\n{host}{cookie}"
        "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold": "{head}X-Folded: one\r\n two\r\n\r\n",
    "nul-in-value": "{head}X-Nul: a\x00b\r\n\r\n",
}


def malformed(harness: GatewayHarness, shape: str, cookie: str) -> bytes:
    host = f"Host: localhost:{harness.port}"
    cookie_line = f"Cookie: {SESSION}={cookie}"
    text = MALFORMED[shape].format(
        target=TARGET,
        head=request_head(harness, cookie),
        host=host + "\r\n",
        cookie=cookie_line + "\r\n",
        host_lf=host + "\n",
        cookie_lf=cookie_line + "\n",
    )
    return text.encode("latin-1")


@pytest.mark.parametrize("shape", sorted(MALFORMED))
async def test_malformed_request_short_400(gateway: GatewayHarness, shape: str) -> None:
    cookie = await session_cookie(gateway)

    reply = parse_reply(await exchange(gateway, malformed(gateway, shape, cookie)))

    assert reply.status == 400
    assert reply.body == b"400 Ongeldig verzoek\n"


@pytest.mark.parametrize("shape", sorted(MALFORMED))
async def test_malformed_request_closes(gateway: GatewayHarness, shape: str) -> None:
    cookie = await session_cookie(gateway)
    # A complete request follows on the same connection. It must get no
    # response, because the framing of the rejected one cannot be trusted.
    follow = request_head(gateway, cookie) + "\r\n"

    data = await exchange(gateway, malformed(gateway, shape, cookie) + follow.encode())

    assert data.count(b"HTTP/1.") == 1, data


@pytest.mark.parametrize("shape", sorted(MALFORMED))
async def test_malformed_request_not_upstream(
    gateway: GatewayHarness, shape: str
) -> None:
    cookie = await session_cookie(gateway)
    before = len(gateway.upstream_received)

    await exchange(gateway, malformed(gateway, shape, cookie))

    assert gateway.upstream_received[before:] == []


async def test_rejection_security_headers(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)

    reply = parse_reply(
        await exchange(gateway, malformed(gateway, "space-in-target", cookie))
    )

    assert reply.headers.getall("Strict-Transport-Security") == [HSTS]
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_rejection_echoes_nothing(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)

    reply = parse_reply(
        await exchange(gateway, malformed(gateway, "request-line-extra-field", cookie))
    )

    assert BSN.encode() not in reply.raw
    assert cookie.encode() not in reply.raw
    assert reply.body == b"400 Ongeldig verzoek\n"


@pytest.mark.parametrize("shape", sorted(MALFORMED))
async def test_malformed_request_logged_once(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    cookie = await session_cookie(gateway)
    caplog.set_level(logging.DEBUG)

    await exchange(gateway, malformed(gateway, shape, cookie))

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.getMessage()) for r in warnings] == [
        ("gateway.access", "request rejected")
    ]


async def test_rejection_log_fields(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    cookie = await session_cookie(gateway)
    caplog.set_level(logging.WARNING, logger="gateway.access")

    await exchange(gateway, malformed(gateway, "unknown-method", cookie))

    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    fields = vars(record)
    assert fields["status"] == 400
    assert fields["peer"].startswith("127.0.0.1:")
    # llhttp raises BadHttpMethod, the pure-Python parser run gets the
    # gateway's own UnknownMethod.
    assert fields["error"] in ("BadHttpMethod", "UnknownMethod")


async def test_rejected_request_line_not_logged(
    gateway: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    cookie = await session_cookie(gateway)
    caplog.set_level(logging.DEBUG)

    for shape in ("request-line-extra-field", "control-in-target", "space-in-target"):
        await exchange(gateway, malformed(gateway, shape, cookie))

    # The JSON lines hold every field passed through ``extra``; the caplog
    # format adds any traceback.
    json_lines = [JsonFormatter().format(record) for record in caplog.records]
    plain_lines = [caplog.handler.format(record) for record in caplog.records]
    logged = "\n".join(json_lines + plain_lines)
    assert BSN not in logged
    assert "222333" not in logged


# --- sizes -----------------------------------------------------------------------


async def test_two_hundred_headers_431(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)
    fields = [f"X-Field-{index}: {index}" for index in range(200)]

    data = await exchange(
        gateway, (request_head(gateway, cookie, *fields) + "\r\n").encode()
    )

    assert parse_reply(data).status == 431


async def test_long_query_string_414(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)
    start = f"GET /demo/echo?q={'a' * 64 * 1024} HTTP/1.1"

    data = await exchange(
        gateway, (request_head(gateway, cookie, start=start) + "\r\n").encode()
    )

    assert parse_reply(data).status == 414


async def test_oversized_cookie_431(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)
    big = f"Cookie: theme={'x' * 16 * 1024}"

    data = await exchange(
        gateway, (request_head(gateway, cookie, big) + "\r\n").encode()
    )

    assert parse_reply(data).status == 431


async def test_oversized_request_not_upstream(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)
    before = len(gateway.upstream_received)
    big = f"Cookie: theme={'x' * 16 * 1024}"

    await exchange(gateway, (request_head(gateway, cookie, big) + "\r\n").encode())

    assert gateway.upstream_received[before:] == []


async def test_configured_max_headers(make_gateway: MakeGateway) -> None:
    harness = await make_gateway(gateway_overrides={"limits": {"max_headers": 20}})
    cookie = await session_cookie(harness)
    fields = [f"X-Field-{index}: {index}" for index in range(30)]

    data = await exchange(
        harness, (request_head(harness, cookie, *fields) + "\r\n").encode()
    )

    assert parse_reply(data).status == 431


async def test_configured_max_body_size_413(make_gateway: MakeGateway) -> None:
    harness = await make_gateway(gateway_overrides={"limits": {"max_body_size": 1024}})
    cookie = await session_cookie(harness)
    head = request_head(
        harness,
        cookie,
        "Content-Length: 2048",
        "Connection: close",
        start=f"POST {TARGET} HTTP/1.1",
    )

    data = await exchange(harness, (head + "\r\n").encode() + b"x" * 2048)

    assert parse_reply(data).status == 413


async def test_many_trailers_not_upstream_headers(gateway: GatewayHarness) -> None:
    cookie = await session_cookie(gateway)
    head = request_head(
        gateway, cookie, "Transfer-Encoding: chunked", start=f"POST {TARGET} HTTP/1.1"
    )
    trailers = "".join(f"X-Trailer-{index}: v\r\n" for index in range(10_000))
    payload = f"{head}\r\n5\r\nhello\r\n0\r\n{trailers}\r\n".encode()

    data = await exchange(gateway, payload)

    assert parse_reply(data).status in (400, 431)
    assert [name for name in upstream_headers(gateway) if "trailer" in name] == []


async def test_body_broken_mid_stream_one_response(gateway: GatewayHarness) -> None:
    # The head goes first, so the request is already on its way upstream
    # when its body turns out to be malformed.
    cookie = await session_cookie(gateway)
    head = request_head(
        gateway, cookie, "Transfer-Encoding: chunked", start=f"POST {TARGET} HTTP/1.1"
    )
    reader, writer = await open_tls(gateway)
    try:
        writer.write(f"{head}\r\n5\r\nhello\r\n".encode())
        await asyncio.sleep(0.3)
        writer.write(b"zz\r\nhello\r\n0\r\n\r\n")
        data = await read_to_eof(reader)
    finally:
        await close(writer)

    assert data.count(b"HTTP/1.") == 1
    assert parse_reply(data).status == 400


# --- timeouts --------------------------------------------------------------------


async def trickle(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    """Send ``data`` ``size`` bytes at a time, 0.3 s apart, until cut off."""
    with contextlib.suppress(ConnectionError):
        for offset in range(0, len(data), size):
            writer.write(data[offset : offset + size])
            await writer.drain()
            await asyncio.sleep(0.3)


async def trickled_reply(
    harness: GatewayHarness, first: bytes, rest: bytes, size: int
) -> tuple[bytes, float]:
    """Send ``first``, then trickle ``rest``, and return the reply and its delay."""
    reader, writer = await open_tls(harness)
    started = time.monotonic()
    writer.write(first)
    sender = asyncio.create_task(trickle(writer, rest, size))
    try:
        data = await read_to_eof(reader)
        return data, time.monotonic() - started
    finally:
        sender.cancel()
        await close(writer)


async def test_slow_head_cut_off(fast: GatewayHarness) -> None:
    # One byte every 0.3 s: never idle for the one-second timeout, so only a
    # deadline for the whole head stops it.
    head = (request_head(fast, "x") + "\r\n").encode()

    data, elapsed = await trickled_reply(fast, b"", head, 1)

    assert parse_reply(data).status == 408
    assert 0.9 <= elapsed < 2.5


async def test_idle_connection_closed(fast: GatewayHarness) -> None:
    reader, writer = await open_tls(fast)
    started = time.monotonic()
    try:
        data = await read_to_eof(reader)
    finally:
        await close(writer)

    assert data == b""
    assert 2.9 <= time.monotonic() - started < 5


async def test_head_timeout_starts_at_first_byte(fast: GatewayHarness) -> None:
    # Idle for longer than header_timeout, but within keepalive_timeout.
    reader, writer = await open_tls(fast)
    try:
        await asyncio.sleep(1.5)
        writer.write(
            f"GET /sso/afgemeld HTTP/1.1\r\nHost: localhost:{fast.port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = await read_to_eof(reader)
    finally:
        await close(writer)

    assert parse_reply(data).status == 200


async def test_head_started_late_not_cut_by_keepalive(fast: GatewayHarness) -> None:
    # The head starts 2.5 s into the 3 s keep-alive and takes 0.9 s: its own
    # one-second deadline applies, not the end of the idle time.
    reader, writer = await open_tls(fast)
    head = (
        f"GET /sso/afgemeld HTTP/1.1\r\nHost: localhost:{fast.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        await asyncio.sleep(2.5)
        for offset in range(0, len(head), len(head) // 9 + 1):
            writer.write(head[offset : offset + len(head) // 9 + 1])
            await asyncio.sleep(0.1)
        data = await read_to_eof(reader)
    finally:
        await close(writer)

    assert parse_reply(data).status == 200


def body_start(harness: GatewayHarness, cookie: str, length: int) -> bytes:
    head = request_head(
        harness, cookie, f"Content-Length: {length}", start="POST /demo/echo HTTP/1.1"
    )
    return (head + "\r\n").encode() + b"x" * 10


async def test_stalled_body_cut_off(fast: GatewayHarness) -> None:
    cookie = await session_cookie(fast)
    reader, writer = await open_tls(fast)
    started = time.monotonic()
    try:
        writer.write(body_start(fast, cookie, 100_000))
        data = await read_to_eof(reader)
    finally:
        await close(writer)

    assert parse_reply(data).status == 408
    assert 0.9 <= time.monotonic() - started < 2.5


async def test_trickled_body_cut_off(make_gateway: MakeGateway) -> None:
    limits = {**FAST_LIMITS, "body_min_rate": 1000}
    harness = await make_gateway(gateway_overrides={"limits": limits})
    cookie = await session_cookie(harness)

    # 10 bytes every 0.3 s: never a pause of one second, but far below 1000
    # bytes a second.
    data, elapsed = await trickled_reply(
        harness, body_start(harness, cookie, 100_000), b"y" * 1000, 10
    )

    assert parse_reply(data).status == 408
    assert 0.9 <= elapsed < 2.5


async def test_stalled_body_frees_upstream_connection(
    make_gateway: MakeGateway,
) -> None:
    overrides = {"limits": FAST_LIMITS, "upstream": {"max_connections": 1}}
    harness = await make_gateway(gateway_overrides=overrides)
    cookie = await session_cookie(harness)
    _, writer = await open_tls(harness)
    writer.write(body_start(harness, cookie, 100_000))
    await asyncio.sleep(0.3)
    get = request_head(harness, cookie, "Connection: close") + "\r\n"
    started = time.monotonic()

    try:
        other = parse_reply(await exchange(harness, get.encode()))
    finally:
        await close(writer)

    assert other.status == 200
    assert time.monotonic() - started < 2.5


async def test_stalled_bodies_leave_logins_working(
    make_gateway: MakeGateway,
) -> None:
    # A long body timeout: the stalled uploads keep the only pooled
    # connection of the proxy for the whole test.
    overrides = {"limits": {"body_timeout": "30s"}, "upstream": {"max_connections": 1}}
    harness = await make_gateway(gateway_overrides=overrides)
    cookie = await session_cookie(harness)
    stalled = [await open_tls(harness) for _ in range(3)]
    for _, writer in stalled:
        writer.write(body_start(harness, cookie, 100_000))
    await asyncio.sleep(0.3)
    client = harness.client("noord")

    try:
        response = await launch(client, "noord", userId="ysis-piet")
        async with client.get(response.headers["Location"]) as page:
            fields = form_fields(await page.text())
        linked = await post_form(
            client,
            "/sso/ysis/noord/link",
            {**fields, "username": "piet", "password": "demo-wachtwoord"},
            origin=harness.base_url,
        )
    finally:
        for _, writer in stalled:
            await close(writer)

    assert linked.status == 303


# --- pipelining ------------------------------------------------------------------


def pipelined(harness: GatewayHarness, cookie: str, count: int) -> bytes:
    """Return a slow proxied request and ``count - 1`` page requests after it.

    The first request keeps the handler busy for 2 s, longer than the fast
    gateway's header timeout, while the rest wait in the gateway's buffers.
    """
    slow = request_head(harness, cookie, start="GET /demo/slow?seconds=2 HTTP/1.1")
    page = f"GET /sso/afgemeld HTTP/1.1\r\nHost: localhost:{harness.port}\r\n"
    pages = [page + "\r\n"] * (count - 2) + [page + "Connection: close\r\n\r\n"]
    return (slow + "\r\n" + "".join(pages)).encode()


async def test_pipelined_requests_all_answered(fast: GatewayHarness) -> None:
    cookie = await session_cookie(fast)

    data = await exchange(fast, pipelined(fast, cookie, 500))

    assert data.count(b"HTTP/1.1 200 OK\r\n") == 500


async def test_pipelined_requests_queue_bounded(fast: GatewayHarness) -> None:
    # While the first request waits for upstream, the gateway parses only a
    # bounded number of the requests behind it and leaves the rest unread
    # (aiohttp 3.14 queues at most 32 parsed requests per connection).
    assert fast.running is not None
    server = fast.running.runner.server
    assert server is not None
    cookie = await session_cookie(fast)
    _, writer = await open_tls(fast)
    try:
        writer.write(pipelined(fast, cookie, 500))
        await asyncio.sleep(1)
        queued = [len(handler._messages) for handler in server.connections]
    finally:
        await close(writer)

    assert queued
    assert max(queued) <= 32


# --- the two parsers ---------------------------------------------------------------


def test_parser_matches_environment() -> None:
    pure = http_parser.HttpRequestParser is http_parser.HttpRequestParserPy

    assert pure is PURE_PYTHON


@pytest.mark.skipif(PURE_PYTHON, reason="this run is the pure-Python one")
@pytest.mark.timeout(600)
def test_pure_python_parser_run(tmp_path: Path) -> None:
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "run"),
            __file__,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
