"""HTTP/1.1 guards of each client connection, below the application.

``GatewayRequestHandler`` is aiohttp's request handler with the gateway's
limits added:

- a request head must arrive whole within ``header_timeout`` of its first
  byte, so a client that sends one byte a second is cut off with 408;
- a request body must keep arriving (``body_timeout``, ``body_min_rate``),
  so a stalled upload cannot hold its upstream connection;
- a request that the HTTP parser rejects, or whose method or transfer coding
  the gateway does not serve, gets a short response that repeats nothing of
  the request, and the connection is closed. One WARNING line names the peer, the
  status and the exception class, never the input or the exception message,
  because the request line may carry a BSN.

The idle keep-alive timeout and the size limits are aiohttp's own settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo

from gateway.config.models import LimitsConfig
from gateway.logs import access_logger
from gateway.middleware.pipeline import HSTS
from gateway.pages.render import protect

#: Short Dutch reason phrase of each status this module responds with.
TITLES: dict[int, str] = {
    400: "Ongeldig verzoek",
    408: "Verzoek niet op tijd ontvangen",
    414: "Adres te lang",
    431: "Verzoekheaders te groot",
}

#: Methods that llhttp, aiohttp's C parser, accepts in a request (checked
#: with aiohttp 3.14.5). The pure-Python parser takes any token, so the
#: gateway rejects the rest itself and both parsers agree. The middleware
#: rejects those it does not route, such as TRACE and PROPFIND, with 405.
#: CONNECT is left out, because it requests a tunnel and both parsers
#: switch the connection into one.
KNOWN_METHODS = frozenset(
    {
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
        "QUERY", "COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH",
        "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT",
        "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
        "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE",
    }
)  # fmt: skip

#: Rejections logged one by one in each window; the rest are counted.
LOGGED_PER_WINDOW = 10
WINDOW_SECONDS = 60.0


class UnknownMethod(BadHttpMessage):
    """A method outside ``KNOWN_METHODS``, which only aiohttp's pure-Python
    parser lets through (llhttp rejects the others except CONNECT)."""


class UnsupportedVersion(BadHttpMessage):
    """An HTTP version other than 1.0 and 1.1, which aiohttp's pure-Python
    parser reads as 1.1 (RFC 9112, section 2.3, allows rejecting it)."""


class UnsupportedTransferCoding(BadHttpMessage):
    """A ``Transfer-Encoding`` other than one ``chunked``.

    RFC 9112, section 6.1: a coding the server does not understand leaves the
    body length unknown, and in HTTP/1.0 the field means faulty framing.
    aiohttp reads ``gzip, chunked`` as chunked and passes the field on.
    """


class HeadTimeout(Exception):
    """The request head did not arrive within ``header_timeout``."""


class BodyTimeout(Exception):
    """The request body paused too long or arrived too slowly."""


def rejection_response(status: int) -> web.Response:
    """Build the short response to a rejected request: no echo, no keep-alive."""
    response = web.Response(
        status=status, text=f"{status} {TITLES.get(status, TITLES[400])}\n"
    )
    protect(response)
    # SECURITY: this response skips the app's on_response_prepare, which adds
    # HSTS to every other response.
    response.headers["Strict-Transport-Security"] = HSTS
    response.force_close()
    return response


def raw_rejection(status: int) -> bytes:
    """Return ``rejection_response(status)`` as bytes for a bare transport."""
    body = f"{status} {TITLES[status]}\n".encode()
    head = [
        f"HTTP/1.1 {status} {TITLES[status]}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        f"Strict-Transport-Security: {HSTS}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def rejection_status(error: BaseException, request_line_too_long: bool) -> int:
    """Choose the status for a request the parser or the guards rejected."""
    if isinstance(error, HeadTimeout | BodyTimeout):
        return 408
    if _says_too_many(error):
        return 431
    if isinstance(error, LineTooLong):
        # RFC 9112, section 3: a request-target that is too long is 414. The
        # parsers do not say which line was too long, so the handler measures
        # the request line itself.
        return 414 if request_line_too_long else 431
    return 400


def _says_too_many(error: BaseException) -> bool:
    # Both parsers raise a plain BadHttpMessage for too many header and
    # trailer fields; its fixed text is the only mark (aiohttp 3.14).
    return isinstance(error, BadHttpMessage) and error.message.startswith("Too many ")


def protocol_problem(message: Any) -> BadHttpMessage | None:
    """Return what makes a parsed request head unservable, or None.

    ``message`` is a ``RawRequestMessage`` of either aiohttp parser.
    """
    if message.method not in KNOWN_METHODS:
        return UnknownMethod("method")
    if message.version not in ((1, 0), (1, 1)):
        return UnsupportedVersion("version")
    codings = message.headers.getall("Transfer-Encoding", [])
    if codings and (
        # SECURITY: only one plain "chunked" frames a body the way the
        # parser, aiohttp's client and upstream all read it.
        message.version < (1, 1)
        or len(codings) != 1
        or codings[0].strip(" \t").lower() != "chunked"
    ):
        return UnsupportedTransferCoding("transfer-encoding")
    return None


@dataclass
class RejectionLog:
    """Logs rejected requests: the first few of each window, then a count.

    A flood of bad requests thus writes at most ``per_window + 1`` lines a
    window. The count is logged when the window ends.
    """

    per_window: int = LOGGED_PER_WINDOW
    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _window_start: float | None = None
    _logged: int = 0
    _suppressed: dict[str, int] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def record(self, peer: str, status: int, error: BaseException) -> None:
        now = self.clock()
        if self._window_start is None or now - self._window_start >= self.window:
            self._end_window(now)
        name = type(error).__name__
        if self._logged < self.per_window:
            self._logged += 1
            # SECURITY: the class name only: the message and arguments of a
            # parser error contain the rejected bytes.
            access_logger.warning(
                "request rejected",
                extra={
                    "event": "request_rejected",
                    "peer": peer,
                    "status": status,
                    "error": name,
                },
            )
            return
        self._suppressed[name] = self._suppressed.get(name, 0) + 1
        if self._timer is None:
            assert self._window_start is not None
            delay = self._window_start + self.window - now
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._end_window(self.clock())

    def _end_window(self, now: float) -> None:
        if self._suppressed:
            access_logger.warning(
                "requests rejected without a log line",
                extra={
                    "event": "request_rejected_summary",
                    "count": sum(self._suppressed.values()),
                    "errors": dict(sorted(self._suppressed.items())),
                    "window_seconds": self.window,
                },
            )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._suppressed = {}
        self._logged = 0
        self._window_start = now


@dataclass
class BodyClock:
    """Progress of one request body, to tell a slow or stalled upload.

    The body is overdue when no byte arrived for ``timeout`` seconds, or when
    ``timeout`` has passed since its start and it averaged under
    ``min_rate`` bytes a second. Time the gateway itself stopped reading
    does not count (see ``shift``).
    """

    timeout: float
    min_rate: int
    started: float
    last_byte: float
    received: int = 0

    def add(self, size: int, now: float) -> None:
        self.received += size
        self.last_byte = now

    def shift(self, seconds: float) -> None:
        self.started += seconds
        self.last_byte += seconds

    def overdue(self, now: float) -> bool:
        if now - self.last_byte >= self.timeout:
            return True
        elapsed = now - self.started
        too_slow = self.received < self.min_rate * elapsed
        return self.min_rate > 0 and elapsed >= self.timeout and too_slow

    def next_check(self, now: float) -> float:
        """Return the earliest time at which ``overdue`` can become true."""
        due = self.last_byte + self.timeout
        if self.min_rate > 0:
            rate_due = self.started + max(self.timeout, self.received / self.min_rate)
            due = min(due, rate_due)
        # Float rounding must not turn the check into a busy loop.
        return max(due, now + 0.01)


def peer_text(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def handler_settings(limits: LimitsConfig) -> dict[str, Any]:
    """Return the keyword arguments of aiohttp's ``RequestHandler``."""
    return {
        # A proxy passes bodies through as bytes, so nothing is decompressed.
        "auto_decompress": False,
        "keepalive_timeout": limits.keepalive_timeout,
        "max_line_size": limits.max_request_line,
        "max_field_size": limits.max_header_field,
        "max_headers": limits.max_headers,
        "access_log": None,
    }


class GatewayRequestHandler(RequestHandler):
    """aiohttp's request handler with head and body timeouts and quiet
    rejections.

    NOTE: it reads and sets private state of aiohttp 3.14's RequestHandler
    (``_messages``, ``_ErrInfo``, ``_current_request``, ``_task_handler``,
    ``_waiter``, ``_lingering_time``, ``_next_keepalive_close_time``, the
    ``_pause_transport_reading`` pair); tests/test_server_limits.py covers
    each use with both parsers.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        limits: LimitsConfig,
        rejections: RejectionLog,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(manager, loop=loop, **handler_settings(limits))
        self._limits = limits
        self._rejections = rejections
        self._peer = "unknown"
        self._head_started: float | None = None
        # Bytes of the current head so far, and where its first line ends.
        self._head_size = 0
        self._line_end: int | None = None
        self._long_request_line = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_clock: BodyClock | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._paused_at: float | None = None

    # --- connection events -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = peer_text(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_body = self._in_body()
        if data and not (self._force_close or self._close):
            self._note_bytes(data)
        count = self._request_count
        super().data_received(data)
        if self._request_count == count:
            return
        if in_body and self._drop_body_error():
            return
        self._screen(self._request_count - count)
        self._note_messages()

    def _drop_body_error(self) -> bool:
        """Leave a body that failed to parse to the handler that reads it.

        aiohttp queues the error as a further request, so a request whose
        body breaks off mid-stream would get a second, unrequested answer.
        The handler reading the body gets the error from the body stream
        instead, and the connection closes after its response.
        """
        error = self._messages[-1][0] if self._messages else None
        if not isinstance(error, _ErrInfo):
            return False
        self._messages.pop()
        self._rejections.record(self._peer, 400, error.exc)
        body = self._body
        if body is not None and body.exception() is None:
            # aiohttp's C parser raises without failing the body stream, which
            # would leave its reader, and so the upstream upload, waiting.
            failure = RequestPayloadError("request body failed to parse")
            body.set_exception(failure, error.exc)
        # The rest of a broken body cannot be framed, so aiohttp must not
        # read on after the response to skip it.
        self._lingering_time = 0.0
        self.close()
        return True

    def _pause_transport_reading(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._loop.time()
        super()._pause_transport_reading()

    def _resume_transport_reading(self) -> None:
        if self._paused_at is not None:
            # Time the gateway did not read is not the client's time.
            paused = self._loop.time() - self._paused_at
            self._paused_at = None
            if self._head_started is not None:
                self._head_started += paused
            if self._body_clock is not None:
                self._body_clock.shift(paused)
        super()._resume_transport_reading()

    # --- request heads -----------------------------------------------------

    def _note_bytes(self, data: bytes) -> None:
        now = self._loop.time()
        if self._in_body():
            assert self._body_clock is not None
            self._body_clock.add(len(data), now)
            return
        if self._line_end is None and (end := data.find(b"\n")) >= 0:
            self._line_end = self._head_size + end
        self._head_size += len(data)
        if self._head_started is None:
            self._head_started = now
            deadline = now + self._limits.header_timeout
            self._arm_head_timer(deadline)
            # The connection is no longer idle, so aiohttp's keep-alive check,
            # which closes a connection without a whole request, waits too.
            self._next_keepalive_close_time = max(
                self._next_keepalive_close_time, deadline
            )

    def _note_messages(self) -> None:
        """Reset the head state after the parser produced messages."""
        # Where pipelined requests share a read, these offsets count from the
        # first of them, which is close enough to choose between 414 and 431.
        line_end = self._head_size if self._line_end is None else self._line_end
        self._long_request_line = line_end > self.max_line_size
        self._head_started = None
        self._head_size = 0
        self._line_end = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._messages:
            payload = self._messages[-1][1]
            if isinstance(payload, StreamReader) and not payload.is_eof():
                self._start_body(payload)

    def _arm_head_timer(self, when: float) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._loop.call_at(when, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        if self._head_started is None or self.transport is None:
            return
        now = self._loop.time()
        due = self._head_started + self._limits.header_timeout
        if self._paused_at is not None or now < due:
            # A paused transport postpones the deadline when it resumes.
            self._arm_head_timer(max(due, now + self._limits.header_timeout))
            return
        self._cut(HeadTimeout())

    # --- request bodies ----------------------------------------------------

    def _in_body(self) -> bool:
        body = self._body
        return body is not None and not body.is_eof() and body.exception() is None

    def _start_body(self, payload: StreamReader) -> None:
        now = self._loop.time()
        self._body = payload
        self._body_clock = BodyClock(
            self._limits.body_timeout, self._limits.body_min_rate, now, now
        )
        self._arm_body_timer(self._body_clock.next_check(now))

    def _arm_body_timer(self, when: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self._loop.call_at(when, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        clock = self._body_clock
        if clock is None or not self._in_body() or self.transport is None:
            return
        now = self._loop.time()
        if self._paused_at is not None:
            self._arm_body_timer(now + clock.timeout)
        elif clock.overdue(now):
            self._cut(BodyTimeout())
        else:
            self._arm_body_timer(clock.next_check(now))

    # --- cutting a connection off ------------------------------------------

    def _cut(self, error: HeadTimeout | BodyTimeout) -> None:
        """Answer 408 where no response has started, then close at once.

        The handler task is cancelled too, so that a proxied request gives
        its upstream connection back now instead of when the TLS shutdown
        with an unresponsive client ends.
        """
        self._rejections.record(self._peer, 408, error)
        transport = self.transport
        request = self._current_request
        idle = request is None and self._waiter is not None
        started = request is not None and request.writer.output_size > 0
        if transport is not None and (idle or (request is not None and not started)):
            transport.write(raw_rejection(408))
        task = self._task_handler
        self._stop_timers()
        self.force_close()
        if task is not None and not task.done():
            task.cancel()

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        self._body_clock = None

    # --- rejected requests -------------------------------------------------

    def _screen(self, new: int) -> None:
        """Turn the first new request head with a protocol problem into a
        parser error, and drop the requests queued behind it.

        SECURITY: this runs before any handler sees the request, so nothing
        the gateway rejects reaches the application or upstream. The error
        takes aiohttp's parser-error path: answered, then the connection
        closes, so the requests behind it are never served.
        """
        first = len(self._messages) - new
        for index in range(max(first, 0), len(self._messages)):
            message = self._messages[index][0]
            if isinstance(message, _ErrInfo):
                return
            problem = protocol_problem(message)
            if problem is not None:
                error = _ErrInfo(status=400, exc=problem, message="")
                self._messages[index] = (error, EMPTY_PAYLOAD)
                while len(self._messages) > index + 1:
                    self._messages.pop()
                return

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status = rejection_status(exc, self._long_request_line)
        self._rejections.record(self._peer, status, exc)
        return rejection_response(status)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        error = kw.get("exc_info")
        if isinstance(error, HttpProcessingError | RequestPayloadError):
            # aiohttp logs a body that fails to parse after its request was
            # answered with a traceback, and the message holds the bad bytes.
            self._rejections.record(self._peer, 400, error)
            return
        super().log_exception(*args, **kw)


def handler_factory(
    server: web.Server, limits: LimitsConfig
) -> Callable[[], GatewayRequestHandler]:
    """Return a factory of request handlers that share one rejection log."""
    loop = asyncio.get_running_loop()
    rejections = RejectionLog()

    def create() -> GatewayRequestHandler:
        return GatewayRequestHandler(
            server, limits=limits, rejections=rejections, loop=loop
        )

    return create
