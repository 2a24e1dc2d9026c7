"""WebSockets through the gateway: session, Origin, identity, and logout."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.harness import GatewayHarness, launch


async def logged_in(gateway: GatewayHarness) -> aiohttp.ClientSession:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    assert (await launch(client, "noord", userId="ysis-jan")).status == 303
    return client


def origin(gateway: GatewayHarness) -> dict[str, str]:
    return {"Origin": gateway.base_url}


async def test_websocket_carries_identity(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.ws_connect("/demo/ws", headers=origin(gateway), protocols=["demo"]) as socket:
        identity = json.loads(await socket.receive_str())
        await socket.send_str("hallo")
        echoed = await socket.receive_str()

    assert identity["X-Medimo-Account"] == "medimo-jan"
    assert identity["X-Ysis-User"] == "ysis-jan"
    assert identity["X-Gateway-Signature"].startswith("t=")
    assert socket.protocol == "demo"
    assert echoed == "hallo"


async def test_websocket_binary_echo(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.ws_connect("/demo/ws", headers=origin(gateway)) as socket:
        await socket.receive_str()
        await socket.send_bytes(b"\x00\x01\x02")

        assert await socket.receive_bytes() == b"\x00\x01\x02"


async def test_websocket_without_session_401(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")

    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/demo/ws", headers=origin(gateway))

    assert caught.value.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "https://evil.example"}, id="foreign"),
        pytest.param({}, id="missing"),
    ],
)
async def test_websocket_bad_origin_403(gateway: GatewayHarness, headers: dict[str, str]) -> None:
    client = await logged_in(gateway)
    before = len(gateway.upstream_received)

    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/demo/ws", headers=headers)

    assert caught.value.status == 403
    assert len(gateway.upstream_received) == before


async def test_websocket_closes_after_logout(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    other = gateway.client("noord")
    other.cookie_jar.update_cookies({c.key: c.value for c in client.cookie_jar})

    async with client.ws_connect("/demo/ws", headers=origin(gateway)) as socket:
        await socket.receive_str()
        async with other.post("/sso/logout", headers=origin(gateway), allow_redirects=False) as response:
            assert response.status == 303

        message = await asyncio.wait_for(socket.receive(), timeout=5)

    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert socket.close_code == 1008


async def test_h2c_upgrade_not_forwarded(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    before = len(gateway.upstream_received)

    headers = {"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "AAMAAABkAAQAAP__"}
    async with client.get("/demo/echo", headers=headers) as response:
        assert response.status == 200

    (received,) = gateway.upstream_received[before:]
    names = {name.lower() for name, _ in received.headers}
    assert "upgrade" not in names
    assert "http2-settings" not in names


async def test_unasked_upstream_101_is_502(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)

    async with client.get("/demo/upgrade") as response:
        assert response.status == 502
