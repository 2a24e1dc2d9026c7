"""``sso-gateway serve`` as an operator runs it: a subprocess on files that a
``GatewayHarness`` wrote, with the demo upstream as a process of its own.

Both servers run outside the test's event loop, so a test may block on a
socket without stalling them. The gateway's JSON log lines go to a file,
which the test reads to learn ports, worker PIDs and reload outcomes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config.loader import load_config
from gateway.demo.run import stop_with_parent
from gateway.storage.database import upgrade
from tests.support.harness import GatewayHarness, launch
from tests.support.services import free_port

#: Seconds a served gateway gets to start, and a test to see a log line.
START_TIMEOUT = 30.0
LOG_TIMEOUT = 15.0

#: Seconds a poll waits for the gateway to reach a state.
POLL_TIMEOUT = 10.0

#: Seconds a stop may take past shutdown_timeout: cancelling the requests
#: left, writing the SSO log queue and closing the pools take well under a
#: second on loopback, so this margin is generous.
STOP_MARGIN = 3.0

#: Settings for a request stuck on a slow upstream: the upstream timeout
#: (5 s in the harness) as long as ``/demo/slow`` may take.
SLOW_UPSTREAM: dict[str, Any] = {"upstream": {"timeout": "30s"}}

Record = dict[str, Any]


@dataclass
class ServedGateway:
    """A gateway process, its upstream process and the files they use."""

    harness: GatewayHarness
    process: subprocess.Popen[bytes]
    upstream: subprocess.Popen[bytes]
    log_path: Path
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    # --- log -------------------------------------------------------------

    def records(self) -> list[Record]:
        """Return every JSON log line the gateway wrote so far."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def events(self, event: str) -> list[Record]:
        return [record for record in self.records() if record.get("event") == event]

    async def wait_for(
        self,
        predicate: Callable[[Record], bool],
        *,
        after: int = 0,
        timeout: float = LOG_TIMEOUT,
    ) -> Record:
        """Return the first log record past index ``after`` that fits."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records()[after:]:
                if predicate(record):
                    return record
            if self.process.poll() is not None and self.process.returncode != 0:
                raise AssertionError(f"the gateway exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for a log line:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def wait_for_event(
        self, event: str, *, after: int = 0, timeout: float = LOG_TIMEOUT
    ) -> Record:
        return await self.wait_for(
            lambda record: record.get("event") == event, after=after, timeout=timeout
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the log, for an assertion message."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def mark(self) -> int:
        """Return the number of log records so far, for ``after=``."""
        return len(self.records())

    # --- addresses -------------------------------------------------------

    def _port(self, scheme: str) -> int:
        for record in self.events("listening"):
            url = str(record["url"])
            if url.startswith(scheme + "://"):
                return int(url.rsplit(":", 1)[1])
        raise AssertionError(f"no {scheme} listener logged:\n{self.log_tail()}")

    def admin_listeners(self) -> list[Record]:
        return [
            record
            for record in self.events("listening")
            if str(record["url"]).startswith("http://")
        ]

    @property
    def port(self) -> int:
        return self._port("https")

    @property
    def admin_port(self) -> int:
        return self._port("http")

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    # --- clients ---------------------------------------------------------

    def client(
        self, tenant: str | None = None, *, keepalive: bool = False
    ) -> aiohttp.ClientSession:
        """Return a browser-like session with ``tenant``'s certificate."""
        connector = aiohttp.TCPConnector(
            ssl=self.harness.ssl_context(tenant), force_close=not keepalive
        )
        session = aiohttp.ClientSession(
            base_url=self.base_url,
            connector=connector,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
        )
        self._sessions.append(session)
        return session

    def tls_socket(self, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        """Open a TLS connection with a blocking socket; the caller closes it."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        chosen = context or self.harness.ssl_context()
        return chosen.wrap_socket(raw, server_hostname="localhost")

    async def metric(self, name: str, **labels: str) -> float | None:
        """Return one sample from /metrics, or None if it is not there."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    # --- process ---------------------------------------------------------

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway still runs:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    async def close(self) -> None:
        for session in self._sessions:
            await session.close()
        _end(self.process)
        # The upstream would wait for its slow responses before it exits.
        self.upstream.kill()
        self.upstream.wait()


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def _start_upstream(harness: GatewayHarness, port: int) -> subprocess.Popen[bytes]:
    secrets = harness.folder / "secrets"
    command = [
        sys.executable, "-m", "gateway.demo.upstream", "--host", "127.0.0.1",
        "--port", str(port), "--api-token-file", str(secrets / "api-token"),
        "--signing-key-file", str(secrets / "signing-key"),
    ]  # fmt: skip
    with (harness.folder / "upstream.log").open("wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=stop_with_parent
        )


async def start_served(harness: GatewayHarness, *, workers: int = 1) -> ServedGateway:
    """Write the harness's files, start upstream and gateway, wait for both."""
    upstream_port = free_port()
    config_path = harness.write_config(upstream_port)
    harness.config = load_config(config_path)
    await asyncio.to_thread(upgrade, harness.config.gateway.database.url)
    upstream = _start_upstream(harness, upstream_port)
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    if workers > 1:
        command += ["--workers", str(workers)]
    log_path = harness.folder / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=harness.folder,
            preexec_fn=stop_with_parent,
        )
    served = ServedGateway(harness, process, upstream, log_path)
    try:
        # The admin listener starts last, once per worker.
        await served.wait_for(
            lambda record: len(served.admin_listeners()) >= workers,
            timeout=START_TIMEOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(upstream_port):
            assert upstream.poll() is None, "the demo upstream exited"
            assert time.monotonic() < deadline, "the demo upstream did not start"
            await asyncio.sleep(0.05)
    except BaseException:
        await served.close()
        raise
    return served


def http_request(port: int, path: str, *, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
        f"Connection: {connection}\r\n\r\n"
    ).encode("ascii")


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """Read one response framed by Content-Length; return status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a body")
        body += chunk
    return int(lines[0].split()[1]), body


def accepts(port: int) -> bool:
    """Tell whether a TCP connection to the loopback port succeeds."""
    return _accepts(port)


async def start_served_peer(first: ServedGateway, folder: Path) -> ServedGateway:
    """Start a second ``serve`` process of ``first``'s deployment in ``folder``.

    It shares the database, Redis, keys, tenants and client certificates,
    and has its own server certificate, port and demo upstream.
    """
    folder.mkdir()
    return await start_served(first.harness.peer(folder))


async def run_cli(served: ServedGateway, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sso-gateway ARGS --config`` on ``served``'s files, as an operator."""
    config = served.harness.folder / "gateway.yaml"
    command = [sys.executable, "-m", "gateway", *args, "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        cwd=served.harness.folder,
        timeout=60,
    )


async def logged_in(served: ServedGateway) -> aiohttp.ClientSession:
    await served.harness.add_link("noord", "ysis-jan", "medimo-jan")
    client = served.client("noord")
    response = await launch(client, "noord", userId="ysis-jan")
    assert response.status == 303
    return client


async def fetch(client: aiohttp.ClientSession, path: str) -> tuple[int, bytes]:
    async with client.get(path) as response:
        return response.status, await response.read()


async def in_flight(
    served: ServedGateway, path: str
) -> asyncio.Task[tuple[int, bytes]]:
    """Start a proxied request and return once the gateway is handling it."""
    client = await logged_in(served)
    task = asyncio.create_task(fetch(client, path))
    deadline = time.monotonic() + POLL_TIMEOUT
    while await served.metric("sso_gateway_requests_in_progress") != 1:
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the request never reached the gateway"
        await asyncio.sleep(0.05)
    return task


async def assert_cut_off(task: asyncio.Task[tuple[int, bytes]]) -> None:
    """Check that a request cancelled by the stop got no response."""
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert isinstance(outcome, aiohttp.ClientError), outcome
