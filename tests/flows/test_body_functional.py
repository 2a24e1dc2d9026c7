"""Form-encoded bodies of the POST launch and the forms: UTF-8 only, limited."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.harness import GatewayHarness, form_fields, launch

LAUNCH = "/sso/ysis/noord"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("application/x-www-form-urlencoded; charset=x-nonexist", b"userId=ysis-jan", id="unknown-charset"),
        pytest.param("application/x-www-form-urlencoded; charset=rot13", b"hfreVq=lfvf-wna", id="rot13"),
        pytest.param("application/x-www-form-urlencoded; charset=utf-7", b"userId=ysis+AC0-jan", id="utf-7"),
        pytest.param("application/x-www-form-urlencoded", b"userId=ysis-jan&x=\xff", id="raw-non-utf8"),
        pytest.param("application/x-www-form-urlencoded", b"userId=ysis-jan&x=%ff", id="escaped-non-utf8"),
        pytest.param("multipart/form-data; boundary=b", b"--b--\r\n", id="multipart"),
        pytest.param("application/json", b'{"userId": "ysis-jan"}', id="json"),
    ],
)
async def test_post_launch_body_is_400(gateway: GatewayHarness, content_type: str, body: bytes) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")

    async with client.post(LAUNCH, data=body, headers={"Content-Type": content_type}, allow_redirects=False) as response:
        assert response.status == 400
        assert "Ongeldig verzoek" in await response.text()
    assert not any(cookie.key == "__Host-sso_session" and cookie.value for cookie in client.cookie_jar)


async def test_post_launch_utf8_charset_accepted(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}

    async with client.post(LAUNCH, data=b"userId=ysis-jan", headers=headers, allow_redirects=False) as response:
        assert response.status == 303


async def chunks(size: int) -> AsyncIterator[bytes]:
    yield b"userId=ysis-jan&padding="
    for _ in range(size // 1024):
        yield b"a" * 1024


async def test_chunked_launch_body_over_limit_is_400(gateway: GatewayHarness) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    client = gateway.client("noord")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    async with client.post(LAUNCH, data=chunks(64 * 1024), headers=headers, allow_redirects=False) as response:
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 400
        assert "te groot" in await response.text()


async def test_chunked_form_body_over_limit_is_400(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    first = await launch(client, "noord", userId="ysis-piet")
    path = first.headers["Location"]
    async with client.get(path) as page:
        fields = form_fields(await page.text())

    async def body() -> AsyncIterator[bytes]:
        yield f"csrf_token={fields['csrf_token']}&username=piet&password=demo-wachtwoord&x=".encode()
        for _ in range(64):
            yield b"a" * 1024

    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": gateway.base_url}
    async with client.post(path, data=body(), headers=headers, allow_redirects=False) as response:
        assert response.status == 400
    assert await gateway.links("noord") == {}


async def test_form_post_other_charset_is_400(gateway: GatewayHarness) -> None:
    client = gateway.client("noord")
    first = await launch(client, "noord", userId="ysis-piet")
    path = first.headers["Location"]
    async with client.get(path) as page:
        fields = form_fields(await page.text())
    body = f"csrf_token={fields['csrf_token']}&username=piet&password=demo-wachtwoord".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1", "Origin": gateway.base_url}

    async with client.post(path, data=body, headers=headers, allow_redirects=False) as response:
        assert response.status == 400
    assert await gateway.links("noord") == {}
