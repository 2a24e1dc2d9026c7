"""Tests for signing and verifying the gateway's identity headers."""

from __future__ import annotations

import re

import pytest
from multidict import CIMultiDict

from gateway.signature import (
    IDENTITY_HEADERS,
    MAX_CLOCK_SKEW,
    SIGNATURE_HEADER,
    sign_request,
    verify_request,
)

KEY = b"current-key"
NOW = 1_700_000_000
METHOD = "GET"
TARGET = "/clients/c-1001/status?tab=medicatie"
IDENTITY = {
    "X-Medimo-Account": "medimo-jan",
    "X-Medimo-Tenant": "zorggroep-demo",
    "X-Ysis-User": "ysis-42",
    "X-Medimo-Client": "c-1001",
    "X-Medimo-Auth-Method": "mtls",
    "X-Request-Id": "req-0001",
}


def fixed_clock() -> float:
    return float(NOW)


def sign_headers(
    identity: dict[str, str] = IDENTITY,
    *,
    key: bytes = KEY,
    method: str = METHOD,
    target: str = TARGET,
    timestamp: int = NOW,
) -> CIMultiDict[str]:
    """Return received headers as aiohttp would present them."""
    signature = sign_request(key, method, target, identity, timestamp=timestamp)
    return CIMultiDict({**identity, SIGNATURE_HEADER: signature})


def verify(
    headers: CIMultiDict[str],
    *,
    keys: tuple[bytes, ...] = (KEY,),
    method: str = METHOD,
    target: str = TARGET,
) -> bool:
    return verify_request(keys, method, target, headers, now=fixed_clock)


def headers_with_signature(value: str) -> CIMultiDict[str]:
    return CIMultiDict({**IDENTITY, SIGNATURE_HEADER: value})


def test_signature_format() -> None:
    value = sign_request(KEY, METHOD, TARGET, IDENTITY, timestamp=NOW)

    assert re.fullmatch(rf"t={NOW},v1=[0-9a-f]{{64}}", value)


def test_round_trip() -> None:
    assert verify(sign_headers())


def test_round_trip_default_clock() -> None:
    signature = sign_request(KEY, METHOD, TARGET, IDENTITY)
    headers = CIMultiDict({**IDENTITY, SIGNATURE_HEADER: signature})

    assert verify_request([KEY], METHOD, TARGET, headers)


def test_round_trip_plain_dict() -> None:
    headers = dict(sign_headers())

    assert verify_request([KEY], METHOD, TARGET, headers, now=fixed_clock)


def test_round_trip_no_identity() -> None:
    assert verify(sign_headers({}))


def test_absent_header_signed_empty() -> None:
    identity = {"X-Medimo-Account": "medimo-jan"}

    assert verify(sign_headers(identity))


def test_header_names_case_insensitive() -> None:
    headers = CIMultiDict(
        (name.lower(), value) for name, value in sign_headers().items()
    )

    assert verify(headers)


def test_method_case_insensitive() -> None:
    assert verify(sign_headers(method="get"), method="GET")


@pytest.mark.parametrize("index", [0, 1, 2], ids=["first", "middle", "last"])
def test_each_key_in_list_verifies(index: int) -> None:
    keys = (b"key-a", b"key-b", b"key-c")

    assert verify(sign_headers(key=keys[index]), keys=keys)


def test_wrong_key_rejected() -> None:
    assert not verify(sign_headers(key=b"other-key"))


def test_empty_key_list_rejected() -> None:
    assert not verify(sign_headers(), keys=())


@pytest.mark.parametrize(
    "method", ["POST", "HEAD", "DELETE"], ids=["post", "head", "delete"]
)
def test_altered_method_rejected(method: str) -> None:
    assert not verify(sign_headers(), method=method)


@pytest.mark.parametrize(
    "target",
    [
        "/clients/c-1002/status?tab=medicatie",
        "/clients/c-1001/status",
        "/clients/c-1001/status?tab=medicatie&x=1",
        "/clients/c-1001/status?tab=Medicatie",
        "/clients/c-1001/status/?tab=medicatie",
        "/clients/c%2D1001/status?tab=medicatie",
    ],
    ids=["path", "query-dropped", "query-added", "query-case", "slash", "encoding"],
)
def test_altered_target_rejected(target: str) -> None:
    assert not verify(sign_headers(), target=target)


@pytest.mark.parametrize("name", IDENTITY_HEADERS)
def test_altered_identity_header_rejected(name: str) -> None:
    headers = sign_headers()
    headers[name] = headers[name] + "x"

    assert not verify(headers)


@pytest.mark.parametrize("name", IDENTITY_HEADERS)
def test_removed_identity_header_rejected(name: str) -> None:
    headers = sign_headers()
    del headers[name]

    assert not verify(headers)


@pytest.mark.parametrize("name", IDENTITY_HEADERS)
def test_added_identity_header_rejected(name: str) -> None:
    identity = {key: value for key, value in IDENTITY.items() if key != name}
    headers = sign_headers(identity)
    headers[name] = "added"

    assert not verify(headers)


def test_swapped_header_values_rejected() -> None:
    headers = sign_headers()
    headers["X-Medimo-Account"], headers["X-Ysis-User"] = (
        headers["X-Ysis-User"],
        headers["X-Medimo-Account"],
    )

    assert not verify(headers)


@pytest.mark.parametrize(
    "offset",
    [-MAX_CLOCK_SKEW, 0, MAX_CLOCK_SKEW],
    ids=["oldest", "now", "newest"],
)
def test_timestamp_within_skew_accepted(offset: int) -> None:
    assert verify(sign_headers(timestamp=NOW + offset))


@pytest.mark.parametrize(
    "offset",
    [-MAX_CLOCK_SKEW - 1, MAX_CLOCK_SKEW + 1, -3600, 3600],
    ids=["stale-61s", "future-61s", "stale-1h", "future-1h"],
)
def test_timestamp_beyond_skew_rejected(offset: int) -> None:
    assert not verify(sign_headers(timestamp=NOW + offset))


def test_custom_max_skew() -> None:
    headers = sign_headers(timestamp=NOW - 10)

    assert not verify_request(
        [KEY], METHOD, TARGET, headers, now=fixed_clock, max_skew=5
    )


def _extract_digest(headers: CIMultiDict[str]) -> str:
    return headers[SIGNATURE_HEADER].partition(",v1=")[2]


DIGEST = _extract_digest(sign_headers())


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"t=abc,v1={DIGEST}",
        f"t=,v1={DIGEST}",
        f"t=-{NOW},v1={DIGEST}",
        f"t=+{NOW},v1={DIGEST}",
        f"t={NOW}.0,v1={DIGEST}",
        f"t=\u0661\u0662,v1={DIGEST}",
        f"t={NOW}",
        f"t={NOW},v1=",
        f"v1={DIGEST}",
        f"t={NOW},t={NOW},v1={DIGEST}",
        f"t={NOW},v1={DIGEST},v1={DIGEST}",
        f"t={NOW},v1={DIGEST[:-2]}",
        f"t={NOW},v1={DIGEST}00",
        f"t={NOW};v1={DIGEST}",
        f"t={NOW},v1={DIGEST},",
        f"t={NOW},v1",
        DIGEST,
    ],
    ids=[
        "empty",
        "t-abc",
        "t-empty",
        "t-negative",
        "t-plus-sign",
        "t-decimal",
        "t-arabic-digits",
        "v1-missing",
        "v1-empty",
        "t-missing",
        "t-duplicate",
        "v1-duplicate",
        "digest-short",
        "digest-long",
        "semicolon",
        "trailing-comma",
        "field-without-equals",
        "bare-digest",
    ],
)
def test_malformed_signature_rejected(value: str) -> None:
    assert not verify(headers_with_signature(value))


def test_missing_signature_rejected() -> None:
    headers = CIMultiDict(IDENTITY)

    assert not verify(headers)


@pytest.mark.parametrize("name", IDENTITY_HEADERS)
def test_repeated_identity_header_rejected(name: str) -> None:
    headers = sign_headers()
    headers.add(name, headers[name])

    assert not verify(headers)


def test_repeated_signature_header_rejected() -> None:
    headers = sign_headers()
    headers.add(SIGNATURE_HEADER, headers[SIGNATURE_HEADER])

    assert not verify(headers)


def test_repeated_header_other_case_rejected() -> None:
    headers = sign_headers()
    headers.add("x-medimo-account", "medimo-anna")

    assert not verify(headers)


def test_unrelated_header_ignored() -> None:
    headers = sign_headers()
    headers.add("X-Forwarded-For", "127.0.0.1")
    headers.add("X-Forwarded-For", "::1")

    assert verify(headers)


def test_huge_timestamp_rejected() -> None:
    assert not verify(headers_with_signature(f"t={'9' * 5000},v1={DIGEST}"))


def test_non_ascii_digest_rejected() -> None:
    # aiohttp decodes header bytes as UTF-8, so a client can send this value.
    assert not verify(headers_with_signature(f"t={NOW},v1={'é' * 64}"))
