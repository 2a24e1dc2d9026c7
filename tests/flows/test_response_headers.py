"""Headers every response of a run carries: HSTS, no-store, no referrer.

A scripted run visits each kind of answer the gateway gives (launch, forms,
notices, logout, error pages, proxied pages with and without a re-issued
cookie) and the checks then hold for every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gateway.middleware.pipeline import HSTS
from tests.support.harness import GatewayHarness, form_fields


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    headers: CIMultiDictProxy[str]

    @property
    def label(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


async def fetch(client: aiohttp.ClientSession, seen: list[Seen], method: str, path: str, **kwargs: object) -> aiohttp.ClientResponse:
    response = await client.request(method, path, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
    await response.read()
    seen.append(Seen(method, path, response.status, response.headers))
    return response


@pytest.fixture
async def seen(gateway: GatewayHarness) -> list[Seen]:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    await gateway.add_link("zuid", "ysis-anna", "medimo-anna")
    origin = {"Origin": gateway.base_url}
    found: list[Seen] = []

    jan = gateway.client("noord")
    await fetch(jan, found, "GET", "/sso/ysis/noord?userId=ysis-jan&clientId=onbekend")
    await fetch(jan, found, "GET", "/sso/melding/onbekende-client")
    await fetch(jan, found, "GET", "/whoami")
    gateway.clock.advance(120)
    await fetch(jan, found, "GET", "/whoami")
    await fetch(jan, found, "GET", "/sso/ysis/noord?userId=ysis-jan")
    await fetch(jan, found, "GET", "/sso/nergens")
    await fetch(jan, found, "GET", "/sso/logout")
    await fetch(jan, found, "POST", "/sso/logout", headers=origin)
    await fetch(jan, found, "GET", "/sso/afgemeld")
    await fetch(jan, found, "GET", "/whoami")
    await fetch(jan, found, "GET", "/sso/ysis/noord?userId=ysis-jan&userId=x")

    piet = gateway.client("noord")
    await fetch(piet, found, "GET", "/sso/ysis/noord?userId=ysis-piet")
    form = await fetch(piet, found, "GET", "/sso/ysis/noord/link")
    fields = form_fields(await form.text())
    await fetch(piet, found, "POST", "/sso/ysis/noord/link", data={**fields, "username": "piet", "password": "fout"}, headers=origin)
    await fetch(piet, found, "POST", "/sso/ysis/noord/link", data={**fields, "username": "piet", "password": "demo-wachtwoord"}, headers=origin)

    anna = gateway.client("zuid")
    await fetch(anna, found, "GET", "/sso/ysis/zuid?userId=ysis-anna")
    await fetch(anna, found, "GET", "/sso/ysis/zuid/confirm")

    stranger = gateway.client()
    await fetch(stranger, found, "GET", "/sso/ysis/noord?userId=ysis-jan")
    return found


def test_run_covers_every_kind(seen: list[Seen]) -> None:
    statuses = {entry.status for entry in seen}
    assert {200, 303, 400, 401, 403, 404, 405} <= statuses
    assert any("Set-Cookie" in entry.headers and entry.path == "/whoami" for entry in seen)


def test_every_response_has_hsts(seen: list[Seen]) -> None:
    missing = [entry.label for entry in seen if entry.headers.getall("Strict-Transport-Security", []) != [HSTS]]
    assert missing == []


def test_gateway_pages_not_stored(seen: list[Seen]) -> None:
    missing = [entry.label for entry in seen if entry.path.startswith("/sso/") and entry.headers.get("Cache-Control") != "no-store"]
    assert missing == []


def test_cookie_responses_not_stored(seen: list[Seen]) -> None:
    missing = [entry.label for entry in seen if "Set-Cookie" in entry.headers and entry.headers.get("Cache-Control") != "no-store"]
    assert missing == []


def test_launch_answers_send_no_referrer(seen: list[Seen]) -> None:
    launches = [entry for entry in seen if entry.path.startswith("/sso/ysis/") and "?" in entry.path]
    missing = [entry.label for entry in launches if entry.headers.get("Referrer-Policy") != "no-referrer"]
    assert len(launches) >= 5
    assert missing == []


def test_proxied_responses_vary_on_cookie(seen: list[Seen]) -> None:
    proxied = [entry for entry in seen if entry.path == "/whoami" and entry.status == 200]
    assert len(proxied) == 2
    assert all("Cookie" in entry.headers.getall("Vary", []) for entry in proxied)


def test_every_response_has_request_id(seen: list[Seen]) -> None:
    missing = [entry.label for entry in seen if len(entry.headers.get("X-Request-Id", "")) != 24]
    assert missing == []
