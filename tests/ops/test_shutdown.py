"""Graceful shutdown of ``sso-gateway serve`` on SIGTERM and SIGINT.

The gateway stops listening at once, closes idle keep-alive connections,
lets requests in progress finish within ``shutdown_timeout`` and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from tests.ops.conftest import StartServed
from tests.support.harness import launch
from tests.support.served import (
    ServedGateway,
    accepts,
    http_request,
    read_response,
)

#: Seconds a poll waits for the gateway to reach a state.
POLL_TIMEOUT = 10.0


async def logged_in(served: ServedGateway) -> aiohttp.ClientSession:
    await served.harness.add_link("noord", "ysis-jan", "medimo-jan")
    client = served.client("noord")
    response = await launch(client, "noord", userId="ysis-jan")
    assert response.status == 303
    return client


async def fetch(client: aiohttp.ClientSession, path: str) -> tuple[int, bytes]:
    async with client.get(path) as response:
        return response.status, await response.read()


async def in_flight(
    served: ServedGateway, path: str
) -> asyncio.Task[tuple[int, bytes]]:
    """Start a proxied request and return once the gateway is handling it."""
    client = await logged_in(served)
    task = asyncio.create_task(fetch(client, path))
    deadline = time.monotonic() + POLL_TIMEOUT
    while await served.metric("sso_gateway_requests_in_progress") != 1:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the request never reached the gateway"
        await asyncio.sleep(0.05)
    return task


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
    served = await serve_gateway(gateway_overrides={"shutdown_timeout": "1s"})
    task = await in_flight(served, "/demo/slow?seconds=20")

    started = time.monotonic()
    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(10)
    elapsed = time.monotonic() - started

    assert code == 0
    assert 1 <= elapsed < 5
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert isinstance(outcome, aiohttp.ClientError), outcome
    (stopped,) = served.events("stopped")
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
