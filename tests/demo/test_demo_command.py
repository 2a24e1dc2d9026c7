"""``sso-gateway demo`` as a new user runs it: a subprocess in an empty folder."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.support.services import free_port

CERT_FILES = [
    "ca.pem",
    "server.pem",
    "server-key.pem",
    "demo-noord-client.pem",
    "demo-noord-client-key.pem",
    "demo-zuid-client.pem",
    "demo-zuid-client-key.pem",
]


class Demo:
    def __init__(self, folder: Path, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.folder = folder
        self.process = process
        self.url = url
        self.log = log

    def context(self, tenant: str) -> ssl.SSLContext:
        certs = self.folder / "certs"
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(certs / f"{tenant}-client.pem", certs / f"{tenant}-client-key.pem")
        return context


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    folder = tmp_path / "demo"
    log = tmp_path / "demo.log"
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "demo", "--dir", str(folder), "--port", str(free_port())],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            text=True,
        )
    try:
        deadline = time.monotonic() + 40
        while not (match := re.search(r"^ready: (\S+)$", log.read_text(), re.M)):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Demo(folder, process, match.group(1), log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_port(demo: Demo) -> int:
    match = re.search(r"redis://127\.0\.0\.1:(\d+)/", (demo.folder / "gateway.yaml").read_text())
    assert match is not None
    return int(match.group(1))


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


async def test_demo_writes_certificates(demo: Demo) -> None:
    certs = demo.folder / "certs"
    assert set(CERT_FILES) <= {path.name for path in certs.glob("*.pem")}
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    for name in ("server.pem", "demo-noord-client.pem", "demo-zuid-client.pem"):
        x509.load_pem_x509_certificate((certs / name).read_bytes()).verify_directly_issued_by(ca)
    assert (demo.folder / "gateway.yaml").exists()
    assert (demo.folder / "tenants.yaml").exists()


async def test_demo_prints_curl_and_ready(demo: Demo) -> None:
    text = demo.log.read_text()
    assert "curl --cacert" in text
    assert "demo-noord-client.pem" in text
    assert demo.url.startswith("https://localhost:")


async def test_demo_check_config_from_elsewhere(demo: Demo) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(demo.folder / "gateway.yaml")],
        capture_output=True, text=True, cwd="/",
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_demo_tenants_pin_own_certificates(demo: Demo) -> None:
    text = (demo.folder / "tenants.yaml").read_text()
    assert "127.0.0.1/32" in text
    assert "::1/128" in text
    assert "demo-noord-client.pem" in text
    assert "demo-zuid-client.pem" in text


async def test_demo_linked_launch(demo: Demo) -> None:
    connector = aiohttp.TCPConnector(ssl=demo.context("demo-noord"))
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(f"{demo.url}/sso/ysis/demo-noord?userId=ysis-jan") as landing:
            assert landing.status == 200
        async with client.get(f"{demo.url}/whoami") as response:
            identity = await response.json()
    assert identity["X-Medimo-Account"] == "medimo-jan"


async def test_demo_stops_on_sigterm(demo: Demo) -> None:
    port = redis_port(demo)
    assert accepts(port)

    started = time.monotonic()
    demo.process.send_signal(signal.SIGTERM)
    code = demo.process.wait(10)

    assert code == 0
    assert time.monotonic() - started < 5
    assert not accepts(port)


async def test_demo_stops_on_sighup(demo: Demo) -> None:
    port = redis_port(demo)

    demo.process.send_signal(signal.SIGHUP)
    code = demo.process.wait(10)

    assert code == 0
    assert not accepts(port)


async def test_demo_killed_stops_redis(demo: Demo) -> None:
    port = redis_port(demo)

    demo.process.kill()
    demo.process.wait(10)

    deadline = time.monotonic() + 5
    while accepts(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not accepts(port)


def test_demo_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}

        result = subprocess.run(
            [sys.executable, "-m", "gateway", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
        )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: cannot listen on https://127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
