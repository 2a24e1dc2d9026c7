"""Real services for the test suite: private redis-server processes and
throwaway PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from gateway.demo.run import stop_with_parent

#: Server that holds the throwaway databases; CI and developer machines run one.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process on a free loopback port that a test may stop."""

    def __init__(self, folder: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.port = free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, binary: str) -> list[str]:
        """Return the command line that starts this server."""
        return [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            *self.extra_args,
        ]

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            self.command(binary),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=stop_with_parent,
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        """Freeze the server: connections stay open, but no reply comes."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), 2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)

    def subscribers(self, channel: str) -> int:
        """Return how many clients subscribe to ``channel`` (PUBSUB NUMSUB)."""
        with socket.create_connection(("127.0.0.1", self.port), 2) as sock:
            sock.sendall(f"PUBSUB NUMSUB {channel}\r\n".encode())
            reply = b""
            # The reply is "*2", "$<length>", the channel and ":<count>".
            while reply.count(b"\r\n") < 4:
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                reply += chunk
        return int(reply.split(b"\r\n")[3].removeprefix(b":"))


class SentinelServer(RedisServer):
    """A redis-server in Sentinel mode that monitors one master as ``service``."""

    def __init__(self, folder: Path, master: RedisServer, service: str) -> None:
        super().__init__(folder)
        self.master = master
        self.service = service

    def command(self, binary: str) -> list[str]:
        # Sentinel rewrites its configuration file, so it gets one of its own.
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndir {self.folder}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 500\n"
            f"sentinel failover-timeout {self.service} 2000\n"
        )
        return [binary, str(config), "--sentinel"]


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def refuse_connections(url: str, refuse: bool) -> None:
    """Make a test database refuse new connections and end its open ones, or undo it."""
    name = url.rsplit("/", 1)[1]
    allowed = "false" if refuse else "true"
    await _admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {allowed}')
    if refuse:
        await _admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, then drop it."""
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    base = base.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
