"""WebSocket pass-through for sessions, after upstream agreed with a 101.

A browser's WebSocket upgrade gets the same session checks as any proxied
request, and its ``Origin`` must be this gateway (browsers send it on every
WebSocket handshake, and cross-site WebSocket hijacking is the attack it
stops). The gateway opens the upstream socket first, with signed identity
headers; only when upstream answers 101 does the browser get its 101. The
gateway then relays messages both ways and rechecks the session every
``recheck`` seconds, so that a logout, revocation or expiry closes the
socket soon after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from gateway.errors import FormRejected, UpstreamFailed
from gateway.logs import upstream_logger

#: Close code for a socket whose session ended (RFC 6455, section 7.4.1).
POLICY_VIOLATION = 1008

#: Headers of the browser's handshake that the upstream handshake makes anew.
HANDSHAKE_HEADERS = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
)


def is_websocket(request: web.Request) -> bool:
    """Tell whether a request asks to upgrade to a WebSocket."""
    upgrade = request.headers.get("Upgrade", "").lower()
    tokens = {
        token.strip().lower()
        for value in request.headers.getall("Connection", [])
        for token in value.split(",")
    }
    return request.method == "GET" and upgrade == "websocket" and "upgrade" in tokens


def check_websocket_origin(request: web.Request) -> None:
    """Raise unless the handshake's one ``Origin`` is this gateway."""
    origins = request.headers.getall("Origin", [])
    expected = "https://" + request.headers.get("Host", "").lower()
    # SECURITY: the browser sends the session cookie with a cross-site
    # WebSocket handshake, so the Origin is what stops another site.
    if len(origins) != 1 or origins[0].lower() != expected:
        raise FormRejected("websocket_origin_mismatch")


async def relay_websocket(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str] | aiohttp.typedefs.LooseHeaders,
    *,
    timeout: float,
    max_message: int,
    still_valid: Callable[[], bool],
    recheck: float,
) -> web.StreamResponse:
    """Open the upstream socket, then the browser's, and relay until one closes."""
    protocols = [
        value.strip()
        for line in request.headers.getall("Sec-WebSocket-Protocol", [])
        for value in line.split(",")
        if value.strip()
    ]
    try:
        upstream = await session.ws_connect(
            url,
            headers=headers,
            protocols=protocols,
            autoping=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout),
            max_msg_size=max_message,
        )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        upstream_logger.error(
            "upstream refused the websocket",
            extra={"event": "websocket_upstream_failed", "error": type(exc).__name__},
        )
        raise UpstreamFailed("websocket_upstream_failed") from exc

    browser = web.WebSocketResponse(
        protocols=[upstream.protocol] if upstream.protocol else (),
        autoping=False,
        max_msg_size=max_message,
    )
    close_code = WSCloseCode.OK
    try:
        await browser.prepare(request)
        await _pump(browser, upstream, still_valid, recheck)
    except asyncio.CancelledError:
        # The relay is cancelled when the browser's connection is lost or
        # when a stopping gateway's shutdown_timeout is up. Close code 1001
        # (going away) goes to the ends that are still connected, and a second
        # cancellation cuts their close handshakes short.
        close_code = WSCloseCode.GOING_AWAY
        raise
    finally:
        await upstream.close(code=close_code)
        await browser.close(code=close_code)
    return browser


async def _pump(
    browser: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    still_valid: Callable[[], bool],
    recheck: float,
) -> None:
    tasks = {
        asyncio.create_task(_copy(browser, upstream), name="websocket-to-upstream"),
        asyncio.create_task(_copy(upstream, browser), name="websocket-to-browser"),
        asyncio.create_task(_watch(still_valid, recheck), name="websocket-session"),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.get_name() == "websocket-session" and not task.cancelled():
            await browser.close(code=POLICY_VIOLATION, message=b"session ended")


async def _copy(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await target.send_bytes(message.data)
        elif message.type == WSMsgType.PING:
            await target.ping(message.data)
        elif message.type == WSMsgType.PONG:
            await target.pong(message.data)
        else:
            return


async def _watch(still_valid: Callable[[], bool], recheck: float) -> None:
    while still_valid():
        await asyncio.sleep(recheck)
