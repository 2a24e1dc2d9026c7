"""The TLS listener: plain TCP first, then a handshake the gateway runs itself.

asyncio logs a failed server-side TLS handshake only in debug mode, and
aiohttp never sees the connection, so a refused client certificate would
leave no trace. Each connection is therefore accepted as plain TCP, upgraded
with ``loop.start_tls()`` here, where a failure is logged with the peer and
the verify error, and only then handed to aiohttp's request handler.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from asyncio import sslproto
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import BaseSite

from gateway import proxy_protocol
from gateway.config.types import IPNetwork
from gateway.logs import tls_logger
from gateway.middleware.scope import normalise_address
from gateway.proxy_protocol import ProxyHeader, ProxyHeaderError

SslContextSource = Callable[[], ssl.SSLContext]
#: Creates the request handler of one connection; a ``web.Server`` is one.
HandlerFactory = Callable[[], RequestHandler]


class _Buffer(asyncio.Protocol):
    """Holds what arrives between the end of the handshake and the handover.

    ``start_tls`` reads decrypted data as soon as the handshake completes,
    before the coroutine that awaited it resumes, so aiohttp's protocol could
    receive data before ``connection_made``.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message} ({error.verify_code})"
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, TimeoutError):
        return "handshake timed out"
    return type(error).__name__


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, but a failed handshake sends its alert first.

    OpenSSL writes the alert (``bad certificate``, ``certificate expired``)
    into the outgoing buffer, and asyncio closes the socket without sending
    it. With TLS 1.3 the client has already finished its side of the
    handshake by then, so without the alert it sees a plain EOF instead of
    the reason.
    """

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            self._process_outgoing()  # type: ignore[attr-defined]
        super()._on_handshake_complete(handshake_exc)  # type: ignore[misc]


async def _start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    timeout: float,
    *,
    early: bytes = b"",
    peername: tuple[str, int] | None = None,
) -> asyncio.Transport:
    """Run a server-side handshake on ``transport``, as ``loop.start_tls`` does.

    NOTE: this follows ``asyncio.base_events.start_tls`` of CPython 3.11 to
    3.13, whose ``sslproto`` module is not public API.
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = _AlertingSSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=True,
        ssl_handshake_timeout=timeout,
        call_connection_made=False,
    )
    if peername is not None:
        # The client named by a balancer's PROXY header replaces the TCP peer
        # for everything that asks the TLS transport, aiohttp included.
        tls._extra["peername"] = peername  # type: ignore[attr-defined]
        tls._extra["balancer"] = transport.get_extra_info("peername")  # type: ignore[attr-defined]

    def connect() -> None:
        tls.connection_made(transport)
        _feed(tls, early)

    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(connect)
    resumed = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls._app_transport  # type: ignore[attr-defined,no-any-return]


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand bytes read before TLS (after a PROXY header) to the TLS protocol."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


def _from_balancer(peer: Any, balancers: Sequence[IPNetwork]) -> bool:
    address = normalise_address(str(peer[0])) if peer else None
    return address is not None and any(
        address.version == network.version and address in network for network in balancers
    )


class TlsAcceptor(asyncio.Protocol):
    """Accepts one TCP connection, runs the TLS handshake, then hands over."""

    def __init__(
        self,
        server: HandlerFactory,
        contexts: SslContextSource,
        handshake_timeout: float,
        on_handshake_failed: Callable[[str], None] | None = None,
        balancers: Sequence[IPNetwork] = (),
    ) -> None:
        self._server = server
        self._contexts = contexts
        self._timeout = handshake_timeout
        self._on_failed = on_handshake_failed
        self._balancers = balancers
        self._task: asyncio.Task[None] | None = None
        # Bytes that arrive before TLS starts: a PROXY header, then TLS.
        self._early = bytearray()
        self._arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._upgrade(transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection if its handshake has not finished yet."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def data_received(self, data: bytes) -> None:
        self._early.extend(data)
        self._arrived.set()

    def eof_received(self) -> bool | None:
        self._arrived.set()
        return None

    async def _read_proxy_header(
        self, transport: asyncio.Transport, peer_text: str
    ) -> ProxyHeader | None:
        """Read a balancer's PROXY header; None after closing a bad connection."""
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    header = proxy_protocol.parse(bytes(self._early))
                    if header is not None:
                        return header
                    self._arrived.clear()
                    if transport.is_closing():
                        raise ProxyHeaderError("the connection closed before the header")
                    await self._arrived.wait()
        except (ProxyHeaderError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, ProxyHeaderError) else "no header in time"
            tls_logger.warning(
                "proxy protocol header rejected",
                extra={"event": "proxy_header_rejected", "peer": peer_text, "error": reason},
            )
            transport.abort()
            return None

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        peer_text = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        client: tuple[str, int] | None = None
        early = b""
        if self._balancers and _from_balancer(peer, self._balancers):
            # SECURITY: only a configured balancer may name the client; for
            # anyone else a PROXY header is just bytes that fail the handshake.
            header = await self._read_proxy_header(transport, peer_text)
            if header is None:
                return
            early = bytes(self._early[header.size :])
            if header.client is not None:
                client = (str(header.client[0]), header.client[1])
        elif self._early:
            early = bytes(self._early)
        buffer = _Buffer()
        loop = asyncio.get_running_loop()
        try:
            tls = await _start_tls(
                transport, buffer, self._contexts(), self._timeout, early=early, peername=client
            )
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            reason = _describe(exc)
            tls_logger.warning(
                "tls handshake failed",
                extra={"event": "tls_handshake_failed", "peer": peer_text, "error": reason},
            )
            if self._on_failed is not None:
                self._on_failed(reason)
            transport.abort()
            return
        if tls is None:
            transport.abort()
            return
        self._hand_over(tls, buffer)

    def _hand_over(self, tls: asyncio.Transport, buffer: _Buffer) -> None:
        handler = self._server()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        for chunk in buffer.chunks:
            handler.data_received(chunk)
        if buffer.eof:
            handler.eof_received()
        if buffer.lost is not None:
            handler.connection_lost(buffer.lost[0])


class MutualTlsSite(BaseSite):
    """An aiohttp site that serves TLS through ``TlsAcceptor``.

    ``contexts`` is called for each new connection, so a reload that swaps
    the context applies to new connections only.
    """

    __slots__ = (
        "_acceptors",
        "_balancers",
        "_contexts",
        "_handlers",
        "_handshake_timeout",
        "_host",
        "_on_failed",
        "_port",
        "_sock",
    )

    def __init__(
        self,
        runner: web.BaseRunner[Any],
        host: str,
        port: int,
        contexts: SslContextSource,
        *,
        handshake_timeout: float = 10.0,
        on_handshake_failed: Callable[[str], None] | None = None,
        sock: socket.socket | None = None,
        backlog: int = 128,
        handlers: HandlerFactory | None = None,
        balancers: Callable[[], Sequence[IPNetwork]] = lambda: (),
    ) -> None:
        super().__init__(runner, backlog=backlog)
        #: Read for each new connection, so that a reload applies at once.
        self._balancers = balancers
        self._handlers = handlers
        self._host = host
        self._port = port
        self._contexts = contexts
        self._handshake_timeout = handshake_timeout
        self._on_failed = on_handshake_failed
        self._sock = sock
        self._acceptors: set[TlsAcceptor] = set()

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"https://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        handlers = self._handlers or server

        def factory() -> TlsAcceptor:
            acceptor = TlsAcceptor(
                handlers,
                self._contexts,
                self._handshake_timeout,
                self._on_failed,
                self._balancers(),
            )
            # Finished acceptors are dropped here, so the set stays as small
            # as the number of handshakes in progress.
            self._acceptors = {item for item in self._acceptors if not item.done}
            self._acceptors.add(acceptor)
            return acceptor

        if self._sock is not None:
            self._server = await loop.create_server(
                factory, sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                factory,
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=True,
            )
        sockets = self._server.sockets or ()
        if self._port == 0 and sockets:
            self._port = sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        return self._port

    async def stop(self) -> None:
        """Stop listening, and drop the connections still in their handshake.

        A connection whose handshake finishes after this would otherwise be
        handed to a server that is shutting down.
        """
        await super().stop()
        for acceptor in self._acceptors:
            acceptor.abort()
        self._acceptors.clear()

