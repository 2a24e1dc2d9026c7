"""Graceful shutdown of ``sso-gateway serve`` on SIGTERM and SIGINT.

The gateway stops listening at once, closes idle keep-alive connections,
lets requests in progress finish within ``shutdown_timeout`` and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from tests.ops.conftest import StartServed
from tests.support.served import (
    POLL_TIMEOUT,
    SLOW_UPSTREAM,
    STOP_MARGIN,
    accepts,
    assert_cut_off,
    http_request,
    in_flight,
    logged_in,
    read_response,
)


async def test_sigterm_lets_request_finish(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides={"shutdown_timeout": "10s"})
    task = await in_flight(served, "/demo/slow?seconds=2")

    started = time.monotonic()
    served.send_signal(signal.SIGTERM)
    status, body = await task
    code = await served.wait_exit(10)

    assert status == 200
    assert body == "Na 2 seconden.\n".encode()
    assert code == 0
    assert time.monotonic() - started < 10
    (stopping,) = served.events("stopping")
    assert stopping["requests_in_progress"] == 1
    (stopped,) = served.events("stopped")
    assert stopped["requests_cancelled"] == 0


async def test_sigterm_refuses_new_connections(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    task = await in_flight(served, "/demo/slow?seconds=3")
    port = served.port

    served.send_signal(signal.SIGTERM)
    await served.wait_for_event("stopping")
    deadline = time.monotonic() + POLL_TIMEOUT
    while await asyncio.to_thread(accepts, port):
        assert time.monotonic() < deadline, "the gateway still accepts connections"
        await asyncio.sleep(0.05)

    assert not task.done()
    assert (await task)[0] == 200


async def test_sigint_stops_gracefully(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    task = await in_flight(served, "/demo/slow?seconds=1")

    served.send_signal(signal.SIGINT)

    assert (await task)[0] == 200
    assert await served.wait_exit(10) == 0


async def test_shutdown_timeout_cancels_request(serve_gateway: StartServed) -> None:
    served = await serve_gateway(
        gateway_overrides={**SLOW_UPSTREAM, "shutdown_timeout": "4s"}
    )
    task = await in_flight(served, "/demo/slow?seconds=30")

    started = time.monotonic()
    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(30)
    elapsed = time.monotonic() - started

    assert code == 0
    assert elapsed < 4 + STOP_MARGIN, served.log_tail()
    (stopped,) = served.events("stopped")
    assert 4 <= stopped["seconds"] < 4 + STOP_MARGIN
    assert stopped["requests_cancelled"] == 1
    await assert_cut_off(task)


async def test_zero_shutdown_timeout_cancels_at_once(
    serve_gateway: StartServed,
) -> None:
    served = await serve_gateway(
        gateway_overrides={**SLOW_UPSTREAM, "shutdown_timeout": "0s"}
    )
    task = await in_flight(served, "/demo/slow?seconds=30")

    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(30)

    assert code == 0
    (stopped,) = served.events("stopped")
    assert stopped["seconds"] < STOP_MARGIN
    assert stopped["requests_cancelled"] == 1
    await assert_cut_off(task)


async def test_shutdown_timeout_cuts_stream(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides={"shutdown_timeout": "1s"})
    client = await logged_in(served)
    # 1000 chunks with a pause of 10 ms each take at least 10 seconds.
    async with client.get("/demo/stream?chunks=1000") as response:
        assert response.status == 200
        first = await response.content.readexactly(1024)

        served.send_signal(signal.SIGTERM)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    assert first == b"a" * 1024
    assert await served.wait_exit(30) == 0
    (stopped,) = served.events("stopped")
    assert stopped["seconds"] < 1 + STOP_MARGIN
    assert stopped["requests_cancelled"] == 1


async def test_shutdown_timeout_closes_websocket(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides={"shutdown_timeout": "1s"})
    client = await logged_in(served)
    origin = {"Origin": served.base_url}
    async with client.ws_connect("/demo/ws", headers=origin) as socket:
        await socket.receive_str()
        await socket.send_str("hallo")
        assert await socket.receive_str() == "hallo"

        served.send_signal(signal.SIGTERM)
        message = await socket.receive(timeout=1 + STOP_MARGIN)

    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert socket.close_code == WSCloseCode.GOING_AWAY
    assert await served.wait_exit(30) == 0
    (stopped,) = served.events("stopped")
    assert stopped["seconds"] < 1 + STOP_MARGIN
    assert stopped["requests_cancelled"] == 1


async def test_sigterm_closes_idle_connection(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    idle = await asyncio.to_thread(served.tls_socket)
    try:
        idle.sendall(http_request(served.port, "/sso/afgemeld"))
        status, _ = await asyncio.to_thread(read_response, idle)
        assert status == 200
        task = await in_flight(served, "/demo/slow?seconds=3")

        served.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest = await asyncio.to_thread(idle.recv, 65536)
        closed_after = time.monotonic() - started
    finally:
        idle.close()

    assert rest == b""
    assert closed_after < 2
    assert not task.done()
    assert (await task)[0] == 200
