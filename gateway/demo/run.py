"""``sso-gateway demo``: the whole gateway on one machine, in one folder.

The demo creates (once) a development CA with server and client certificates,
secret files and a SQLite database in its folder, writes ``gateway.yaml`` and
``tenants.yaml`` there, starts the demo upstream, a private ``redis-server``
unless ``REDIS_URL`` is set, and the gateway, then waits for SIGTERM or
Ctrl-C and stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from gateway import logs
from gateway.config.loader import load_config
from gateway.demo import upstream
from gateway.demo.certs import DevelopmentCA
from gateway.errors import ConfigError, LinkConflict, ListenError
from gateway.storage.database import upgrade

TENANTS = ("demo-noord", "demo-zuid")

#: prctl(2) option that sets the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1

#: Links the demo starts with: (tenant, Ysis user, Medimo account).
SEED_LINKS = (
    ("demo-noord", "ysis-jan", "medimo-jan"),
    ("demo-zuid", "ysis-anna", "medimo-anna"),
)

GATEWAY_YAML = """\
# Written by 'sso-gateway demo'; rewritten on every start of the demo.
listen:
  host: [{hosts}]
  port: {port}
admin:
  port: {admin_port}
tls:
  certificate: certs/server.pem
  private_key: certs/server-key.pem
public_hostnames: [localhost, 127.0.0.1, "::1"]
upstream:
  url: http://127.0.0.1:{upstream_port}
  api_token: {{file: secrets/api-token}}
redis:
  url: {redis_url}
database:
  url: sqlite+aiosqlite:///{database}
session:
  keys:
    - {{file: secrets/session-key}}
upstream_signing_keys:
  - {{file: secrets/upstream-signing-key}}
"""

TENANTS_YAML = """\
# Written by 'sso-gateway demo'; rewritten on every start of the demo.
tenants:
  - name: demo-noord
    display_name: Demo Zorggroep Noord
    method: ysis
    certificates: [certs/demo-noord-client.pem]
    allowed_ips: [127.0.0.1/32, "::1/128"]

  - name: demo-zuid
    display_name: Demo Zorggroep Zuid
    method: ysis
    certificates: [certs/demo-zuid-client.pem]
    allowed_ips: [127.0.0.1/32, "::1/128"]
    confirm_password: true
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _secret_file(path: Path) -> None:
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)


def prepare(folder: Path) -> None:
    """Create the certificates and secrets the demo needs, keeping existing ones."""
    certs = folder / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = DevelopmentCA(certs)
    ca.issue("server", "localhost", server=True)
    for tenant in TENANTS:
        ca.issue(f"{tenant}-client", f"{tenant}.ysis.example", server=False)
    secret_dir = folder / "secrets"
    secret_dir.mkdir(exist_ok=True)
    secret_dir.chmod(0o700)
    for name in ("api-token", "session-key", "upstream-signing-key"):
        _secret_file(secret_dir / name)


def stop_with_parent() -> None:
    """Have Linux send SIGTERM to this process when its parent dies.

    Run in a child between fork and exec (``preexec_fn``), so that a private
    redis-server also ends when the demo is killed with SIGKILL. Elsewhere
    than Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        # The parent died before prctl took effect.
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """Yield ``REDIS_URL``, or the URL of a redis-server started for the demo."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed and REDIS_URL is not set")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=stop_with_parent,
    )
    try:
        _wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"redis-server exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        time.sleep(0.05)
    raise SystemExit("redis-server did not start within 10 seconds")


async def _seed_links(database_url: str) -> None:
    from gateway.links.sql import SqlLinkStore
    from gateway.storage.database import create_engine

    engine = create_engine(database_url)
    try:
        store = SqlLinkStore(engine)
        for tenant, ysis_user, account in SEED_LINKS:
            with contextlib.suppress(LinkConflict):
                await store.add(tenant, ysis_user, account, "demo")
    finally:
        await engine.dispose()


async def _run(folder: Path, port: int, redis_url: str) -> int:
    from gateway.serve import start

    upstream_port = _free_port()
    hosts = ["127.0.0.1", '"::1"'] if _ipv6_loopback() else ["127.0.0.1"]
    database = folder / "gateway.db"
    (folder / "gateway.yaml").write_text(
        GATEWAY_YAML.format(
            hosts=", ".join(hosts), port=port, upstream_port=upstream_port,
            admin_port=_free_port(),
            redis_url=redis_url, database=database,
        )
    )
    (folder / "tenants.yaml").write_text(TENANTS_YAML)
    try:
        config = load_config(folder / "gateway.yaml")
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2

    database_url = config.gateway.database.url
    await asyncio.to_thread(upgrade, database_url)
    await _seed_links(database_url)

    secrets_dir = folder / "secrets"
    upstream_app = upstream.create_app(
        api_token=(secrets_dir / "api-token").read_text().strip(),
        signing_keys=[(secrets_dir / "upstream-signing-key").read_text().strip().encode()],
    )
    upstream_runner = web.AppRunner(upstream_app, access_log=None)
    await upstream_runner.setup()
    await web.TCPSite(upstream_runner, "127.0.0.1", upstream_port).start()
    try:
        gateway = await start(config)
    except ListenError as exc:
        await upstream_runner.cleanup()
        print(f"error: {exc} with --port", file=sys.stderr)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP is what a closed terminal sends; the demo stops then too.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    _print_welcome(folder, gateway.port, gateway.admin_port)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        await upstream_runner.cleanup()
    return 0


def _print_welcome(folder: Path, port: int, admin_port: int | None) -> None:
    certs = folder / "certs"
    jar = folder / "cookies.txt"
    url = f"https://localhost:{port}"
    print(
        "\nDemo gateway running. Launch as Ysis user ysis-jan of demo-noord:\n\n"
        f"  curl --cacert {certs}/ca.pem --cert {certs}/demo-noord-client.pem "
        f"--key {certs}/demo-noord-client-key.pem -c {jar} -b {jar} -L "
        f"'{url}/sso/ysis/demo-noord?userId=ysis-jan'\n",
        flush=True,
    )
    if admin_port is not None:
        print(
            f"Health and metrics: http://127.0.0.1:{admin_port}/readyz and /metrics\n",
            flush=True,
        )
    print(f"ready: {url}", flush=True)


def run_demo(folder: Path, port: int, *, prepare_only: bool = False) -> int:
    folder = folder.expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    logs.configure("info")
    prepare(folder)
    if prepare_only:
        print(f"certificates and secrets are in {folder}", flush=True)
        return 0
    with private_redis(folder) as redis_url:
        return asyncio.run(_run(folder, port, redis_url))
