"""Demo upstream that replaces Medimo in the demo and in tests.

This is not Medimo. It serves Dutch placeholder pages for every view the
gateway links to, a small JSON API under ``/gateway-api/v1/`` and a few test
helpers, all over fixed fictional data (three accounts, five clients).

The API expects ``Authorization: Bearer <api token>`` on every call, health
check included, and returns JSON with an ``"error"`` field on failure.

Everything outside ``/gateway-api/`` is treated as proxied traffic. When the
app has signing keys, each such request that carries an identity header (see
``gateway.signature.IDENTITY_HEADERS``) or ``X-Gateway-Signature`` must pass
``gateway.signature.verify_request``, and is otherwise rejected with 403. Real
upstream must do the same check before it reads any identity header. With no
signing keys the check is off, which only suits local tests.

The routes under ``/demo/`` exist only for the demo and for tests of the
gateway's proxy. They include an open redirect and an echo of all request
headers, so nothing like them belongs in a real upstream:

- ``/demo/echo`` (GET, POST, PUT, PATCH, DELETE): JSON with the method, the
  request target as received, all headers in order and the body's SHA-256.
- ``/demo/set-cookie``: three ``Set-Cookie`` lines, one of them a forged
  ``__Host-sso_session`` cookie.
- ``/demo/redirect?to=URL``: 302 to ``URL`` exactly as given.
- ``/demo/slow?seconds=N``: 200 after ``N`` seconds, at most 30.
- ``/demo/stream?chunks=N``: ``N`` chunks of 1 KiB with chunked encoding.
- ``/demo/gzip``: a gzip-compressed text body with ``Content-Encoding: gzip``.
- ``/demo/ws``: a WebSocket that first sends the identity headers of its
  handshake as JSON, then echoes every text and binary message.
- ``/demo/upgrade``: answers 101 to a plain request, as a broken server
  might.

Run it with::

    python -m gateway.demo.upstream --host 127.0.0.1 --port 8080 \\
        --api-token-file token.txt --signing-key-file key.txt
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import hmac
import html
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSMsgType, hdrs, web
from aiohttp.typedefs import Handler

from gateway.signature import IDENTITY_HEADERS, SIGNATURE_HEADER, verify_request

_LOG = logging.getLogger(__name__)

#: Password of every demo account.
DEMO_PASSWORD = "demo-wachtwoord"

#: Headers that ``/whoami`` reports, in this spelling.
WHOAMI_HEADERS = (*IDENTITY_HEADERS, SIGNATURE_HEADER)

#: Text that ``/demo/gzip`` sends compressed.
GZIP_TEXT = "Demo-upstream: deze tekst is met gzip gecomprimeerd verzonden.\n"

#: Upper limit of ``/demo/slow?seconds=``, in seconds.
MAX_SLOW_SECONDS = 30.0

#: Upper limit of ``/demo/stream?chunks=``.
MAX_STREAM_CHUNKS = 1000

#: Size of one ``/demo/stream`` chunk, in bytes.
STREAM_CHUNK_SIZE = 1024

#: Pause between two ``/demo/stream`` chunks, in seconds.
STREAM_CHUNK_PAUSE = 0.01

_DEMO_NOTICE = "Demo-upstream: dit is geen echte Medimo."

_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Account:
    """Demo Medimo account."""

    account_id: str
    username: str
    display_name: str


@dataclass(frozen=True)
class Client:
    """Fictional demo client and the accounts that may see it."""

    client_id: str
    name: str
    external_id: str | None
    bsn: str | None
    visible_to: frozenset[str]


@dataclass(frozen=True)
class View:
    """Placeholder page for one gateway view template."""

    path: str
    title: str
    description: str


ACCOUNTS = (
    Account("medimo-jan", "jan", "Jan Jansen"),
    Account("medimo-piet", "piet", "Piet Pieters"),
    Account("medimo-anna", "anna", "Anna de Vries"),
)

CLIENTS = (
    Client(
        "c-1001",
        "Mevrouw A. Bakker",
        "ysis-client-1",
        None,
        frozenset({"medimo-jan", "medimo-piet", "medimo-anna"}),
    ),
    Client(
        "c-1002",
        "Meneer B. Claassen",
        "ysis-client-2",
        None,
        frozenset({"medimo-anna"}),
    ),
    Client(
        "c-1003",
        "Mevrouw C. Dekker",
        None,
        "123456782",
        frozenset({"medimo-jan", "medimo-anna"}),
    ),
    # Two clients share one external ID so that a lookup returns 409.
    Client(
        "c-1004",
        "Meneer D. Evers",
        "ysis-client-dubbel",
        None,
        frozenset({"medimo-jan"}),
    ),
    Client(
        "c-1005",
        "Mevrouw E. Fransen",
        "ysis-client-dubbel",
        None,
        frozenset({"medimo-jan"}),
    ),
)

#: Views about one client, with paths relative to ``/clients/{client_id}``.
CLIENT_VIEWS = (
    View("/medicatiestatus", "Medicatiestatus", "Actuele medicatie van de cliënt."),
    View("/bestellen", "Bestellen", "Medicatie voor de cliënt bestellen."),
    View("/toedienen", "Toedienen", "Toedieningen van de cliënt registreren."),
    View("/dispense", "Uitgifte", "Uitgifte van medicatie aan de cliënt."),
)

#: Views that are not about one client.
GENERAL_VIEWS = (
    View("/bestelronde", "Bestelronde", "Overzicht van de bestelronde."),
    View("/deelronde", "Deelronde", "Overzicht van de deelronde."),
    View("/werklijst", "Werklijst", "Werklijst van de medewerker."),
    View("/werklijst/afdeling", "Werklijst afdeling", "Werklijst van de afdeling."),
    View("/aanvragen", "Aanvraagmenu", "Aanvragen indienen en volgen."),
    View("/tdl", "TDL-menu", "Toedienlijsten."),
    View("/tdr", "TDR-menu", "Toedienregistratie."),
    View("/app", "Medimo-app", "Startpagina van de Medimo-app."),
)

SIGNING_KEYS = web.AppKey("signing_keys", tuple[bytes, ...])
API_TOKEN = web.AppKey("api_token", bytes)
API_APP = web.AppKey("api_app", web.Application)
#: Method and path (never the query, which may hold a BSN) of each API call,
#: so that tests can tell which lookups the gateway made.
API_CALLS = web.AppKey("api_calls", list[str])


class ApiError(Exception):
    """Error that the API returns as JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Data lookups


def find_account(account_id: str) -> Account | None:
    """Return the account with ``account_id``, or None."""
    return next((a for a in ACCOUNTS if a.account_id == account_id), None)


def find_account_by_username(username: str) -> Account | None:
    """Return the account whose username matches, ignoring case and spaces."""
    normalized = username.strip().casefold()
    return next((a for a in ACCOUNTS if a.username == normalized), None)


def find_client(client_id: str) -> Client | None:
    """Return the client with ``client_id``, or None."""
    return next((c for c in CLIENTS if c.client_id == client_id), None)


def _password_matches(password: str) -> bool:
    # JSON strings may contain lone surrogates, which plain UTF-8 cannot encode.
    encoded = password.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(encoded, DEMO_PASSWORD.encode("utf-8"))


# Pages


def _readable(value: str) -> str:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape, and the page
    # must still encode as UTF-8 when a header contained invalid bytes.
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _describe_account(request: web.Request) -> str:
    account_id = request.headers.get("X-Medimo-Account")
    if account_id is None:
        return "geen (de header X-Medimo-Account ontbreekt)"

    account = find_account(account_id)
    if account is None:
        return f"{_readable(account_id)} (onbekend account)"
    return f"{account.account_id} ({account.display_name})"


def _describe_client_header(request: web.Request) -> str | None:
    client_id = request.headers.get("X-Medimo-Client")
    if client_id is None:
        return None

    client = find_client(client_id)
    if client is None:
        return f"{_readable(client_id)} (onbekende cliënt)"
    return f"{client.client_id} ({client.name})"


def _identity_list(request: web.Request) -> str:
    rows = [("Medimo-account", _describe_account(request))]
    client = _describe_client_header(request)
    if client is not None:
        rows.append(("Cliënt uit X-Medimo-Client", client))

    items = [
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(value)}</dd>"
        for name, value in rows
    ]
    return "<dl>" + "".join(items) + "</dl>"


def _render_page(request: web.Request, title: str, content: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="nl">
<head>
<meta charset="utf-8">
<title>{html.escape(title)} - demo-upstream</title>
<style>.demo {{ background: #fff3cd; padding: 0.5em; }}</style>
</head>
<body>
<p class="demo"><strong>{html.escape(_DEMO_NOTICE)}</strong></p>
<h1>{html.escape(title)}</h1>
{_identity_list(request)}
{content}
<p><a href="/">Naar het hoofdmenu</a></p>
<form method="post" action="/sso/logout"><button type="submit">Afmelden</button></form>
</body>
</html>
"""


def page_response(
    request: web.Request, title: str, content: str, *, status: int = 200
) -> web.Response:
    """Build an HTML page around ``content``, which the caller must escape."""
    return web.Response(
        status=status,
        text=_render_page(request, title, content),
        content_type="text/html",
        charset="utf-8",
        headers=_SECURITY_HEADERS,
    )


async def handle_main_menu(request: web.Request) -> web.Response:
    """Serve the main menu with links to every view that needs no client."""
    links = [
        f'<li><a href="{html.escape(view.path)}">{html.escape(view.title)}</a></li>'
        for view in GENERAL_VIEWS
    ]
    links.append('<li><a href="/whoami">Ontvangen identiteit (JSON)</a></li>')
    return page_response(request, "Hoofdmenu", "<ul>" + "".join(links) + "</ul>")


def _client_details(client: Client) -> str:
    return (
        "<dl>"
        f"<dt>Cliënt-ID</dt><dd>{html.escape(client.client_id)}</dd>"
        f"<dt>Naam</dt><dd>{html.escape(client.name)}</dd>"
        "</dl>"
    )


def _client_not_found(request: web.Request, client_id: str) -> web.Response:
    message = f"Er is geen cliënt met ID {_readable(client_id)}."
    content = f"<p>{html.escape(message)}</p>"
    return page_response(request, "Cliënt niet gevonden", content, status=404)


def client_page_handler(title: str, description: str) -> Handler:
    """Create a handler for a page about the client in the path."""

    async def handle(request: web.Request) -> web.StreamResponse:
        client_id = request.match_info["client_id"]
        client = find_client(client_id)
        if client is None:
            return _client_not_found(request, client_id)

        content = f"<p>{html.escape(description)}</p>{_client_details(client)}"
        return page_response(request, title, content)

    return handle


def general_page_handler(title: str, description: str) -> Handler:
    """Create a handler for a page that is not about one client."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return page_response(request, title, f"<p>{html.escape(description)}</p>")

    return handle


async def handle_whoami(request: web.Request) -> web.Response:
    """Return the identity headers of the request as one flat JSON object.

    A header sent more than once is joined with ", " as HTTP allows. That only
    happens with the signature check off, because the check rejects repeats.
    """
    return web.json_response(_identity_headers(request))


def _identity_headers(request: web.Request) -> dict[str, str]:
    return {
        name: ", ".join(request.headers.getall(name))
        for name in WHOAMI_HEADERS
        if name in request.headers
    }


# Demo helpers


async def handle_echo(request: web.Request) -> web.Response:
    """Return the method, target, headers and body digest of the request."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        digest.update(chunk)
        length += len(chunk)

    return web.json_response(
        {
            "method": request.method,
            # raw_path is the target exactly as received, before yarl
            # normalises any percent-encoding.
            "path_qs": request.raw_path,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body_sha256": digest.hexdigest(),
            "body_length": length,
        }
    )


async def handle_set_cookie(request: web.Request) -> web.Response:
    """Send three separate Set-Cookie lines, one forging the gateway's cookie."""
    response = web.Response(text="Drie cookies gezet.\n")
    response.headers.add(hdrs.SET_COOKIE, "a=1; Path=/")
    response.headers.add(hdrs.SET_COOKIE, "b=2; Path=/")
    response.headers.add(hdrs.SET_COOKIE, "__Host-sso_session=forged; Path=/; Secure")
    return response


def _query_value(request: web.Request, name: str) -> str:
    values = request.query.getall(name, [])
    if len(values) != 1:
        raise web.HTTPBadRequest(
            text=f"Missing or repeated query parameter {name}. Give it once.\n"
        )
    return values[0]


def _query_number(
    request: web.Request,
    name: str,
    parse: Callable[[str], float],
    maximum: float,
) -> float:
    raw = _query_value(request, name)
    try:
        number = parse(raw)
    except ValueError:
        number = math.nan

    if not 0 <= number <= maximum:
        message = f"Invalid {name}={raw!r}: expected a number from 0 to {maximum}.\n"
        raise web.HTTPBadRequest(text=message)
    return number


async def handle_redirect(request: web.Request) -> web.Response:
    """Redirect with 302 to the ``to`` query parameter, unchanged."""
    target = _query_value(request, "to")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        raise web.HTTPBadRequest(
            text="Invalid query parameter to, because it contains control characters.\n"
        )

    # web.HTTPFound would pass the URL through yarl, which may re-encode it.
    return web.Response(status=302, headers={hdrs.LOCATION: target})


async def handle_slow(request: web.Request) -> web.Response:
    """Return 200 after sleeping ``seconds`` seconds."""
    seconds = _query_number(request, "seconds", float, MAX_SLOW_SECONDS)
    await asyncio.sleep(seconds)
    return web.Response(text=f"Na {seconds:g} seconden.\n")


def stream_chunk(index: int) -> bytes:
    """Return chunk ``index`` of ``/demo/stream``: one letter, repeated."""
    return bytes([ord("a") + index % 26]) * STREAM_CHUNK_SIZE


async def handle_stream(request: web.Request) -> web.StreamResponse:
    """Stream ``chunks`` chunks of 1 KiB with chunked transfer encoding."""
    count = int(_query_number(request, "chunks", int, MAX_STREAM_CHUNKS))
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    response.enable_chunked_encoding()
    await response.prepare(request)

    for index in range(count):
        if index:
            await asyncio.sleep(STREAM_CHUNK_PAUSE)
        await response.write(stream_chunk(index))

    await response.write_eof()
    return response


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    """Send the handshake's identity headers, then echo each message."""
    socket = web.WebSocketResponse(protocols=("demo",))
    await socket.prepare(request)
    await socket.send_json(_identity_headers(request))
    async for message in socket:
        if message.type == WSMsgType.TEXT:
            await socket.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await socket.send_bytes(message.data)
    return socket


async def handle_unasked_upgrade(request: web.Request) -> web.Response:
    return web.Response(status=101, headers={"Upgrade": "h2c", "Connection": "Upgrade"})


async def handle_gzip(request: web.Request) -> web.Response:
    """Send ``GZIP_TEXT`` compressed, as an upstream with compression would."""
    body = gzip.compress(GZIP_TEXT.encode("utf-8"), mtime=0)
    return web.Response(
        body=body,
        content_type="text/plain",
        charset="utf-8",
        headers={hdrs.CONTENT_ENCODING: "gzip"},
    )


# API


async def _read_json_object(request: web.Request) -> dict[str, object]:
    body = await request.read()
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid body: not JSON") from None

    if not isinstance(data, dict):
        raise ApiError(400, "invalid body: expected a JSON object")
    return data


async def _read_strings(request: web.Request, *names: str) -> list[str]:
    """Read the named string fields of the JSON body and ignore other fields."""
    data = await _read_json_object(request)
    values = [data.get(name) for name in names]
    strings = [value for value in values if isinstance(value, str)]
    if len(strings) != len(names):
        raise ApiError(400, f"invalid body: expected string fields {', '.join(names)}")
    return strings


async def api_verify_account(request: web.Request) -> web.Response:
    """Check a username and password and return the account."""
    username, password = await _read_strings(request, "username", "password")
    account = find_account_by_username(username)

    # Compare the password even for an unknown user, so both cost the same.
    password_ok = _password_matches(password)
    if account is None or not password_ok:
        raise ApiError(401, "invalid credentials")

    return web.json_response(
        {"account_id": account.account_id, "display_name": account.display_name}
    )


async def api_verify_password(request: web.Request) -> web.Response:
    """Check the password of the account in the path."""
    (password,) = await _read_strings(request, "password")
    account = find_account(request.match_info["account_id"])

    password_ok = _password_matches(password)
    if account is None or not password_ok:
        raise ApiError(401, "invalid credentials")

    return web.json_response({"account_id": account.account_id})


def _matching_clients(request: web.Request) -> list[Client]:
    present = [name for name in ("external_id", "bsn") if name in request.query]
    if len(present) != 1:
        raise ApiError(
            400, "invalid query: expected exactly one of external_id and bsn"
        )

    name = present[0]
    values = request.query.getall(name)
    if len(values) != 1 or not values[0]:
        raise ApiError(400, f"invalid query: expected {name} once, with a value")

    if name == "external_id":
        return [c for c in CLIENTS if c.external_id == values[0]]
    return [c for c in CLIENTS if c.bsn == values[0]]


async def api_find_client(request: web.Request) -> web.Response:
    """Find the one client with the given external ID or BSN."""
    matches = _matching_clients(request)
    if not matches:
        raise ApiError(404, "not found")
    if len(matches) > 1:
        raise ApiError(409, "several clients match")
    return web.json_response({"client_id": matches[0].client_id})


async def api_client_access(request: web.Request) -> web.Response:
    """Return whether ``account_id`` may see the client in the path."""
    client = find_client(request.match_info["client_id"])
    if client is None:
        raise ApiError(404, "not found")

    account_ids = request.query.getall("account_id", [])
    if len(account_ids) != 1:
        raise ApiError(400, "invalid query: expected account_id once")
    return web.json_response({"allowed": account_ids[0] in client.visible_to})


async def api_health(request: web.Request) -> web.Response:
    """Return ``{"status": "ok"}``."""
    return web.json_response({"status": "ok"})


# Middlewares


def _bearer_token(request: web.Request) -> bytes | None:
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(values) != 1:
        return None

    scheme, _, token = values[0].strip().partition(" ")
    if scheme.casefold() != "bearer":
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _log_api_error(request: web.Request, status: int, message: str) -> None:
    _LOG.info(
        "API request failed with %d %s: %s %s",
        status,
        message,
        request.method,
        request.path,
    )


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require the bearer token and turn every API error into JSON."""
    token = _bearer_token(request)
    if token is None or not hmac.compare_digest(token, request.app[API_TOKEN]):
        _LOG.info(
            "API request rejected: missing or invalid bearer token: %s %s",
            request.method,
            request.path,
        )
        response = _json_error(401, "unauthorized")
        # The bearer challenge shows the gateway that its token, not the
        # user's password, was rejected.
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response

    request.app[API_CALLS].append(f"{request.method} {request.path}")
    try:
        return await handler(request)
    except ApiError as error:
        _log_api_error(request, error.status, error.message)
        return _json_error(error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        _log_api_error(request, error.status, error.reason)
        response = _json_error(error.status, error.reason.lower())
        if hdrs.ALLOW in error.headers:
            response.headers[hdrs.ALLOW] = error.headers[hdrs.ALLOW]
        return response


def _has_identity(request: web.Request) -> bool:
    return any(name in request.headers for name in WHOAMI_HEADERS)


def _signature_valid(request: web.Request, keys: Sequence[bytes]) -> bool:
    return verify_request(keys, request.method, request.raw_path, request.headers)


@web.middleware
async def signature_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Reject proxied requests whose identity headers lack a valid signature."""
    keys = request.app[SIGNING_KEYS]
    is_api = request.app[API_APP] in request.match_info.apps
    if not keys or is_api or not _has_identity(request):
        return await handler(request)

    if not _signature_valid(request, keys):
        _LOG.warning(
            "Request rejected: invalid gateway signature: %s %s",
            request.method,
            request.path,
        )
        return _json_error(403, "invalid gateway signature")
    return await handler(request)


# Application


def _create_api_app(api_token: str) -> web.Application:
    api = web.Application(middlewares=[api_middleware])
    api[API_TOKEN] = api_token.encode("utf-8")
    api[API_CALLS] = []
    api.router.add_post("/accounts/verify", api_verify_account)
    api.router.add_post("/accounts/{account_id}/verify-password", api_verify_password)
    api.router.add_get("/clients", api_find_client)
    api.router.add_get("/clients/{client_id}/access", api_client_access)
    api.router.add_get("/health", api_health)
    return api


def _add_pages(app: web.Application) -> None:
    app.router.add_get("/", handle_main_menu)
    app.router.add_get("/whoami", handle_whoami)

    status = client_page_handler("Cliëntstatus", "Status van de cliënt.")
    app.router.add_get("/clients/{client_id}/status", status)
    for view in CLIENT_VIEWS:
        handler = client_page_handler(view.title, view.description)
        app.router.add_get("/clients/{client_id}" + view.path, handler)
    for view in GENERAL_VIEWS:
        app.router.add_get(
            view.path, general_page_handler(view.title, view.description)
        )


def _add_demo_helpers(app: web.Application) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        app.router.add_route(method, "/demo/echo", handle_echo)
    app.router.add_get("/demo/set-cookie", handle_set_cookie)
    app.router.add_get("/demo/redirect", handle_redirect)
    app.router.add_get("/demo/slow", handle_slow)
    app.router.add_get("/demo/stream", handle_stream)
    app.router.add_get("/demo/gzip", handle_gzip)
    app.router.add_get("/demo/ws", handle_websocket)
    app.router.add_get("/demo/upgrade", handle_unasked_upgrade)


def create_app(
    *, api_token: str, signing_keys: Sequence[bytes] = ()
) -> web.Application:
    """Create the demo upstream.

    ``api_token`` is the bearer token the API expects. With ``signing_keys``,
    proxied requests that carry identity headers must be signed with one of
    them. Raise ValueError for an empty token or key, since anyone could then
    pass the check.
    """
    if not api_token:
        raise ValueError("api_token must not be empty")
    if any(not key for key in signing_keys):
        raise ValueError("signing keys must not be empty")

    api = _create_api_app(api_token)
    app = web.Application(middlewares=[signature_middleware])
    app[SIGNING_KEYS] = tuple(signing_keys)
    app[API_APP] = api
    app.add_subapp("/gateway-api/v1", api)
    _add_pages(app)
    _add_demo_helpers(app)
    return app


# Command line


def _read_secret(path: Path) -> str:
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise ValueError(f"{path} is empty. Write the secret into it as text.")
    return secret


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.upstream",
        description="Run the demo upstream that replaces Medimo in demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    parser.add_argument(
        "--api-token-file",
        type=Path,
        required=True,
        help="file with the bearer token the API expects",
    )
    parser.add_argument(
        "--signing-key-file",
        type=Path,
        action="append",
        default=[],
        help="file with a gateway signing key (repeat the option for several keys)",
    )
    args = parser.parse_args(argv)

    try:
        args.api_token = _read_secret(args.api_token_file)
        args.signing_keys = [
            _read_secret(path).encode("utf-8") for path in args.signing_key_file
        ]
    except (OSError, ValueError) as error:
        parser.error(f"cannot read secret: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo upstream until interrupted."""
    logging.basicConfig(level=logging.INFO)
    args = _parse_args(argv)
    app = create_app(api_token=args.api_token, signing_keys=args.signing_keys)

    if not args.signing_keys:
        _LOG.warning("No signing keys configured, so identity headers are not checked")
    _LOG.info(
        "Starting demo upstream on %s:%d with %d signing key(s)",
        args.host,
        args.port,
        len(args.signing_keys),
    )
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
