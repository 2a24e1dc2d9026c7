"""Tests for the demo upstream that replaces Medimo in demos and tests."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpClient
from yarl import URL

from gateway.demo import upstream
from gateway.demo.upstream import GZIP_TEXT, create_app, stream_chunk
from gateway.signature import IDENTITY_HEADERS, SIGNATURE_HEADER, sign_request

Client = TestClient[web.Request, web.Application]

TOKEN = "test-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = b"test-signing-key"
OLD_KEY = b"old-signing-key"
API = "/gateway-api/v1"

CLIENT_VIEW_PATHS = [
    ("/clients/c-1001/status", "Cliëntstatus"),
    ("/clients/c-1001/medicatiestatus", "Medicatiestatus"),
    ("/clients/c-1001/bestellen", "Bestellen"),
    ("/clients/c-1001/toedienen", "Toedienen"),
    ("/clients/c-1001/dispense", "Uitgifte"),
]

GENERAL_VIEW_PATHS = [
    ("/bestelronde", "Bestelronde"),
    ("/deelronde", "Deelronde"),
    ("/werklijst", "Werklijst"),
    ("/werklijst/afdeling", "Werklijst afdeling"),
    ("/aanvragen", "Aanvraagmenu"),
    ("/tdl", "TDL-menu"),
    ("/tdr", "TDR-menu"),
    ("/app", "Medimo-app"),
]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(create_app(api_token=TOKEN))


@pytest.fixture
async def signed_client(aiohttp_client: AiohttpClient) -> Client:
    app = create_app(api_token=TOKEN, signing_keys=[KEY, OLD_KEY])
    return await aiohttp_client(app)


def sign_headers(
    target: str,
    identity: dict[str, str],
    *,
    key: bytes = KEY,
    method: str = "GET",
    timestamp: int | None = None,
) -> dict[str, str]:
    signature = sign_request(key, method, target, identity, timestamp=timestamp)
    return {**identity, SIGNATURE_HEADER: signature}


async def post_json(client: Client, path: str, body: Any) -> tuple[int, Any]:
    response = await client.post(API + path, json=body, headers=AUTH)
    return response.status, await response.json()


async def get_json(client: Client, path: str, params: Any = None) -> tuple[int, Any]:
    response = await client.get(API + path, params=params, headers=AUTH)
    return response.status, await response.json()


# create_app and main


def test_create_app_empty_token_raises() -> None:
    with pytest.raises(ValueError, match="api_token"):
        create_app(api_token="")


def test_create_app_empty_key_raises() -> None:
    with pytest.raises(ValueError, match="signing keys"):
        create_app(api_token=TOKEN, signing_keys=[KEY, b""])


def test_module_has_no_app_or_session() -> None:
    created = [
        value
        for value in vars(upstream).values()
        if isinstance(value, (web.Application, ClientSession))
    ]

    assert created == []


def test_main_reads_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text(f"  {TOKEN}\n", encoding="utf-8")
    key_files = [tmp_path / "new.txt", tmp_path / "old.txt"]
    key_files[0].write_text(KEY.decode() + "\n", encoding="utf-8")
    key_files[1].write_text(OLD_KEY.decode(), encoding="utf-8")
    calls: list[tuple[web.Application, dict[str, Any]]] = []
    monkeypatch.setattr(web, "run_app", lambda app, **kw: calls.append((app, kw)))

    upstream.main(
        ["--host", "127.0.0.1", "--port", "18080", "--api-token-file", str(token_file)]
        + ["--signing-key-file", str(key_files[0])]
        + ["--signing-key-file", str(key_files[1])]
    )

    app, options = calls[0]
    assert options == {"host": "127.0.0.1", "port": 18080}
    assert app[upstream.SIGNING_KEYS] == (KEY, OLD_KEY)
    assert app[upstream.API_APP][upstream.API_TOKEN] == TOKEN.encode()


@pytest.mark.parametrize("content", [None, " \n"], ids=["missing-file", "blank-file"])
def test_main_bad_token_file_exits(
    tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token.txt"
    if content is not None:
        token_file.write_text(content, encoding="utf-8")

    with pytest.raises(SystemExit) as exit_info:
        upstream.main(["--api-token-file", str(token_file)])

    assert exit_info.value.code == 2
    assert "cannot read secret" in capsys.readouterr().err


# API: bearer token


async def test_health_ok(client: Client) -> None:
    status, body = await get_json(client, "/health")

    assert status == 200
    assert body == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"{TOKEN}"},
        {"Authorization": "Bearer tëst"},
    ],
    ids=["missing", "wrong", "basic", "empty", "longer", "no-scheme", "non-ascii"],
)
async def test_api_bad_token_401(client: Client, headers: dict[str, str]) -> None:
    response = await client.get(API + "/health", headers=headers)

    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}


async def test_api_repeated_authorization_401(client: Client) -> None:
    headers = CIMultiDict([("Authorization", AUTH["Authorization"])] * 2)

    response = await client.get(API + "/health", headers=headers)

    assert response.status == 401


async def test_api_scheme_case_insensitive(client: Client) -> None:
    response = await client.get(
        API + "/health", headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status == 200


async def test_api_unknown_path_needs_token(client: Client) -> None:
    response = await client.get(API + "/nope")

    assert response.status == 401


async def test_api_unknown_path_404_json(client: Client) -> None:
    status, body = await get_json(client, "/nope")

    assert status == 404
    assert body == {"error": "not found"}


async def test_api_wrong_method_405_json(client: Client) -> None:
    response = await client.delete(API + "/health", headers=AUTH)

    assert response.status == 405
    assert await response.json() == {"error": "method not allowed"}
    assert "GET" in response.headers["Allow"]


async def test_api_body_too_large_413(client: Client) -> None:
    body = io.BytesIO(b'{"username": "' + b"x" * (2 * 1024 * 1024) + b'"}')

    response = await client.post(API + "/accounts/verify", data=body, headers=AUTH)

    assert response.status == 413
    assert "error" in await response.json()


async def test_api_ignores_identity_headers(signed_client: Client) -> None:
    headers = {**AUTH, "X-Medimo-Account": "medimo-jan"}

    response = await signed_client.get(API + "/health", headers=headers)

    assert response.status == 200


# API: accounts


@pytest.mark.parametrize(
    ("username", "account_id", "display_name"),
    [
        ("jan", "medimo-jan", "Jan Jansen"),
        ("piet", "medimo-piet", "Piet Pieters"),
        ("anna", "medimo-anna", "Anna de Vries"),
        ("  JAN ", "medimo-jan", "Jan Jansen"),
        ("Anna", "medimo-anna", "Anna de Vries"),
    ],
    ids=["jan", "piet", "anna", "padded-upper", "capitalised"],
)
async def test_verify_ok(
    client: Client, username: str, account_id: str, display_name: str
) -> None:
    body = {"username": username, "password": "demo-wachtwoord"}

    status, answer = await post_json(client, "/accounts/verify", body)

    assert status == 200
    assert answer == {"account_id": account_id, "display_name": display_name}


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("jan", "fout"),
        ("jan", "DEMO-WACHTWOORD"),
        ("jan", " demo-wachtwoord"),
        ("jan", ""),
        ("klaas", "demo-wachtwoord"),
        ("medimo-jan", "demo-wachtwoord"),
        ("", "demo-wachtwoord"),
        ("jan", "\ud800"),
    ],
    ids=[
        "wrong-password",
        "password-case",
        "password-padded",
        "empty-password",
        "unknown-user",
        "account-id-as-username",
        "empty-username",
        "lone-surrogate",
    ],
)
async def test_verify_bad_credentials_401(
    client: Client, username: str, password: str
) -> None:
    body = {"username": username, "password": password}

    status, answer = await post_json(client, "/accounts/verify", body)

    assert status == 401
    assert answer == {"error": "invalid credentials"}


@pytest.mark.parametrize(
    "raw_body",
    [
        b"",
        b"not json",
        b"[]",
        b'"jan"',
        b"null",
        b'{"username": "jan"}',
        b'{"password": "demo-wachtwoord"}',
        b'{"username": 1, "password": "demo-wachtwoord"}',
        b'{"username": "jan", "password": null}',
        b'{"username": ["jan"], "password": "demo-wachtwoord"}',
        b"\xff\xfe\xfa",
        b"[" * 100_000,
    ],
    ids=[
        "empty",
        "not-json",
        "array",
        "string",
        "null",
        "no-password",
        "no-username",
        "number-username",
        "null-password",
        "list-username",
        "invalid-utf8",
        "deep-nesting",
    ],
)
async def test_verify_bad_body_400(client: Client, raw_body: bytes) -> None:
    response = await client.post(API + "/accounts/verify", data=raw_body, headers=AUTH)

    assert response.status == 400
    assert "error" in await response.json()


async def test_verify_ignores_extra_fields(client: Client) -> None:
    body = {"username": "jan", "password": "demo-wachtwoord", "tenant": "x"}

    status, _ = await post_json(client, "/accounts/verify", body)

    assert status == 200


@pytest.mark.parametrize("account_id", ["medimo-jan", "medimo-piet", "medimo-anna"])
async def test_verify_password_ok(client: Client, account_id: str) -> None:
    path = f"/accounts/{account_id}/verify-password"

    status, answer = await post_json(client, path, {"password": "demo-wachtwoord"})

    assert status == 200
    assert answer == {"account_id": account_id}


@pytest.mark.parametrize(
    ("account_id", "password"),
    [
        ("medimo-jan", "fout"),
        ("medimo-klaas", "demo-wachtwoord"),
        ("jan", "demo-wachtwoord"),
        ("MEDIMO-JAN", "demo-wachtwoord"),
    ],
    ids=["wrong-password", "unknown-account", "username", "account-id-case"],
)
async def test_verify_password_401(
    client: Client, account_id: str, password: str
) -> None:
    path = f"/accounts/{account_id}/verify-password"

    status, answer = await post_json(client, path, {"password": password})

    assert status == 401
    assert answer == {"error": "invalid credentials"}


@pytest.mark.parametrize(
    "body",
    [[], {}, {"password": 1}, {"wachtwoord": "demo-wachtwoord"}],
    ids=["array", "empty-object", "number", "wrong-field"],
)
async def test_verify_password_bad_body_400(client: Client, body: Any) -> None:
    path = "/accounts/medimo-jan/verify-password"

    status, answer = await post_json(client, path, body)

    assert status == 400
    assert "error" in answer


# API: clients


@pytest.mark.parametrize(
    ("params", "client_id"),
    [
        ({"external_id": "ysis-client-1"}, "c-1001"),
        ({"external_id": "ysis-client-2"}, "c-1002"),
        ({"bsn": "123456782"}, "c-1003"),
    ],
    ids=["external-1", "external-2", "bsn"],
)
async def test_find_client_ok(
    client: Client, params: dict[str, str], client_id: str
) -> None:
    status, body = await get_json(client, "/clients", params)

    assert status == 200
    assert body == {"client_id": client_id}


@pytest.mark.parametrize(
    "params",
    [
        {"external_id": "ysis-client-9"},
        {"external_id": "YSIS-CLIENT-1"},
        {"bsn": "111222333"},
        {"bsn": "c-1003"},
        {"external_id": "c-1001"},
    ],
    ids=["unknown-external", "external-case", "unknown-bsn", "id-as-bsn", "id-as-ext"],
)
async def test_find_client_404(client: Client, params: dict[str, str]) -> None:
    status, body = await get_json(client, "/clients", params)

    assert status == 404
    assert body == {"error": "not found"}


async def test_find_client_duplicate_409(client: Client) -> None:
    params = {"external_id": "ysis-client-dubbel"}

    status, body = await get_json(client, "/clients", params)

    assert status == 409
    assert body == {"error": "several clients match"}


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("external_id", "ysis-client-1"), ("bsn", "123456782")],
        [("external_id", "ysis-client-1"), ("external_id", "ysis-client-1")],
        [("bsn", "")],
        [("client_id", "c-1001")],
    ],
    ids=["neither", "both", "repeated", "empty", "other-parameter"],
)
async def test_find_client_bad_query_400(
    client: Client, params: list[tuple[str, str]]
) -> None:
    status, body = await get_json(client, "/clients", params)

    assert status == 400
    assert "error" in body


@pytest.mark.parametrize(
    ("client_id", "account_id", "allowed"),
    [
        ("c-1001", "medimo-jan", True),
        ("c-1001", "medimo-piet", True),
        ("c-1001", "medimo-anna", True),
        ("c-1002", "medimo-jan", False),
        ("c-1002", "medimo-piet", False),
        ("c-1002", "medimo-anna", True),
        ("c-1003", "medimo-jan", True),
        ("c-1003", "medimo-piet", False),
        ("c-1003", "medimo-anna", True),
        ("c-1004", "medimo-jan", True),
        ("c-1005", "medimo-jan", True),
        ("c-1005", "medimo-anna", False),
        ("c-1001", "medimo-klaas", False),
        ("c-1001", "jan", False),
    ],
    ids=lambda value: str(value),
)
async def test_client_access(
    client: Client, client_id: str, account_id: str, allowed: bool
) -> None:
    path = f"/clients/{client_id}/access"

    status, body = await get_json(client, path, {"account_id": account_id})

    assert status == 200
    assert body == {"allowed": allowed}


async def test_client_access_unknown_client_404(client: Client) -> None:
    params = {"account_id": "medimo-jan"}

    status, body = await get_json(client, "/clients/c-9999/access", params)

    assert status == 404
    assert body == {"error": "not found"}


@pytest.mark.parametrize(
    "params",
    [[], [("account_id", "medimo-jan"), ("account_id", "medimo-piet")]],
    ids=["missing", "repeated"],
)
async def test_client_access_bad_query_400(
    client: Client, params: list[tuple[str, str]]
) -> None:
    status, body = await get_json(client, "/clients/c-1001/access", params)

    assert status == 400
    assert "error" in body


# Pages


@pytest.mark.parametrize(
    ("path", "title"),
    [("/", "Hoofdmenu"), *CLIENT_VIEW_PATHS, *GENERAL_VIEW_PATHS],
    ids=lambda value: str(value),
)
async def test_page_title(client: Client, path: str, title: str) -> None:
    response = await client.get(path)
    text = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    assert '<html lang="nl">' in text
    assert f"<h1>{title}</h1>" in text
    assert "Demo-upstream: dit is geen echte Medimo" in text


@pytest.mark.parametrize(
    "path",
    ["/", "/clients/c-1001/status", "/werklijst"],
    ids=["menu", "client-page", "general-page"],
)
async def test_page_no_external_assets(client: Client, path: str) -> None:
    text = await (await client.get(path)).text()

    assert "http://" not in text
    assert "https://" not in text
    assert "<script" not in text


async def test_main_menu_links_views(client: Client) -> None:
    text = await (await client.get("/")).text()

    for path, _ in GENERAL_VIEW_PATHS:
        assert f'href="{path}"' in text


@pytest.mark.parametrize(
    ("client_id", "name"),
    [
        ("c-1001", "Mevrouw A. Bakker"),
        ("c-1002", "Meneer B. Claassen"),
        ("c-1003", "Mevrouw C. Dekker"),
        ("c-1004", "Meneer D. Evers"),
        ("c-1005", "Mevrouw E. Fransen"),
    ],
    ids=["c-1001", "c-1002", "c-1003", "c-1004", "c-1005"],
)
async def test_client_status_shows_client(
    client: Client, client_id: str, name: str
) -> None:
    text = await (await client.get(f"/clients/{client_id}/status")).text()

    assert client_id in text
    assert name in text


@pytest.mark.parametrize(
    "path",
    [path.replace("c-1001", "c-9999") for path, _ in CLIENT_VIEW_PATHS],
    ids=[title for _, title in CLIENT_VIEW_PATHS],
)
async def test_client_page_unknown_404(client: Client, path: str) -> None:
    response = await client.get(path)
    text = await response.text()

    assert response.status == 404
    assert '<html lang="nl">' in text
    assert "c-9999" in text


async def test_page_shows_account(client: Client) -> None:
    headers = {"X-Medimo-Account": "medimo-jan"}

    text = await (await client.get("/werklijst", headers=headers)).text()

    assert "medimo-jan (Jan Jansen)" in text


async def test_page_shows_missing_account(client: Client) -> None:
    text = await (await client.get("/werklijst")).text()

    assert "X-Medimo-Account ontbreekt" in text


async def test_page_shows_client_header(client: Client) -> None:
    headers = {"X-Medimo-Account": "medimo-anna", "X-Medimo-Client": "c-1002"}

    text = await (await client.get("/app", headers=headers)).text()

    assert "c-1002 (Meneer B. Claassen)" in text


async def test_page_escapes_headers(client: Client) -> None:
    headers = {"X-Medimo-Account": "<b>x</b>", "X-Medimo-Client": '"><i>'}

    text = await (await client.get("/", headers=headers)).text()

    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert "<i>" not in text


async def test_page_invalid_utf8_header(client: Client) -> None:
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"GET /werklijst HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Medimo-Account: jan\xff\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()

    assert answer.startswith(b"HTTP/1.1 200")
    assert "jan\ufffd".encode() in answer


# /whoami


async def test_whoami_flat_identity_only(client: Client) -> None:
    identity = {name: f"value of {name}" for name in IDENTITY_HEADERS}
    headers = {**identity, SIGNATURE_HEADER: "t=1,v1=x", "X-Other": "ignored"}

    response = await client.get("/whoami", headers=headers)

    assert response.status == 200
    assert await response.json() == {**identity, SIGNATURE_HEADER: "t=1,v1=x"}


async def test_whoami_uses_canonical_names(client: Client) -> None:
    headers = {"x-medimo-account": "medimo-jan", "X-YSIS-USER": "ysis-7"}

    body = await (await client.get("/whoami", headers=headers)).json()

    assert body == {"X-Medimo-Account": "medimo-jan", "X-Ysis-User": "ysis-7"}


async def test_whoami_without_identity_empty(client: Client) -> None:
    body = await (await client.get("/whoami")).json()

    assert body == {}


async def test_whoami_signed(signed_client: Client) -> None:
    identity = {"X-Medimo-Account": "medimo-jan", "X-Request-Id": "req-1"}
    headers = sign_headers("/whoami", identity)

    response = await signed_client.get("/whoami", headers=headers)

    assert response.status == 200
    assert await response.json() == headers


# Signature check


async def test_signature_off_accepts_unsigned(client: Client) -> None:
    headers = {"X-Medimo-Account": "medimo-jan"}

    response = await client.get("/werklijst", headers=headers)

    assert response.status == 200


async def test_signature_accepts_no_identity(signed_client: Client) -> None:
    response = await signed_client.get("/werklijst")

    assert response.status == 200


@pytest.mark.parametrize("key", [KEY, OLD_KEY], ids=["current", "old"])
async def test_signature_accepts_each_key(signed_client: Client, key: bytes) -> None:
    identity = {"X-Medimo-Account": "medimo-jan", "X-Medimo-Client": "c-1001"}
    headers = sign_headers("/clients/c-1001/bestellen", identity, key=key)

    response = await signed_client.get("/clients/c-1001/bestellen", headers=headers)

    assert response.status == 200


async def test_signature_covers_post(signed_client: Client) -> None:
    identity = {"X-Medimo-Account": "medimo-jan"}
    headers = sign_headers("/demo/echo?a=1", identity, method="POST")

    response = await signed_client.post("/demo/echo?a=1", data=b"x", headers=headers)

    assert response.status == 200


def _rejected_cases() -> list[Any]:
    """Return factories of rejected headers, called at test time.

    Timestamps taken at collection would age while the suite runs, and a
    "future" one would drift into the accepted window.
    """
    identity = {"X-Medimo-Account": "medimo-jan"}

    def good() -> dict[str, str]:
        return sign_headers("/werklijst", identity)

    def now() -> int:
        return int(time.time())

    return [
        pytest.param(lambda: identity, id="unsigned"),
        pytest.param(lambda: {SIGNATURE_HEADER: good()[SIGNATURE_HEADER]}, id="signature-only"),
        pytest.param(lambda: sign_headers("/werklijst", identity, key=b"x"), id="wrong-key"),
        pytest.param(lambda: sign_headers("/tdl", identity), id="other-path"),
        pytest.param(lambda: sign_headers("/werklijst?a=1", identity), id="other-query"),
        pytest.param(
            lambda: sign_headers("/werklijst", identity, method="POST"), id="other-method"
        ),
        pytest.param(lambda: {**good(), "X-Medimo-Account": "medimo-anna"}, id="altered-account"),
        pytest.param(lambda: {**good(), "X-Medimo-Client": "c-1002"}, id="added-client"),
        pytest.param(
            lambda: sign_headers("/werklijst", identity, timestamp=now() - 120), id="stale"
        ),
        pytest.param(
            lambda: sign_headers("/werklijst", identity, timestamp=now() + 120), id="future"
        ),
        pytest.param(lambda: {**identity, SIGNATURE_HEADER: "t=abc,v1=00"}, id="malformed"),
        pytest.param(
            lambda: {**identity, SIGNATURE_HEADER: f"t={now()},v1={'é' * 64}"},
            id="non-ascii-digest",
        ),
        pytest.param(
            lambda: {**identity, SIGNATURE_HEADER: f"t={'9' * 5000},v1={'0' * 64}"},
            id="huge-timestamp",
        ),
    ]


@pytest.mark.parametrize("make_headers", _rejected_cases())
async def test_signature_rejected_403(
    signed_client: Client, make_headers: Callable[[], dict[str, str]]
) -> None:
    response = await signed_client.get("/werklijst", headers=make_headers())

    assert response.status == 403
    assert await response.json() == {"error": "invalid gateway signature"}


async def test_signature_repeated_header_403(signed_client: Client) -> None:
    identity = {"X-Medimo-Account": "medimo-jan"}
    headers = CIMultiDict(sign_headers("/werklijst", identity))
    headers.add("X-Medimo-Account", "medimo-anna")

    response = await signed_client.get("/werklijst", headers=headers)

    assert response.status == 403


async def test_signature_checks_unknown_path(signed_client: Client) -> None:
    headers = {"X-Medimo-Account": "medimo-jan"}

    response = await signed_client.get("/gateway-api/v2/health", headers=headers)

    assert response.status == 403


async def test_signature_checks_demo_helpers(signed_client: Client) -> None:
    headers = {"X-Medimo-Account": "medimo-jan"}

    response = await signed_client.get("/demo/echo", headers=headers)

    assert response.status == 403


# /demo helpers


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_echo_method(client: Client, method: str) -> None:
    response = await client.request(method, "/demo/echo")
    body = await response.json()

    assert response.status == 200
    assert body["method"] == method


async def test_echo_raw_target(client: Client) -> None:
    target = URL("/demo/echo?a=%41&b=%2F&c=x+y", encoded=True)

    body = await (await client.get(target)).json()

    assert body["path_qs"] == "/demo/echo?a=%41&b=%2F&c=x+y"


async def test_echo_repeated_headers(client: Client) -> None:
    headers = CIMultiDict(
        [("X-Test", "one"), ("X-Other", "between"), ("X-Test", "two")]
    )

    body = await (await client.get("/demo/echo", headers=headers)).json()

    sent = [pair for pair in body["headers"] if pair[0].startswith("X-")]
    assert sent == [["X-Test", "one"], ["X-Other", "between"], ["X-Test", "two"]]


async def test_echo_body_digest(client: Client) -> None:
    data = b"hallo wereld\n" * 10_000

    body = await (await client.put("/demo/echo", data=data)).json()

    assert body["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert body["body_length"] == len(data)


async def test_echo_empty_body(client: Client) -> None:
    body = await (await client.get("/demo/echo")).json()

    assert body["body_sha256"] == hashlib.sha256(b"").hexdigest()
    assert body["body_length"] == 0


async def test_set_cookie_lines_separate(client: Client) -> None:
    response = await client.get("/demo/set-cookie")

    assert response.status == 200
    assert response.headers.getall("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/",
        "__Host-sso_session=forged; Path=/; Secure",
    ]


@pytest.mark.parametrize(
    "target",
    [
        "https://voorbeeld.invalid/pad?x=%2F&y=1",
        "/werklijst",
        "//elders.invalid/",
        "relatief pad/é",
    ],
    ids=["absolute", "path", "scheme-relative", "unencoded"],
)
async def test_redirect_verbatim(client: Client, target: str) -> None:
    response = await client.get(
        "/demo/redirect", params={"to": target}, allow_redirects=False
    )

    assert response.status == 302
    assert response.headers["Location"] == target


@pytest.mark.parametrize(
    "params",
    [[], [("to", "/a"), ("to", "/b")], [("to", "/a\r\nSet-Cookie: x=1")]],
    ids=["missing", "repeated", "crlf"],
)
async def test_redirect_bad_query_400(
    client: Client, params: list[tuple[str, str]]
) -> None:
    response = await client.get("/demo/redirect", params=params, allow_redirects=False)

    assert response.status == 400
    assert "Set-Cookie" not in response.headers


async def test_slow_waits(client: Client) -> None:
    started = time.monotonic()

    response = await client.get("/demo/slow", params={"seconds": "0.2"})

    assert response.status == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "seconds",
    ["31", "-1", "nan", "inf", "abc", ""],
    ids=["over-max", "negative", "nan", "inf", "text", "empty"],
)
async def test_slow_bad_seconds_400(client: Client, seconds: str) -> None:
    response = await client.get("/demo/slow", params={"seconds": seconds})

    assert response.status == 400


async def test_slow_missing_seconds_400(client: Client) -> None:
    response = await client.get("/demo/slow")

    assert response.status == 400


async def test_stream_chunked_body(client: Client) -> None:
    response = await client.get("/demo/stream", params={"chunks": "5"})
    body = await response.read()

    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert body == b"".join(stream_chunk(index) for index in range(5))


def test_stream_chunk_content() -> None:
    assert stream_chunk(0) == b"a" * 1024
    assert stream_chunk(27) == b"b" * 1024


@pytest.mark.parametrize(
    "chunks", ["1001", "-1", "1.5", "x"], ids=["over-max", "negative", "float", "text"]
)
async def test_stream_bad_chunks_400(client: Client, chunks: str) -> None:
    response = await client.get("/demo/stream", params={"chunks": chunks})

    assert response.status == 400


async def test_gzip_raw_body(aiohttp_client: AiohttpClient) -> None:
    raw_client = await aiohttp_client(
        create_app(api_token=TOKEN), auto_decompress=False
    )

    response = await raw_client.get("/demo/gzip")
    body = await response.read()

    assert response.headers["Content-Encoding"] == "gzip"
    assert body[:2] == b"\x1f\x8b"
    assert gzip.decompress(body).decode("utf-8") == GZIP_TEXT


async def test_gzip_decoded_text(client: Client) -> None:
    response = await client.get("/demo/gzip")

    assert await response.text() == GZIP_TEXT
