"""Which headers cross the gateway, in each direction.

Toward upstream, every header that is or could be mistaken for an identity
header is removed before the gateway adds its own, so that only the gateway
can produce them. Names are compared lower-cased, and a name with ``_`` is
dropped outright: some servers (PHP, CGI) treat ``X_Medimo_Account`` as
``X-Medimo-Account``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.session.codec import GATEWAY_COOKIES

#: Hop-by-hop headers (RFC 9110 section 7.6.1) and their common relatives.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)

#: Exact names a browser must never be able to send upstream.
RESERVED_NAMES = frozenset(
    {
        "host",
        "expect",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "x-request-id",
        "remote-user",
        "x-remote-user",
        "x-user",
        "x-auth-user",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-preferred-username",
        "x-rewrite-url",
        # RFC 9440 and IIS ARR carry a client certificate in these.
        "client-cert",
        "client-cert-chain",
        "x-arr-clientcert",
        # SECURITY: the upstream signature covers the method, and some
        # frameworks take the method from these instead.
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)

#: Name prefixes reserved for the gateway or used by other proxies for identity.
RESERVED_PREFIXES = (
    "x-medimo-",
    "x-ysis-",
    "x-gateway-",
    "x-forwarded-",
    "x-original-",
    "x-ssl-",
    "x-client-cert",
    "x-client-verify",
    "ssl-client",
    "x-remote-",
    "x-auth-request-",
    "x-authenticated-",
    "x-webauth-",
)


def _connection_tokens(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> set[str]:
    values = headers.getall("Connection", []) if hasattr(headers, "getall") else []
    return {token.strip().lower() for value in values for token in value.split(",")}


def is_reserved(name: str) -> bool:
    """Tell whether a request header name belongs to the gateway alone."""
    lower = name.lower()
    return lower in RESERVED_NAMES or lower.startswith(RESERVED_PREFIXES)


def strip_gateway_cookies(value: str) -> str:
    """Remove the gateway's own cookies from a ``Cookie`` header value.

    aiohttp's cookie parser also splits on ``,``, so it reads
    ``a=1, __Host-sso_session=...`` as a session. Such a pair is removed
    whole, so that upstream never sees a value the gateway took as a cookie.
    """
    kept = []
    for pair in value.split(";"):
        names = {part.split("=", 1)[0].strip().lower() for part in pair.split(",")}
        if pair.strip() and not names & _GATEWAY_COOKIES_LOWER:
            kept.append(pair.strip())
    return "; ".join(kept)


_GATEWAY_COOKIES_LOWER = frozenset(name.lower() for name in GATEWAY_COOKIES)


def request_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Copy the browser's headers that may go upstream, keeping repeats and order."""
    named_in_connection = _connection_tokens(incoming)
    outgoing: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if "_" in lower or lower in HOP_BY_HOP or lower in named_in_connection:
            continue
        if is_reserved(lower):
            continue
        if lower == "cookie":
            value = strip_gateway_cookies(value)
            if not value:
                continue
        outgoing.add(name, value)
    return outgoing


def _sets_gateway_cookie(value: str) -> bool:
    name = value.split("=", 1)[0].strip().lower()
    return name in _GATEWAY_COOKIES_LOWER or name.startswith("__host-sso_")


def response_headers(incoming: CIMultiDictProxy[str]) -> Iterable[tuple[str, str]]:
    """Yield upstream's response headers that may go to the browser."""
    named_in_connection = _connection_tokens(incoming)
    for name, value in incoming.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named_in_connection:
            continue
        if lower == "set-cookie" and _sets_gateway_cookie(value):
            continue
        if lower == "strict-transport-security":
            continue
        yield name, value
