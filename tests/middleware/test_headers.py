"""Header filtering in both directions, on plain multidicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.middleware.headers import (
    is_reserved,
    request_headers,
    response_headers,
    strip_gateway_cookies,
)

Pairs = list[tuple[str, str]]


def headers(pairs: Pairs) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def forwarded_names(pairs: Pairs) -> list[str]:
    return [name.lower() for name in request_headers(headers(pairs))]


def relayed(pairs: Pairs) -> Pairs:
    return list(response_headers(headers(pairs)))


# Each case is one browser header that must not go upstream, plus an
# ordinary header that must.
DROPPED_REQUEST_HEADERS = [
    pytest.param([("X-Medimo-Account", "evil")], id="medimo-account"),
    pytest.param([("x-medimo-account", "evil")], id="medimo-account-lower"),
    pytest.param([("X-MEDIMO-ACCOUNT", "evil")], id="medimo-account-upper"),
    pytest.param([("X-mEdImO-aCcOuNt", "evil")], id="medimo-account-mixed"),
    pytest.param(
        [("X-Medimo-Account", "evil"), ("X-Medimo-Account", "worse")],
        id="medimo-account-repeated",
    ),
    pytest.param([("X_Medimo_Account", "evil")], id="medimo-account-underscores"),
    pytest.param([("x-medimo_account", "evil")], id="medimo-account-one-underscore"),
    pytest.param([("X-Medimo-Tenant", "other")], id="medimo-tenant"),
    pytest.param([("X-Medimo-Client", "c-1")], id="medimo-client"),
    pytest.param([("X-Medimo-Auth-Method", "ysis")], id="medimo-auth-method"),
    pytest.param([("X-Medimo-Anything-New", "1")], id="medimo-prefix"),
    pytest.param([("X-Ysis-User", "ysis-jan")], id="ysis-user"),
    pytest.param([("X-Ysis-Whatever", "1")], id="ysis-prefix"),
    pytest.param([("X-Gateway-Signature", "t=1,v1=00")], id="gateway-signature"),
    pytest.param([("X-Gateway-Other", "1")], id="gateway-prefix"),
    pytest.param([("X-Forwarded-For", "10.0.0.1")], id="forwarded-for"),
    pytest.param([("X-Forwarded-Proto", "http")], id="forwarded-proto"),
    pytest.param([("X-Forwarded-Host", "evil.example")], id="forwarded-host"),
    pytest.param([("X-Forwarded-User", "admin")], id="forwarded-user"),
    pytest.param([("X-Forwarded-Uri", "/admin")], id="forwarded-uri"),
    pytest.param([("X-Forwarded-Client-Cert", "Hash=00")], id="forwarded-client-cert"),
    pytest.param([("Forwarded", "for=10.0.0.1")], id="forwarded"),
    pytest.param([("X-Real-IP", "10.0.0.1")], id="real-ip"),
    pytest.param([("True-Client-IP", "10.0.0.1")], id="true-client-ip"),
    pytest.param([("Remote-User", "admin")], id="remote-user"),
    pytest.param([("X-Original-URL", "/admin")], id="original-url"),
    pytest.param([("X-SSL-Client-Cert", "-----BEGIN")], id="ssl-client-cert"),
    pytest.param([("X-SSL-Client-Verify", "SUCCESS")], id="ssl-client-verify"),
    pytest.param([("X-SSL-Client-S-DN", "CN=admin")], id="ssl-client-dn"),
    pytest.param([("X-Request-Id", "chosen")], id="request-id"),
    pytest.param([("Host", "evil.example")], id="host"),
    pytest.param([("Connection", "keep-alive")], id="connection"),
    pytest.param([("Keep-Alive", "timeout=5")], id="keep-alive"),
    pytest.param([("Client-Cert", ":MIIB:")], id="rfc9440-client-cert"),
    pytest.param([("Client-Cert-Chain", ":MIIB:")], id="rfc9440-chain"),
    pytest.param([("X-ARR-ClientCert", "MIIB")], id="arr-client-cert"),
    pytest.param([("X-Authenticated-User", "admin")], id="authenticated-user"),
    pytest.param([("X-WEBAUTH-USER", "admin")], id="webauth-user"),
    pytest.param([("X-Remote-Group", "admins")], id="remote-group"),
    pytest.param([("X-HTTP-Method-Override", "DELETE")], id="method-override"),
    pytest.param([("X-Method-Override", "DELETE")], id="method-override-short"),
    pytest.param([("Proxy-Connection", "keep-alive")], id="proxy-connection"),
    pytest.param([("Proxy-Authorization", "Basic eDp5")], id="proxy-authorization"),
    pytest.param([("TE", "trailers")], id="te"),
    pytest.param([("Trailer", "X-Checksum")], id="trailer"),
    pytest.param([("Transfer-Encoding", "chunked")], id="transfer-encoding"),
    pytest.param([("Upgrade", "websocket")], id="upgrade"),
    pytest.param([("My_Header", "1")], id="any-underscore"),
]


@pytest.mark.parametrize("spoofed", DROPPED_REQUEST_HEADERS)
def test_request_headers_drop(spoofed: Pairs) -> None:
    names = forwarded_names([("Accept", "text/html"), *spoofed])

    assert names == ["accept"]


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param("X-Custom", id="one-token"),
        pytest.param("keep-alive, X-Custom", id="second-token"),
        pytest.param("  x-CUSTOM  ", id="case-and-spaces"),
    ],
)
def test_request_headers_drop_connection_named(connection: str) -> None:
    names = forwarded_names(
        [("Connection", connection), ("X-Custom", "1"), ("Accept", "*/*")]
    )

    assert names == ["accept"]


def test_request_headers_drop_named_in_second_connection_line() -> None:
    pairs = [
        ("Connection", "keep-alive"),
        ("Connection", "X-Custom"),
        ("X-Custom", "1"),
        ("Accept", "*/*"),
    ]

    assert forwarded_names(pairs) == ["accept"]


def test_request_headers_keep_repeats_and_order() -> None:
    pairs = [
        ("Accept", "text/html"),
        ("X-Trace", "one"),
        ("Accept-Language", "nl"),
        ("X-Trace", "two"),
        ("Content-Type", "application/json"),
    ]

    assert list(request_headers(headers(pairs)).items()) == pairs


def test_request_headers_keep_name_spelling() -> None:
    pairs = [("x-custom-THING", "1")]

    assert list(request_headers(headers(pairs)).items()) == pairs


def test_request_headers_strip_gateway_cookies() -> None:
    pairs = [("Cookie", "a=1; __Host-sso_session=secret; b=2")]

    assert list(request_headers(headers(pairs)).items()) == [("Cookie", "a=1; b=2")]


def test_request_headers_drop_cookie_of_only_gateway_cookies() -> None:
    pairs = [
        ("Cookie", "__Host-sso_session=s; __Host-sso_pending=p"),
        ("Accept", "*/*"),
    ]

    assert forwarded_names(pairs) == ["accept"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("__Host-sso_session=s", "", id="session-only"),
        pytest.param("__Host-sso_pending=p", "", id="pending-only"),
        pytest.param("a=1; __Host-sso_session=s; b=2", "a=1; b=2", id="middle"),
        pytest.param("__Host-sso_pending=p; a=1", "a=1", id="first"),
        pytest.param("a=1; __Host-sso_session=s", "a=1", id="last"),
        pytest.param("__HOST-SSO_SESSION=s; a=1", "a=1", id="upper-case"),
        pytest.param("__host-sso_pending=p; a=1", "a=1", id="lower-case"),
        pytest.param("a=1;__Host-sso_session=s;b=2", "a=1; b=2", id="no-spaces"),
        pytest.param("__Host-sso_session =s; a=1", "a=1", id="space-before-equals"),
        pytest.param("__Host-sso_session; a=1", "a=1", id="no-value"),
        pytest.param(
            "__Host-sso_session=one; __Host-sso_session=two; a=1", "a=1", id="repeated"
        ),
        pytest.param("a=1, __Host-sso_session=s; b=2", "b=2", id="comma-separated"),
        pytest.param("a=1; b=2 ,__Host-sso_pending=p", "a=1", id="comma-last"),
    ],
)
def test_strip_gateway_cookies_removes(value: str, expected: str) -> None:
    assert strip_gateway_cookies(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a=1", id="one"),
        pytest.param("a=1; b=2; c=3", id="several"),
        pytest.param("token=abc==; sig=x=y", id="equals-in-value"),
        pytest.param('quoted="a b c"', id="quoted-value"),
        pytest.param("a=1; a=2", id="same-name-twice"),
        pytest.param("__Host-sso_sessions=1", id="longer-name"),
        pytest.param("sso_session=1", id="name-without-prefix"),
        pytest.param("__Host-other=1", id="other-host-cookie"),
        pytest.param("empty=", id="empty-value"),
        pytest.param("list=a,b,c", id="commas-in-value"),
    ],
)
def test_strip_gateway_cookies_keeps(value: str) -> None:
    assert strip_gateway_cookies(value) == value


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Connection", id="connection"),
        pytest.param("Keep-Alive", id="keep-alive"),
        pytest.param("Proxy-Authenticate", id="proxy-authenticate"),
        pytest.param("Proxy-Connection", id="proxy-connection"),
        pytest.param("Trailer", id="trailer"),
        pytest.param("transfer-encoding", id="transfer-encoding"),
        pytest.param("Upgrade", id="upgrade"),
        pytest.param("TE", id="te"),
    ],
)
def test_response_headers_drop_hop_by_hop(name: str) -> None:
    pairs = [(name, "x"), ("Content-Type", "text/html")]

    assert relayed(pairs) == [("Content-Type", "text/html")]


def test_response_headers_drop_connection_named() -> None:
    pairs = [
        ("Connection", "close, X-Internal"),
        ("x-internal", "secret"),
        ("Content-Type", "text/html"),
    ]

    assert relayed(pairs) == [("Content-Type", "text/html")]


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("__Host-sso_session=forged; Path=/; Secure", id="session"),
        pytest.param("__Host-sso_pending=forged; Path=/; Secure", id="pending"),
        pytest.param("__host-SSO_SESSION=forged; Path=/", id="other-case"),
        pytest.param("  __Host-sso_session=forged", id="leading-spaces"),
    ],
)
def test_response_headers_drop_gateway_set_cookie(cookie: str) -> None:
    pairs = [("Set-Cookie", "a=1"), ("Set-Cookie", cookie), ("Set-Cookie", "b=2")]

    assert relayed(pairs) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_response_headers_keep_set_cookie_lines() -> None:
    pairs = [
        ("Set-Cookie", "a=1; Path=/"),
        ("Content-Type", "text/html"),
        ("Set-Cookie", "b=2; Path=/; HttpOnly"),
        ("Set-Cookie", "c=3"),
    ]

    assert relayed(pairs) == pairs


def test_response_headers_keep_ordinary() -> None:
    pairs = [
        ("Content-Type", "text/html"),
        ("Content-Length", "12"),
        ("Content-Encoding", "gzip"),
        ("Location", "https://evil.example/x"),
        ("Cache-Control", "private"),
    ]

    assert relayed(pairs) == pairs


# Printable ASCII covers every separator and case trick a browser could send.
header_names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    min_size=1,
    max_size=30,
)
reserved_names = st.sampled_from(
    [
        "X-Medimo-Account",
        "x_ysis_user",
        "X-Gateway-Signature",
        "X-Forwarded-For",
        "Forwarded",
        "Remote-User",
        "X-Request-Id",
        "Connection",
    ]
)
header_values = st.text(max_size=30)


@given(
    st.lists(
        st.tuples(st.one_of(header_names, reserved_names), header_values),
        max_size=20,
    )
)
def test_request_headers_never_reserved(pairs: Pairs) -> None:
    for name in request_headers(headers(pairs)):
        assert not is_reserved(name), name
        assert "_" not in name, name


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=30), header_values),
        max_size=20,
    )
)
def test_request_headers_never_reserved_unicode(pairs: Pairs) -> None:
    for name in request_headers(headers(pairs)):
        assert not is_reserved(name), name
        assert "_" not in name, name
