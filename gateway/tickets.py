"""TLS session ticket keys shared by the worker processes of one gateway.

OpenSSL gives each new ``SSLContext`` random ticket keys. Workers forked
after the context was made share its keys, so a session ticket that one
worker issued resumes on another. A reload builds a new context in each
worker, though, which would give every worker keys of its own. The parent
therefore keeps the current keys in an anonymous shared memory map made
before the fork, rotates them before each reload, and each new context gets
them with OpenSSL's ``SSL_CTX_set_tlsext_ticket_keys``.

Python's ``ssl`` module has no API for ticket keys, so the OpenSSL call goes
through ctypes. ``SharedTicketKeys.create`` checks first, with a handshake in
memory, that two contexts given the same keys resume each other's sessions,
and returns None where that fails.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import ssl
import sys
from collections.abc import Callable
from types import ModuleType

#: Bytes of OpenSSL's ticket key material: a 16-byte key name, a 32-byte
#: HMAC key and a 32-byte AES key (OpenSSL 1.1.1 and 3.x).
TICKET_KEYS_LENGTH = 80

#: ``SSL_CTX_ctrl`` commands behind the ticket key macros of OpenSSL's ssl.h.
_GET_TICKET_KEYS = 58
_SET_TICKET_KEYS = 59


class TicketKeysUnavailable(Exception):
    """Raised where this Python cannot set the ticket keys of a context."""


def _ssl_ctrl() -> Callable[..., int]:
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        raise TicketKeysUnavailable(f"untested Python {sys.version.split()[0]}")
    version = ssl.OPENSSL_VERSION
    if not version.startswith("OpenSSL") or ssl.OPENSSL_VERSION_INFO < (1, 1, 1):
        raise TicketKeysUnavailable(f"untested TLS library {version}")
    import _ssl

    module: ModuleType = _ssl
    # dlsym() on the _ssl extension's handle also searches the libssl that it
    # was linked with, which may differ from the libssl on the library path.
    path = getattr(module, "__file__", None)
    library = ctypes.CDLL(path) if path else ctypes.CDLL(None)
    try:
        function = library.SSL_CTX_ctrl
    except AttributeError:
        raise TicketKeysUnavailable("SSL_CTX_ctrl not found") from None
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    function.restype = ctypes.c_long
    return function


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int | None:
    # NOTE: CPython 3.11's PySSLContext (Modules/_ssl.c) starts with the
    # object header followed by its SSL_CTX pointer. _ssl_ctrl() allows only
    # 3.11 until the layout of a newer version has been checked, and
    # tests/ops/test_workers.py fails where sharing falls back.
    address = id(context) + object.__basicsize__
    return ctypes.c_void_p.from_address(address).value


def set_ticket_keys(context: ssl.SSLContext, keys: bytes) -> None:
    """Give ``context`` the ticket keys ``keys``, or raise TicketKeysUnavailable."""
    if len(keys) != TICKET_KEYS_LENGTH:
        raise ValueError(f"ticket keys are {TICKET_KEYS_LENGTH} bytes, got {len(keys)}")
    control = _ssl_ctrl()
    pointer = _ssl_ctx_pointer(context)
    if not pointer:
        raise TicketKeysUnavailable("the SSL_CTX of the context was not found")
    key_buffer = ctypes.create_string_buffer(keys, TICKET_KEYS_LENGTH)
    if control(pointer, _SET_TICKET_KEYS, TICKET_KEYS_LENGTH, key_buffer) != 1:
        raise TicketKeysUnavailable("OpenSSL did not take the ticket keys")
    read_back = ctypes.create_string_buffer(TICKET_KEYS_LENGTH)
    if control(pointer, _GET_TICKET_KEYS, TICKET_KEYS_LENGTH, read_back) != 1:
        raise TicketKeysUnavailable("OpenSSL did not return the ticket keys")
    if read_back.raw != keys:
        raise TicketKeysUnavailable("OpenSSL returned other ticket keys")


class SharedTicketKeys:
    """Ticket keys in memory that the parent shares with its forked workers."""

    def __init__(self) -> None:
        # An anonymous map is MAP_SHARED, so the parent's rotate() reaches
        # the workers forked before it.
        # SECURITY: the keys encrypt every session ticket. An anonymous map
        # has no name or file, so only this process and its children see it.
        self._memory = mmap.mmap(-1, TICKET_KEYS_LENGTH)
        self.rotate()

    @classmethod
    def create(cls, build: Callable[[], ssl.SSLContext]) -> SharedTicketKeys:
        """Make shared keys, after checking that sessions resume across contexts.

        ``build`` makes a server context, such as the configured one. Raise
        TicketKeysUnavailable where the check fails.
        """
        keys = cls()
        first, second = build(), build()
        keys.apply(first)
        keys.apply(second)
        if not _resumes_across(first, second):
            raise TicketKeysUnavailable("a session did not resume on a second context")
        return keys

    def rotate(self) -> None:
        """Put new random keys in force; only the parent calls this."""
        self._memory[:] = os.urandom(TICKET_KEYS_LENGTH)

    def current(self) -> bytes:
        return bytes(self._memory[:])

    def apply(self, context: ssl.SSLContext) -> None:
        set_ticket_keys(context, self.current())


def _resumes_across(first: ssl.SSLContext, second: ssl.SSLContext) -> bool:
    """Tell whether a session from ``first`` resumes on ``second``, in memory."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only resumption is checked here, not who the server is.
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    session, _ = _exchange(client, first, None)
    if session is None:
        return False
    _, reused = _exchange(client, second, session)
    return reused


def _exchange(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    session: ssl.SSLSession | None,
) -> tuple[ssl.SSLSession | None, bool]:
    """Run a handshake and one byte of data between two memory BIOs.

    Return the client's session and whether it was resumed. With TLS 1.3 the
    server sends its tickets after the handshake, so the byte of data is
    what delivers them to the client.
    """
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, from_client, session=session)
    server = server_context.wrap_bio(to_server, from_server, server_side=True)
    pending = {client, server}
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                continue
            pending.discard(side)
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if not pending:
            break
    if pending:
        return None, False
    server.write(b"x")
    to_client.write(from_server.read())
    if client.read(1) != b"x":
        return None, False
    return client.session, client.session_reused
