"""``sso-gateway serve --workers 2``: two processes on one port.

Each probe requests a unique path below ``/gateway-api/``, which the gateway
answers itself with 404, so the access log line with that path names the
PID of the worker that handled the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass

from gateway.workers import KILL_GRACE
from tests.ops.conftest import StartServed
from tests.support.served import (
    SLOW_UPSTREAM,
    STOP_MARGIN,
    ServedGateway,
    assert_cut_off,
    http_request,
    in_flight,
)

#: Connections a test opens at most while it waits for the other worker.
MAX_PROBES = 60

_probe_numbers = itertools.count()


@dataclass
class Probe:
    """One connection: the worker that handled it and whether it resumed."""

    pid: int
    resumed: bool
    session: ssl.SSLSession | None


def worker_pids(served: ServedGateway) -> set[int]:
    return {int(record["worker_pid"]) for record in served.events("worker_started")}


def _connect(
    served: ServedGateway, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[str, bool, ssl.SSLSession | None]:
    path = f"/gateway-api/probe-{next(_probe_numbers)}"
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
        tls.sendall(http_request(served.port, path, close=True))
        while tls.recv(65536):
            continue
        # Read after the response, so that TLS 1.3 tickets have arrived.
        return path, tls.session_reused, tls.session


async def probe(
    served: ServedGateway,
    context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
) -> Probe:
    """Open one connection, send one request, and find the worker's PID."""
    path, resumed, new_session = await asyncio.to_thread(
        _connect, served, context, session
    )
    record = await served.wait_for(lambda line: line.get("path") == path)
    return Probe(int(record["pid"]), resumed, new_session)


async def probe_other_worker(
    served: ServedGateway, context: ssl.SSLContext, first: Probe
) -> Probe:
    """Resume ``first``'s session until a connection lands on another worker."""
    for _ in range(MAX_PROBES):
        found = await probe(served, context, first.session)
        if found.pid != first.pid:
            return found
    raise AssertionError(f"every connection went to worker {first.pid}")


def client_context(served: ServedGateway) -> ssl.SSLContext:
    # One context for every connection: Python resumes a session only with
    # the client context that made it.
    return served.harness.ssl_context()


async def test_workers_both_serve(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    context = client_context(served)
    seen: set[int] = set()

    for _ in range(MAX_PROBES):
        seen.add((await probe(served, context)).pid)
        if len(seen) == 2:
            break

    assert len(worker_pids(served)) == 2
    assert seen == worker_pids(served)
    assert os.getpid() not in seen


async def test_session_resumes_on_other_worker(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    context = client_context(served)
    first = await probe(served, context)

    other = await probe_other_worker(served, context, first)

    assert first.session is not None
    assert not first.resumed
    assert other.pid != first.pid
    assert other.resumed


async def test_session_resumes_after_reload(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    mark = served.mark()
    served.send_signal(signal.SIGHUP)
    for _ in range(2):
        await served.wait_for(
            lambda line: (
                line.get("event") == "config_reloaded"
                and len(served.events("config_reloaded")) == 2
            ),
            after=mark,
        )
    context = client_context(served)
    first = await probe(served, context)

    other = await probe_other_worker(served, context, first)

    assert other.pid != first.pid
    assert other.resumed


async def test_sighup_reloads_every_worker(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)

    served.send_signal(signal.SIGHUP)
    await served.wait_for(lambda line: len(served.events("config_reloaded")) == 2)

    reloaded = {int(record["pid"]) for record in served.events("config_reloaded")}
    assert reloaded == worker_pids(served)
    assert {record["trigger"] for record in served.events("config_reloaded")} == {"parent"}
    (passed_on,) = served.events("workers_reload")
    assert passed_on["trigger"] == "SIGHUP"


async def test_killed_worker_restarts(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    victim = min(worker_pids(served))
    mark = served.mark()

    os.kill(victim, signal.SIGKILL)
    ended = await served.wait_for_event("worker_ended", after=mark)
    started = await served.wait_for_event("worker_started", after=mark)
    await served.wait_for(lambda line: len(served.admin_listeners()) == 3, after=mark)

    assert ended["worker_pid"] == victim
    assert ended["exit_code"] == -signal.SIGKILL
    assert started["worker"] == ended["worker"]
    assert started["worker_pid"] != victim
    context = client_context(served)
    seen = set()
    for _ in range(MAX_PROBES):
        seen.add((await probe(served, context)).pid)
        if started["worker_pid"] in seen:
            break
    assert started["worker_pid"] in seen
    assert victim not in seen


async def test_metrics_add_up_workers(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    context = client_context(served)
    pids: list[int] = []
    while len(set(pids)) < 2 and len(pids) < MAX_PROBES:
        pids.append((await probe(served, context)).pid)

    total = await served.metric(
        "sso_gateway_requests_total", route="other", status="404"
    )

    assert len(set(pids)) == 2, "the probes all went to one worker"
    assert total == len(pids)


async def test_workers_sigterm_exits_zero(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)

    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(15)

    assert code == 0
    stopped = {int(record["pid"]) for record in served.events("stopped")}
    assert stopped == worker_pids(served)
    (summary,) = served.events("workers_stopped")
    assert summary["killed"] == 0


async def test_stuck_worker_killed(serve_gateway: StartServed) -> None:
    served = await serve_gateway(
        workers=2, gateway_overrides={"shutdown_timeout": "500ms"}
    )
    stuck = min(worker_pids(served))
    os.kill(stuck, signal.SIGSTOP)

    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(KILL_GRACE + 5)

    assert code == 1
    (summary,) = served.events("workers_stopped")
    assert summary["killed"] == 1
    stopped = {int(record["pid"]) for record in served.events("stopped")}
    assert stopped == worker_pids(served) - {stuck}


async def test_workers_cancel_slow_request(serve_gateway: StartServed) -> None:
    # A worker that let aiohttp 3.14 wait out the timeout twice (12 s) would
    # also outlast shutdown_timeout plus a kill grace of 5 s.
    timeout = 6.0
    served = await serve_gateway(
        workers=2,
        gateway_overrides={**SLOW_UPSTREAM, "shutdown_timeout": f"{timeout:g}s"},
    )
    task = await in_flight(served, "/demo/slow?seconds=30")

    started = time.monotonic()
    served.send_signal(signal.SIGTERM)
    code = await served.wait_exit(timeout + KILL_GRACE + 10)
    elapsed = time.monotonic() - started

    assert code == 0, served.log_tail()
    assert elapsed < timeout + STOP_MARGIN
    (summary,) = served.events("workers_stopped")
    assert summary["killed"] == 0
    stopped = served.events("stopped")
    assert {int(record["pid"]) for record in stopped} == worker_pids(served)
    assert sum(record["requests_cancelled"] for record in stopped) == 1
    assert all(record["seconds"] < timeout + STOP_MARGIN for record in stopped)
    await assert_cut_off(task)
