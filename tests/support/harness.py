"""A real gateway for functional tests: trustme certificates, a redis-server,
SQLite or PostgreSQL, and the demo upstream on loopback, all in one folder.

``GatewayHarness.start()`` writes ``gateway.yaml`` and ``tenants.yaml`` the
way an operator would, loads them with the real loader and starts the real
server on a free port. ``client()`` returns an aiohttp session that speaks
mutual TLS with the chosen certificate and keeps cookies like a browser.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import yaml
from aiohttp import web

from gateway.config.loader import Config, load_config
from gateway.demo import upstream
from gateway.links.sql import SqlLinkStore
from gateway.serve import RunningGateway, start
from gateway.ssolog.entry import Row
from gateway.ssolog.store import LogQuery, SqlSsoLog
from gateway.state import GATEWAY
from gateway.session.codec import SESSION_COOKIE
from gateway.storage.database import create_engine, upgrade

#: Tenants every harness starts with, unless a test passes its own.
DEFAULT_TENANTS: dict[str, dict[str, Any]] = {
    "noord": {"display_name": "Zorggroep Noord"},
    "zuid": {"display_name": "Zorggroep Zuid", "confirm_password": True},
}


#: Largest upstream request body the harness records, in bytes.
MAX_RECORDED_BODY = 64 * 1024


class Clock:
    """A settable clock for expiry tests; starts at the real time."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class UpstreamRequest:
    """One request as the upstream received it."""

    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class GatewayHarness:
    folder: Path
    redis_url: str
    database_url: str | None = None
    tenants: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_TENANTS))
    gateway_overrides: dict[str, Any] = field(default_factory=dict)
    ca: trustme.CA = field(default_factory=trustme.CA)
    clock: Clock = field(default_factory=Clock)
    session_keys: list[bytes] = field(default_factory=lambda: [secrets.token_urlsafe(32).encode()])

    def __post_init__(self) -> None:
        self.client_certs: dict[str, trustme.LeafCert] = {}
        self.running: RunningGateway | None = None
        self.upstream_runner: web.AppRunner | None = None
        self.signing_key = secrets.token_urlsafe(32).encode()
        self.api_token = secrets.token_urlsafe(32)
        self.config: Config | None = None
        self._sessions: list[aiohttp.ClientSession] = []
        #: Every request the upstream received, API calls included.
        self.upstream_received: list[UpstreamRequest] = []
        #: Called with each upstream request before the upstream handles it,
        #: so that a test can stop a service while the gateway waits.
        self.upstream_hooks: list[Callable[[UpstreamRequest], None]] = []

    # --- files -----------------------------------------------------------

    def pem(self, name: str, blob: trustme.Blob) -> Path:
        path = self.folder / name
        blob.write_to_path(str(path))
        return path

    def issue_client_cert(self, name: str, **kwargs: Any) -> trustme.LeafCert:
        cert = self.ca.issue_cert(f"{name}.ysis.example", common_name=f"{name}.ysis.example", **kwargs)
        return self.adopt_client_cert(name, cert)

    def adopt_client_cert(self, name: str, cert: trustme.LeafCert) -> trustme.LeafCert:
        """Pin ``cert`` for tenant ``name`` and write its files to this folder."""
        self.client_certs[name] = cert
        self.pem(f"{name}-client.pem", cert.cert_chain_pems[0])
        self.pem(f"{name}-client-key.pem", cert.private_key_pem)
        return cert

    def peer(self, folder: Path, **changes: Any) -> GatewayHarness:
        """Return a second instance of this started gateway's deployment.

        It shares the CA, the client certificates, the session keys, the
        database, Redis, the tenants, the settings and the clock, so a cookie
        of one instance works on the other. ``changes`` override any of
        these. It has its own folder, server certificate, port and upstream.
        """
        assert self.config is not None, "start the first instance before its peer"
        shared: dict[str, Any] = {
            "redis_url": self.redis_url,
            "database_url": self.config.gateway.database.url,
            "tenants": self.tenants,
            "gateway_overrides": self.gateway_overrides,
            "ca": self.ca,
            "clock": self.clock,
            "session_keys": self.session_keys,
        }
        other = GatewayHarness(folder, **{**shared, **changes})
        for name, cert in self.client_certs.items():
            other.adopt_client_cert(name, cert)
        return other

    def _secret(self, name: str, value: bytes | str) -> dict[str, str]:
        path = self.folder / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(value if isinstance(value, bytes) else value.encode())
        return {"file": f"secrets/{name}"}

    def write_config(self, upstream_port: int) -> Path:
        server = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.pem("server.pem", server.cert_chain_pems[0])
        self.pem("server-key.pem", server.private_key_pem)
        self.pem("ca.pem", self.ca.cert_pem)
        database_url = self.database_url or f"sqlite+aiosqlite:///{self.folder / 'gateway.db'}"
        gateway: dict[str, Any] = {
            "listen": {"host": ["127.0.0.1"], "port": 0},
            "tls": {"certificate": "server.pem", "private_key": "server-key.pem"},
            "public_hostnames": ["localhost", "127.0.0.1"],
            "upstream": {
                "url": f"http://127.0.0.1:{upstream_port}",
                "api_token": self._secret("api-token", self.api_token),
                "timeout": "5s",
            },
            "redis": {"url": self.redis_url},
            "database": {"url": database_url},
            "session": {
                "keys": [
                    self._secret(f"session-key-{index}", key)
                    for index, key in enumerate(self.session_keys)
                ]
            },
            "upstream_signing_keys": [self._secret("signing-key", self.signing_key)],
            "forms": {"min_failure_time": "50ms"},
            "admin": {"port": 0},
        }
        _merge(gateway, self.gateway_overrides)
        tenants = []
        for name, options in self.tenants.items():
            if name not in self.client_certs:
                self.issue_client_cert(name)
            tenant = {
                "name": name,
                "display_name": name.title(),
                "method": "ysis",
                "certificates": [f"{name}-client.pem"],
                "allowed_ips": ["127.0.0.1/32", "::1/128"],
            }
            if "ca_file" in options:
                # A tenant pins either certificates or a CA with a subject.
                del tenant["certificates"]
            tenant.update(options)
            tenants.append(tenant)
        path = self.folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(gateway, sort_keys=False))
        (self.folder / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}, sort_keys=False))
        return path

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> GatewayHarness:
        app = upstream.create_app(api_token=self.api_token, signing_keys=[self.signing_key])
        app.middlewares.insert(0, self._record_upstream)
        self.upstream_runner = web.AppRunner(app, access_log=None)
        await self.upstream_runner.setup()
        site = web.TCPSite(self.upstream_runner, "127.0.0.1", 0)
        await site.start()
        upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.config = load_config(self.write_config(upstream_port))
        await asyncio.to_thread(upgrade, self.config.gateway.database.url)
        self.running = await start(self.config, clock=self.clock)
        return self

    @web.middleware
    async def _record_upstream(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # A small body is read here and cached by aiohttp for the handler.
        # Larger and chunked ones are left to stream, so they go unrecorded.
        size = request.content_length
        small = size is not None and size <= MAX_RECORDED_BODY
        body = await request.read() if request.can_read_body and small else b""
        headers = list(request.headers.items())
        received = UpstreamRequest(request.method, request.path_qs, headers, body)
        self.upstream_received.append(received)
        for hook in self.upstream_hooks:
            hook(received)
        return await handler(request)

    async def stop_upstream(self) -> None:
        """Stop the upstream, so that proxied requests find nobody listening."""
        if self.upstream_runner is not None:
            await self.upstream_runner.cleanup()
            self.upstream_runner = None

    async def stop(self) -> None:
        """Stop the gateway and the upstream; a second call does nothing."""
        for session in self._sessions:
            await session.close()
        if self.running is not None:
            await self.running.stop()
            self.running = None
        if self.upstream_runner is not None:
            await self.upstream_runner.cleanup()
            self.upstream_runner = None

    @property
    def api_calls(self) -> list[str]:
        """Method and path of every upstream API call the gateway made."""
        assert self.upstream_runner is not None
        api = self.upstream_runner.app[upstream.API_APP]
        return api[upstream.API_CALLS]

    @property
    def base_url(self) -> str:
        assert self.running is not None
        return f"https://localhost:{self.running.port}"

    @property
    def admin_url(self) -> str:
        assert self.running is not None and self.running.admin_port is not None
        return f"http://127.0.0.1:{self.running.admin_port}"

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.port

    # --- clients -------------------------------------------------------------

    def ssl_context(self, tenant: str | None = None, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        chosen = cert or (self.client_certs[tenant] if tenant else None)
        if chosen is not None:
            chosen.configure_cert(context)
        return context

    def client(
        self,
        tenant: str | None = None,
        *,
        cert: trustme.LeafCert | None = None,
        context: ssl.SSLContext | None = None,
    ) -> aiohttp.ClientSession:
        """Return a browser-like session: mutual TLS, cookie jar, no redirects followed.

        ``context`` replaces the TLS context that ``tenant`` or ``cert`` would give.
        """
        context = context or self.ssl_context(tenant, cert)
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        session = aiohttp.ClientSession(
            base_url=self.base_url,
            connector=connector,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            auto_decompress=False,
        )
        self._sessions.append(session)
        return session

    def cookie_values(self) -> list[str]:
        """Return the value of every cookie that a client of this harness holds."""
        return [
            cookie.value
            for session in self._sessions
            for cookie in session.cookie_jar
            if cookie.value
        ]
    def forget_client(self, session: aiohttp.ClientSession) -> None:
        """Stop tracking a client that the caller closes itself."""
        self._sessions.remove(session)

    async def add_link(self, tenant: str, ysis_user: str, account: str) -> None:
        assert self.config is not None
        engine = create_engine(self.config.gateway.database.url)
        try:
            await SqlLinkStore(engine).add(tenant, ysis_user, account, "test")
        finally:
            await engine.dispose()

    async def links(self, tenant: str) -> dict[str, str]:
        assert self.config is not None
        engine = create_engine(self.config.gateway.database.url)
        try:
            return {link.ysis_user: link.medimo_account for link in await SqlLinkStore(engine).list(tenant)}
        finally:
            await engine.dispose()

    async def sso_log(self, *, flush_within: float = 10.0) -> list[Row]:
        """Return every SSO log row, after a running gateway has written its queue."""
        assert self.config is not None
        if self.running is not None:
            writer = self.running.runner.app[GATEWAY].sso_log
            await asyncio.wait_for(writer.flush(), flush_within)
        engine = create_engine(self.config.gateway.database.url)
        try:
            log = SqlSsoLog(engine, "reader")
            return [row async for row in log.rows(LogQuery())]
        finally:
            await engine.dispose()


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


async def whoami(client: aiohttp.ClientSession) -> dict[str, str]:
    async with client.get("/whoami", allow_redirects=False) as response:
        assert response.status == 200, await response.text()
        return dict(json.loads(await response.read()))


def form_fields(html: str) -> dict[str, str]:
    """Return the hidden inputs of a page's form (the CSRF token among them)."""
    pattern = r'<input type="hidden" name="([^"]+)" value="([^"]*)">'
    return {name: value for name, value in re.findall(pattern, html)}


async def post_form(
    client: aiohttp.ClientSession,
    path: str,
    fields: dict[str, str],
    *,
    origin: str | None,
) -> aiohttp.ClientResponse:
    """Post a form as a browser would; ``origin`` None sends no Origin header."""
    headers = {"Origin": origin} if origin is not None else {}
    response = await client.post(path, data=fields, headers=headers, allow_redirects=False)
    await response.read()
    return response


async def cookie_status(
    gateway: GatewayHarness, cookie: str, tenant: str = "noord"
) -> int:
    """Return the status of ``GET /whoami`` with a session cookie from anywhere."""
    client = gateway.client(tenant)
    client.cookie_jar.update_cookies({SESSION_COOKIE: cookie})
    try:
        async with client.get("/whoami", allow_redirects=False) as response:
            await response.read()
            return response.status
    finally:
        # Polling makes many clients; close each at once instead of at stop.
        gateway.forget_client(client)
        await client.close()


async def poll_until(
    check: Callable[[], Awaitable[bool]], limit: float, what: str
) -> float:
    """Call ``check`` until it returns True; return the seconds that took.

    Fails the test when ``limit`` seconds pass first.
    """
    start = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - start
        if elapsed > limit:
            raise AssertionError(f"{what}: not within {limit:g} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def launch(client: aiohttp.ClientSession, tenant: str, **params: str) -> aiohttp.ClientResponse:
    """Send a launch and return the response (body read, redirects not followed)."""
    response = await client.get(f"/sso/ysis/{tenant}", params=params, allow_redirects=False)
    await response.read()
    return response
