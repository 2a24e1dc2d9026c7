"""Forward one authenticated request to upstream and stream the answer back.

The client session is shared, has no cookie jar (so no user's upstream cookie
reaches another user) and never follows redirects (the browser sees them).
Bodies pass through as bytes in both directions: automatic decompression is
off, so ``Content-Encoding`` and ``Content-Length`` stay true.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway.errors import BadRequest, UpstreamFailed, UpstreamTimeout
from gateway.upstream.websocket import HANDSHAKE_HEADERS, relay_websocket
from gateway.logs import upstream_logger
from gateway.middleware.headers import request_headers, response_headers
from gateway.signature import SIGNATURE_HEADER, sign_request

#: Headers aiohttp's client would add by itself; the browser's own go through.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

_CHUNK = 64 * 1024

#: Methods whose repetition has the same effect as one request (RFC 9110,
#: section 9.2.2), so a bodiless one may be sent again on a fresh connection.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _BodyTooLarge(Exception):
    """Raised inside the upload stream when a chunked body passes the limit."""


async def _limited(request: web.Request) -> AsyncIterator[bytes]:
    # Bodies without Content-Length are counted as they stream, because
    # aiohttp applies client_max_size only to request.read() and post().
    sent = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        sent += len(chunk)
        if sent > request.client_max_size:
            raise _BodyTooLarge
        yield chunk


def _too_large(request: web.Request, size: int) -> web.HTTPRequestEntityTooLarge:
    upstream_logger.warning(
        "request body too large",
        extra={
            "event": "body_too_large",
            "method": request.method,
            "limit": request.client_max_size,
        },
    )
    return web.HTTPRequestEntityTooLarge(
        max_size=request.client_max_size, actual_size=size
    )


def create_client_session(max_connections: int) -> aiohttp.ClientSession:
    """Create the pooled upstream client; call it in the app's startup hook."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        # Kept below common upstream idle timeouts (nginx 75 s, gunicorn 2 s
        # is lower still), so a reused connection is rarely closed under us.
        keepalive_timeout=2.0,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
    )


class Proxy:
    """Sends requests to upstream with the gateway's identity headers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        signing_key: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
        observe: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._observe = observe
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = signing_key
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            # aiohttp's connect timeout covers the wait for a free pool
            # connection and the connecting itself. Bounding both by the read
            # timeout keeps a slow upstream from queueing requests: with a
            # full pool, a request gets 504 after read_timeout, not after
            # every request ahead of it.
            connect=read_timeout,
            sock_connect=min(connect_timeout, read_timeout),
            sock_read=read_timeout,
        )

    def _headers(
        self, request: web.Request, target: str, identity: Mapping[str, str], client_ip: str
    ) -> aiohttp.typedefs.LooseHeaders:
        headers = request_headers(request.headers)
        headers.add("X-Forwarded-For", client_ip)
        headers.add("X-Forwarded-Proto", "https")
        # The Host header, never request.host: with an absolute-form target
        # ("GET https://other.example/ HTTP/1.1") aiohttp takes request.host
        # from the target, while host_middleware checked only the header.
        headers.add("X-Forwarded-Host", request.headers.get(hdrs.HOST, ""))
        for name, value in identity.items():
            headers.add(name, value)
        headers.add(SIGNATURE_HEADER, sign_request(self._key, request.method, target, identity))
        return headers

    async def websocket(
        self,
        request: web.Request,
        identity: Mapping[str, str],
        client_ip: str,
        *,
        still_valid: Callable[[], bool],
        recheck: float,
    ) -> web.StreamResponse:
        """Relay a WebSocket to upstream with signed identity headers."""
        target = request.rel_url.raw_path_qs
        headers = CIMultiDict(self._headers(request, target, identity, client_ip))
        for name in HANDSHAKE_HEADERS:
            headers.popall(name, None)
        return await relay_websocket(
            request,
            self._session,
            self._base + target,
            headers,
            timeout=self._timeout.sock_read or 30.0,
            max_message=request.client_max_size,
            still_valid=still_valid,
            recheck=recheck,
        )

    async def forward(
        self,
        request: web.Request,
        identity: Mapping[str, str],
        client_ip: str,
        decorate: Callable[[web.StreamResponse], None] | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back.

        ``decorate`` may add headers (such as a re-issued cookie) to the
        response before its status line goes out.
        """
        target = request.rel_url.raw_path_qs
        url = URL(self._base + target, encoded=True)
        has_body = request.body_exists
        declared = request.content_length
        if has_body and declared is not None and declared > request.client_max_size:
            raise _too_large(request, declared)
        started = time.monotonic()
        upstream = await self._send(request, url, target, identity, client_ip, has_body)
        try:
            self._observe(time.monotonic() - started)
            return await self._relay(request, upstream, decorate)
        finally:
            upstream.release()

    async def _send(
        self,
        request: web.Request,
        url: URL,
        target: str,
        identity: Mapping[str, str],
        client_ip: str,
        has_body: bool,
    ) -> aiohttp.ClientResponse:
        # An idempotent request without a body can be retried once when a
        # pooled connection turns out to be closed. One with a body cannot,
        # because part of it may already be gone, and a POST or PATCH cannot,
        # because upstream may have acted on it before the connection closed.
        retry = not has_body and request.method in _IDEMPOTENT_METHODS
        attempts = 2 if retry else 1
        body: aiohttp.StreamReader | AsyncIterator[bytes] | None = None
        if has_body and request.content_length is not None:
            # aiohttp's parser stops at the declared length, which forward()
            # has checked against the limit.
            body = request.content
        elif has_body:
            body = _limited(request)
        for attempt in range(1, attempts + 1):
            try:
                return await self._session.request(
                    request.method,
                    url,
                    headers=self._headers(request, target, identity, client_ip),
                    data=body,
                    allow_redirects=False,
                    skip_auto_headers=_SKIP_AUTO_HEADERS,
                    timeout=self._timeout,
                )
            except aiohttp.ServerDisconnectedError as exc:
                if attempt < attempts:
                    upstream_logger.warning(
                        "upstream closed a pooled connection, retrying once",
                        extra={"event": "upstream_retry", "method": request.method},
                    )
                    continue
                raise UpstreamFailed("upstream_disconnected") from exc
            except asyncio.TimeoutError as exc:
                raise UpstreamTimeout("upstream_timeout") from exc
            except aiohttp.ClientError as exc:
                if isinstance(exc.__cause__, _BodyTooLarge):
                    raise _too_large(request, request.client_max_size + 1) from exc
                if request.content.exception() is not None:
                    # The browser's body broke off or failed to parse, so the
                    # upload failed on the gateway's side, not upstream's.
                    raise BadRequest("request_body_invalid") from exc
                upstream_logger.error(
                    "upstream request failed",
                    extra={"event": "upstream_failed", "error": type(exc).__name__},
                )
                raise UpstreamFailed("upstream_failed") from exc
        raise UpstreamFailed("upstream_failed")

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        decorate: Callable[[web.StreamResponse], None] | None,
    ) -> web.StreamResponse:
        if upstream.status == 101:
            # SECURITY: the gateway sent no Upgrade, so a 101 would hand the
            # raw connection to upstream with nothing checked after it.
            upstream_logger.error(
                "upstream switched protocols unasked",
                extra={"event": "upstream_unexpected_upgrade"},
            )
            raise UpstreamFailed("upstream_unexpected_upgrade")
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in response_headers(upstream.headers):
            response.headers.add(name, value)
        response.headers.add("Vary", "Cookie")
        if decorate is not None:
            decorate(response)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            # The status line is already out, so the only honest signal left
            # is to cut the connection instead of ending the body normally.
            upstream_logger.error(
                "upstream response broke off",
                extra={"event": "upstream_body_failed", "error": type(exc).__name__},
            )
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
