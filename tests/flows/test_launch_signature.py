"""The optional launch signature: HMAC over the parameters, nonce used once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.flows.launch_signature import canonical, sign
from tests.support.harness import GatewayHarness, launch
from tests.support.services import RedisServer

MakeGateway = Callable[..., Awaitable[GatewayHarness]]
SECRET = "launch-secret-for-tests-0123456789abcdef"


async def signed_gateway(make_gateway: MakeGateway, tmp_path: Path, **options: object) -> GatewayHarness:
    secret_file = tmp_path / "launch-secret"
    secret_file.write_text(SECRET)
    tenants = {"noord": {"launch_signature": True, "launch_secret": {"file": str(secret_file)}}}
    gateway = await make_gateway(tenants=tenants, **options)
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    return gateway


def signed(params: dict[str, str], *, tenant: str = "noord", ts: float | None = None) -> dict[str, str]:
    values = {**params, "ts": str(int(ts if ts is not None else time.time())), "nonce": secrets.token_urlsafe(16)}
    return {**values, "sig": sign(SECRET.encode(), tenant, values.items())}


def test_canonical_form() -> None:
    message = canonical("noord", [("userId", "jan"), ("view", "a b/c"), ("sig", "x"), ("bsn", "1")])
    assert message == b"noord\nbsn=1&userId=jan&view=a%20b%2Fc"


def test_canonical_form_encodes_keys() -> None:
    message = canonical("noord", [("a=1&b", "2")])
    assert message == b"noord\na%3D1%26b=2"


async def test_merged_parameters_are_403(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    values = signed({"userId": "ysis-jan", "bsn": "123456782", "clientId": "ysis-client-1"})
    merged = {key: value for key, value in values.items() if key not in ("bsn", "clientId")}
    merged["bsn=123456782&clientId"] = "ysis-client-1"

    response = await launch(gateway.client("noord"), "noord", **merged)

    assert response.status == 403
    assert "__Host-sso_session" not in response.cookies or not response.cookies["__Host-sso_session"].value


async def test_valid_signature_logs_in(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    response = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan", "extra": "ignored"}))
    assert response.status == 303
    assert response.headers["Location"] == "/"


async def test_signed_post_launch(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    client = gateway.client("noord")
    async with client.post("/sso/ysis/noord", data=signed({"userId": "ysis-jan"}), allow_redirects=False) as response:
        assert response.status == 303


async def test_missing_signature_is_400(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    response = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
    assert response.status == 400


async def test_stale_timestamp_is_403(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    old = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan"}, ts=time.time() - 121))
    future = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan"}, ts=time.time() + 121))
    assert old.status == 403
    assert future.status == 403


async def test_reused_nonce_is_403(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    params = signed({"userId": "ysis-jan"})
    first = await launch(gateway.client("noord"), "noord", **params)
    second = await launch(gateway.client("noord"), "noord", **params)
    assert first.status == 303
    assert second.status == 403


@pytest.mark.parametrize("name", ["userId", "view", "extra", "ts", "nonce"])
async def test_changed_parameter_is_403(make_gateway: MakeGateway, tmp_path: Path, name: str) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    params = signed({"userId": "ysis-jan", "view": "werklijst", "extra": "1"})
    params[name] = {"userId": "ysis-piet", "view": "deelronde", "extra": "2", "ts": str(int(params["ts"]) - 1), "nonce": secrets.token_urlsafe(16)}[name]
    response = await launch(gateway.client("noord"), "noord", **params)
    assert response.status == 403


async def test_added_parameter_is_403(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    response = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan"}), clientId="ysis-client-1")
    assert response.status == 403


async def test_other_tenant_signature_is_403(make_gateway: MakeGateway, tmp_path: Path) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path)
    response = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan"}, tenant="zuid"))
    assert response.status == 403


async def test_redis_down_is_503(make_gateway: MakeGateway, tmp_path: Path, killable_redis: RedisServer) -> None:
    gateway = await signed_gateway(make_gateway, tmp_path, redis_url=killable_redis.url)
    killable_redis.stop()
    response = await launch(gateway.client("noord"), "noord", **signed({"userId": "ysis-jan"}))
    assert response.status == 503
    assert "Set-Cookie" not in response.headers or all(
        "Max-Age=0" in line for line in response.headers.getall("Set-Cookie")
    )


async def test_signature_off_by_default(gateway: GatewayHarness) -> None:
    assert gateway.config is not None
    assert gateway.config.tenants["noord"].config.launch_signature is False
