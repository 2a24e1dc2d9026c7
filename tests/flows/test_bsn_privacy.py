"""A run full of BSNs leaves none behind outside the client lookup call.

The run launches with valid, unknown, malformed and repeated BSNs through
every flow: linked, self-link, confirm, notices, POST launch, proxied pages
and logout. The tests then search everything the run produced. That is every
log record with its fields, every response line, header and body, every
cookie value and decoded payload, every upstream request except the client
lookup, and the SQL and Redis contents.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from dataclasses import dataclass, field

import aiohttp
import pytest
import redis
from itsdangerous.encoding import base64_decode

from tests.support.harness import GatewayHarness, form_fields

#: Passes the elfproef and finds the demo upstream's client c-1003.
KNOWN_BSN = "123456782"
#: Passes the elfproef, but no demo client has it.
UNKNOWN_BSN = "111222333"
#: Fails the elfproef.
MALFORMED_BSN = "123456789"
#: One digit too many.
LONG_BSN = "1234567820"

BSNS = (KNOWN_BSN, UNKNOWN_BSN, MALFORMED_BSN, LONG_BSN)

CLIENT_LOOKUP = "/gateway-api/v1/clients?"


@dataclass
class Capture:
    """Everything the run's browsers saw, as text."""

    texts: list[str] = field(default_factory=list)

    async def send(
        self, client: aiohttp.ClientSession, method: str, path: str, **kwargs: object
    ) -> aiohttp.ClientResponse:
        response = await client.request(method, path, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
        body = await response.read()
        self.texts.append(f"{response.status} {response.reason}")
        self.texts.extend(f"{name}: {value}" for name, value in response.headers.items())
        self.texts.append(body.decode("utf-8", "replace"))
        return response

    async def follow(self, client: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> str:
        """Fetch the page a 303 leads to and return its body."""
        assert response.status == 303, response.status
        page = await self.send(client, "GET", response.headers["Location"])
        return (await page.read()).decode()

    def add_cookies(self, client: aiohttp.ClientSession) -> None:
        for cookie in client.cookie_jar:
            self.texts.append(cookie.value)
            self.texts.append(decode_cookie(cookie.value))


def decode_cookie(value: str) -> str:
    """Return the JSON inside an itsdangerous value, decompressed if needed."""
    payload = value.rsplit(".", 1)[0]
    compressed = payload.startswith(".")
    data = base64_decode(payload.lstrip("."))
    return (zlib.decompress(data) if compressed else data).decode("utf-8", "replace")


def log_texts(records: list[logging.LogRecord]) -> list[str]:
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.extend(f"{key}={value!r}" for key, value in vars(record).items())
    return texts


def storage_texts(gateway: GatewayHarness) -> list[str]:
    database = sqlite3.connect(gateway.folder / "gateway.db")
    try:
        tables = [name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [repr(row) for table in tables for row in database.execute(f'SELECT * FROM "{table}"')]
    finally:
        database.close()
    store = redis.Redis.from_url(gateway.redis_url)
    try:
        for key in store.scan_iter():
            rows.append(repr(key))
            if store.type(key) == b"string":
                rows.append(repr(store.get(key)))
    finally:
        store.close()
    return rows


async def run_with_bsns(gateway: GatewayHarness, capture: Capture) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    origin = {"Origin": gateway.base_url}

    # Linked launches: known BSN, unknown BSN, BSN behind an unknown clientId,
    # several matches, a POST launch, then a proxied page and logout.
    jan = gateway.client("noord")
    for params in (
        {"bsn": KNOWN_BSN},
        {"bsn": UNKNOWN_BSN},
        {"clientId": "onbekend", "bsn": KNOWN_BSN},
        {"clientId": "ysis-client-dubbel", "bsn": KNOWN_BSN},
        {"clientId": "ysis-client-2", "bsn": UNKNOWN_BSN, "view": "toedienen"},
    ):
        response = await capture.send(jan, "GET", "/sso/ysis/noord", params={"userId": "ysis-jan", **params})
        await capture.follow(jan, response)
        capture.add_cookies(jan)
    posted = await capture.send(jan, "POST", "/sso/ysis/noord", data={"userId": "ysis-jan", "bsn": KNOWN_BSN})
    await capture.follow(jan, posted)
    await capture.send(jan, "GET", "/whoami")
    capture.add_cookies(jan)
    await capture.send(jan, "POST", "/sso/logout", headers=origin)

    # Refused launches: malformed, overlong and repeated BSNs, and a BSN on
    # a launch without a certificate.
    for query in (
        f"userId=ysis-jan&bsn={MALFORMED_BSN}",
        f"userId=ysis-jan&bsn={LONG_BSN}",
        f"userId=ysis-jan&bsn={KNOWN_BSN}&bsn={UNKNOWN_BSN}",
    ):
        refused = await capture.send(jan, "GET", f"/sso/ysis/noord?{query}")
        assert refused.status == 400
    stranger = gateway.client()
    refused = await capture.send(stranger, "GET", f"/sso/ysis/noord?userId=ysis-jan&bsn={KNOWN_BSN}")
    assert refused.status == 403

    # Self-link with a BSN: a wrong password first, then the right one.
    piet = gateway.client("noord")
    response = await capture.send(piet, "GET", "/sso/ysis/noord", params={"userId": "ysis-piet", "bsn": KNOWN_BSN})
    fields = form_fields(await capture.follow(piet, response))
    capture.add_cookies(piet)
    path = response.headers["Location"]
    await capture.send(piet, "POST", path, data={**fields, "username": "piet", "password": "fout"}, headers=origin)
    linked = await capture.send(piet, "POST", path, data={**fields, "username": "piet", "password": "demo-wachtwoord"}, headers=origin)
    await capture.follow(piet, linked)
    capture.add_cookies(piet)

    # Confirm form with a BSN.
    anna = gateway.client("zuid")
    response = await capture.send(anna, "GET", "/sso/ysis/zuid", params={"userId": "ysis-anna", "bsn": KNOWN_BSN})
    fields = form_fields(await capture.follow(anna, response))
    capture.add_cookies(anna)
    path = response.headers["Location"]
    confirmed = await capture.send(anna, "POST", path, data={**fields, "password": "demo-wachtwoord"}, headers=origin)
    await capture.follow(anna, confirmed)
    capture.add_cookies(anna)


@pytest.fixture
async def capture(gateway: GatewayHarness, caplog: pytest.LogCaptureFixture) -> Capture:
    caplog.set_level(logging.DEBUG)
    found = Capture()
    await run_with_bsns(gateway, found)
    return found


def leaked(texts: list[str]) -> list[str]:
    return [text[:200] for text in texts if any(bsn in text for bsn in BSNS)]


async def test_bsn_reaches_client_lookup(gateway: GatewayHarness, capture: Capture) -> None:
    lookups = [request.path_qs for request in gateway.upstream_received if request.path_qs.startswith(CLIENT_LOOKUP)]

    assert f"{CLIENT_LOOKUP}bsn={KNOWN_BSN}" in lookups
    assert f"{CLIENT_LOOKUP}bsn={UNKNOWN_BSN}" in lookups
    assert not any(MALFORMED_BSN in path or LONG_BSN in path for path in lookups)


async def test_bsn_absent_from_responses(capture: Capture) -> None:
    assert len(capture.texts) > 100
    assert leaked(capture.texts) == []


async def test_bsn_absent_from_logs(capture: Capture, caplog: pytest.LogCaptureFixture) -> None:
    # The run happened in the fixture, so its records belong to the setup phase.
    texts = log_texts(caplog.get_records("setup"))

    assert any("request" == text for text in texts)
    assert leaked(texts) == []


async def test_bsn_absent_upstream_elsewhere(gateway: GatewayHarness, capture: Capture) -> None:
    others = [request for request in gateway.upstream_received if not request.path_qs.startswith(CLIENT_LOOKUP)]
    texts = [request.path_qs for request in others]
    texts += [f"{name}: {value}" for request in others for name, value in request.headers]
    texts += [request.body.decode("utf-8", "replace") for request in others]

    assert any(path.startswith("/whoami") for path in texts)
    assert leaked(texts) == []


async def test_bsn_absent_from_storage(gateway: GatewayHarness, capture: Capture) -> None:
    texts = storage_texts(gateway)

    assert any("ysis-piet" in text for text in texts)
    assert leaked(texts) == []
