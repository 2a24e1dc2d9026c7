"""The upstream API client against a fake Medimo that answers over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import UpstreamFailed
from gateway.upstream.api import MedimoApi


@pytest.fixture
async def answer() -> dict[str, Any]:
    """The JSON body the fake upstream returns with 200; tests fill it in."""
    return {}


@pytest.fixture
async def api(answer: dict[str, Any]) -> AsyncIterator[MedimoApi]:
    async def reply(request: web.Request) -> web.Response:
        return web.json_response(answer)

    app = web.Application()
    app.router.add_route("*", "/gateway-api/v1/{path:.*}", reply)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield MedimoApi(session, f"http://127.0.0.1:{port}", "token", timeout=5)
    await runner.cleanup()


UNSAFE_IDS = [
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("../sso/logout", id="path"),
    pytest.param("c-1\r\nSet-Cookie: x=1", id="crlf"),
    pytest.param("", id="empty"),
    pytest.param("a" * 200, id="overlong"),
    pytest.param(12, id="number"),
]


@pytest.mark.parametrize("client_id", UNSAFE_IDS)
async def test_unsafe_client_id_is_502(api: MedimoApi, answer: dict[str, Any], client_id: object) -> None:
    answer["client_id"] = client_id

    with pytest.raises(UpstreamFailed):
        await api.find_client(external_id="ysis-client-1")


@pytest.mark.parametrize("account_id", UNSAFE_IDS)
async def test_unsafe_account_id_is_502(api: MedimoApi, answer: dict[str, Any], account_id: object) -> None:
    answer["account_id"] = account_id

    with pytest.raises(UpstreamFailed):
        await api.verify_account("piet", "demo-wachtwoord")


async def test_plain_ids_accepted(api: MedimoApi, answer: dict[str, Any]) -> None:
    answer.update(client_id="c-1001", account_id="medimo.piet@zorg")

    assert await api.find_client(bsn="123456782") == ("found", "c-1001")
    account = await api.verify_account("piet", "demo-wachtwoord")
    assert account is not None
    assert account.account_id == "medimo.piet@zorg"
