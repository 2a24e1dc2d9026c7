"""Session cookies against a real gateway: expiry, tampering, keys, binding."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import pytest

from gateway.config.loader import load_certificates
from gateway.session.codec import CookieCodec
from gateway.session.sessions import SessionCodec
from tests.support.harness import GatewayHarness, launch, whoami

SESSION = "__Host-sso_session"
MakeGateway = Callable[..., Awaitable[GatewayHarness]]


def session_cookie(client: aiohttp.ClientSession) -> str:
    return next(cookie.value for cookie in client.cookie_jar if cookie.key == SESSION)


async def status_with(gateway: GatewayHarness, value: str, tenant: str = "noord") -> int:
    client = gateway.client(tenant)
    client.cookie_jar.update_cookies({SESSION: value})
    async with client.get("/whoami") as response:
        return response.status


async def logged_in(gateway: GatewayHarness) -> aiohttp.ClientSession:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    response = await launch(client, "noord", userId="ysis-jan")
    assert response.status == 303
    return client


def forged(gateway: GatewayHarness, key: bytes, **changes: object) -> str:
    """Sign a session for ysis-jan with ``key``, as the gateway would."""
    codec = SessionCodec(CookieCodec([key], "session"))
    fingerprint = load_certificates(gateway.folder / "noord-client.pem")[0].fingerprint
    now_ms = int(gateway.clock() * 1000)
    session = codec.mint(
        tenant="noord", account="medimo-jan", ysis_user="ysis-jan", client_id=None,
        fingerprint=fingerprint, now_ms=now_ms,
    )
    return codec.encode(replace(session, **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: v[:-3] + ("AAA" if not v.endswith("AAA") else "BBB"), id="signature"),
        pytest.param(lambda v: "x" + v[1:], id="payload"),
        pytest.param(lambda v: v.split(".")[0], id="no-signature"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: "a" * 5000, id="oversized"),
    ],
)
async def test_tampered_cookie_is_401(gateway: GatewayHarness, mangle: Callable[[str], str]) -> None:
    client = await logged_in(gateway)
    assert await status_with(gateway, mangle(session_cookie(client))) == 401


async def test_valid_cookie_accepted(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    assert await status_with(gateway, session_cookie(client)) == 200


async def test_idle_cookie_is_401(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    gateway.clock.advance(31 * 60)
    assert await status_with(gateway, session_cookie(client)) == 401


async def test_activity_keeps_session_until_lifetime(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    for _ in range(29):
        gateway.clock.advance(20 * 60)
        async with client.get("/whoami") as response:
            assert response.status == 200
    gateway.clock.advance(21 * 60)
    async with client.get("/whoami") as response:
        assert response.status == 401


async def test_refresh_reissues_cookie(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    before = session_cookie(client)
    gateway.clock.advance(2 * 60)

    async with client.get("/whoami") as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert any(line.startswith(SESSION) for line in response.headers.getall("Set-Cookie"))

    assert session_cookie(client) != before


async def test_no_reissue_within_refresh_interval(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    async with client.get("/whoami") as response:
        assert "Set-Cookie" not in response.headers


async def test_tenant_idle_timeout_override(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"session": {"idle_timeout": "5m"}}})
    client = await logged_in(gateway)
    gateway.clock.advance(6 * 60)
    assert await status_with(gateway, session_cookie(client)) == 401


async def test_tenant_lifetime_override(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(tenants={"noord": {"session": {"lifetime": "1h"}}})
    client = await logged_in(gateway)
    for _ in range(3):
        gateway.clock.advance(19 * 60)
        async with client.get("/whoami") as response:
            assert response.status == 200
    gateway.clock.advance(4 * 60)

    async with client.get("/whoami") as response:
        assert response.status == 401


async def test_future_timestamp_is_401(gateway: GatewayHarness) -> None:
    key = gateway.session_keys[0]
    future_ms = int(gateway.clock() * 1000) + 3600_000
    assert await status_with(gateway, forged(gateway, key)) == 200
    assert await status_with(gateway, forged(gateway, key, issued_at=future_ms, seen_at=future_ms)) == 401


async def test_retired_key_is_401(gateway: GatewayHarness) -> None:
    retired = secrets.token_urlsafe(32).encode()
    assert await status_with(gateway, forged(gateway, retired)) == 401


async def test_rotation_accepts_older_key(make_gateway: MakeGateway) -> None:
    old, new = secrets.token_urlsafe(32).encode(), secrets.token_urlsafe(32).encode()
    gateway = await make_gateway(session_keys=[new, old])
    assert await status_with(gateway, forged(gateway, old)) == 200
    client = await logged_in(gateway)
    signed_new = session_cookie(client)
    assert SessionCodec(CookieCodec([new], "session")).decode(signed_new).ysis_user == "ysis-jan"


async def test_pending_cookie_is_not_a_session(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    await launch(client, "noord", userId="ysis-piet")
    pending = next(cookie.value for cookie in client.cookie_jar if cookie.key == "__Host-sso_pending")
    assert await status_with(gateway, pending) == 401


async def test_cookie_bound_to_certificate(gateway: GatewayHarness) -> None:
    client = await logged_in(gateway)
    value = session_cookie(client)
    assert await status_with(gateway, value, tenant="zuid") == 401
    copied = gateway.client()
    copied.cookie_jar.update_cookies({SESSION: value})
    async with copied.get("/whoami") as response:
        assert response.status == 401


async def test_unbound_session_allows_other_certificate(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        tenants={"noord": {"bind_session_to_certificate": False}, "zuid": {}}
    )
    client = await logged_in(gateway)
    assert await status_with(gateway, session_cookie(client), tenant="zuid") == 200


async def test_allowlist_applies_to_sessions(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(gateway_overrides={"trusted_proxies": ["127.0.0.1/32"]})
    client = await logged_in(gateway)
    async with client.get("/whoami", headers={"X-Forwarded-For": "192.0.2.7"}) as response:
        assert response.status == 403
    assert (await whoami(client))["X-Ysis-User"] == "ysis-jan"
