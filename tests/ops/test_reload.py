"""Reloading ``sso-gateway serve`` on SIGHUP and on changed files.

Each test edits the files that the harness wrote, the way an operator
would, and reads the outcome from the gateway's log, its /metrics and what
clients see.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.demo.upstream import STREAM_CHUNK_SIZE, stream_chunk
from gateway.proxy_protocol import V2_SIGNATURE
from tests.middleware.test_pins import write_crl
from tests.ops.conftest import WATCHING, StartServed
from tests.support.harness import launch
from tests.support.served import ServedGateway, http_request, read_response
from tests.test_haproxy import launch_from

#: Chunks of each streamed response: about two seconds of /demo/stream.
CHUNKS = 150


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def tenants_path(served: ServedGateway) -> Path:
    return served.harness.folder / "tenants.yaml"


def gateway_path(served: ServedGateway) -> Path:
    return served.harness.folder / "gateway.yaml"


async def reload_by_signal(served: ServedGateway) -> dict[str, Any]:
    """Send SIGHUP and return the log record of the reload's outcome."""
    mark = served.mark()
    served.send_signal(signal.SIGHUP)
    return await served.wait_for(
        lambda record: (
            record.get("event") in ("config_reloaded", "config_reload_failed")
        ),
        after=mark,
    )


async def logged_in(
    served: ServedGateway, tenant: str, user: str
) -> aiohttp.ClientSession:
    await served.harness.add_link(tenant, user, f"medimo-{user}")
    client = served.client(tenant)
    response = await launch(client, tenant, userId=user)
    assert response.status == 303
    return client


async def status_of(client: aiohttp.ClientSession, path: str) -> int:
    async with client.get(path) as response:
        await response.read()
        return response.status


async def stream(client: aiohttp.ClientSession) -> bytes:
    async with client.get(f"/demo/stream?chunks={CHUNKS}") as response:
        assert response.status == 200
        return await response.read()


def peer_fingerprint(served: ServedGateway) -> str:
    with served.tls_socket() as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


# --- requests during reloads --------------------------------------------------


async def test_reload_keeps_streams_running(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    streams = [asyncio.create_task(stream(client)) for _ in range(4)]
    statuses: list[int] = []

    async def short_requests() -> None:
        while not all(task.done() for task in streams):
            statuses.append(await status_of(client, "/whoami"))

    requests = asyncio.create_task(short_requests())
    outcomes = []
    for index in range(3):
        edit_yaml(
            tenants_path(served),
            lambda data: data["tenants"][1].update(display_name=f"Zuid {index}"),
        )
        outcomes.append(await reload_by_signal(served))
    bodies = await asyncio.gather(*streams)
    await requests

    assert [record["event"] for record in outcomes] == ["config_reloaded"] * 3
    expected = b"".join(stream_chunk(index) for index in range(CHUNKS))
    assert all(len(body) == CHUNKS * STREAM_CHUNK_SIZE for body in bodies)
    assert all(body == expected for body in bodies)
    assert statuses
    assert set(statuses) == {200}


async def test_reload_changes_config_hash(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    (started,) = served.events("started")
    edit_yaml(
        tenants_path(served), lambda data: data["tenants"][1].update(display_name="Z")
    )

    record = await reload_by_signal(served)

    assert record["event"] == "config_reloaded"
    assert record["trigger"] == "SIGHUP"
    assert record["config_hash"] != started["config_hash"]
    assert (
        await served.metric("sso_gateway_config_reloads_total", result="success") == 1
    )
    assert (
        await served.metric("sso_gateway_config_info", hash=record["config_hash"]) == 1
    )


async def test_file_change_triggers_reload(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides=WATCHING)
    mark = served.mark()

    edit_yaml(
        tenants_path(served), lambda data: data["tenants"][1].update(display_name="Z")
    )
    record = await served.wait_for_event("config_reloaded", after=mark)

    assert record["trigger"] == "file change"


async def test_certificate_file_change_triggers_reload(
    serve_gateway: StartServed,
) -> None:
    served = await serve_gateway(gateway_overrides=WATCHING)
    before = peer_fingerprint(served)
    mark = served.mark()

    harness = served.harness
    rotated = harness.ca.issue_cert("localhost", "127.0.0.1", "::1")
    harness.pem("server-key.pem", rotated.private_key_pem)
    harness.pem("server.pem", rotated.cert_chain_pems[0])
    record = await served.wait_for_event("config_reloaded", after=mark)

    assert record["trigger"] == "file change"
    assert peer_fingerprint(served) != before


# --- what a reload changes ----------------------------------------------------


async def test_reload_rotates_server_certificate(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    port = served.port
    open_connection = await asyncio.to_thread(served.tls_socket)
    try:
        open_connection.sendall(http_request(port, "/sso/afgemeld"))
        assert (await asyncio.to_thread(read_response, open_connection))[0] == 200
        old_der = open_connection.getpeercert(binary_form=True)
        harness = served.harness
        rotated = harness.ca.issue_cert("localhost", "127.0.0.1", "::1")
        harness.pem("server.pem", rotated.cert_chain_pems[0])
        harness.pem("server-key.pem", rotated.private_key_pem)

        assert (await reload_by_signal(served))["event"] == "config_reloaded"
        new_fingerprint = peer_fingerprint(served)
        open_connection.sendall(http_request(port, "/sso/afgemeld"))
        status, _ = await asyncio.to_thread(read_response, open_connection)
    finally:
        open_connection.close()

    assert old_der is not None
    assert new_fingerprint != hashlib.sha256(old_der).hexdigest()
    rotated_der = rotated.cert_chain_pems[0].bytes()
    assert new_fingerprint == hashlib.sha256(pem_to_der(rotated_der)).hexdigest()
    assert status == 200


def pem_to_der(pem: bytes) -> bytes:
    import ssl

    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


def remove_noord(data: dict[str, Any]) -> None:
    data["tenants"] = [
        tenant for tenant in data["tenants"] if tenant["name"] != "noord"
    ]


async def test_removed_tenant_session_refused(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    await served.harness.add_link("noord", "jan", "medimo-jan")
    # A browser's open keep-alive connection passed its handshake before the
    # reload, so only the session check can refuse the cookie on it.
    client = served.client("noord", keepalive=True)
    assert (await launch(client, "noord", userId="jan")).status == 303
    assert await status_of(client, "/whoami") == 200
    edit_yaml(tenants_path(served), remove_noord)

    record = await reload_by_signal(served)
    status = await status_of(client, "/whoami")

    assert record["event"] == "config_reloaded"
    assert record["tenants"] == 1
    assert status == 401
    (refusal,) = served.events("tenant_removed")
    assert refusal["tenant"] == "noord"


async def test_restored_tenant_session_stays_refused(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    original = tenants_path(served).read_text()
    edit_yaml(tenants_path(served), remove_noord)
    await reload_by_signal(served)
    await served.wait_for_event("tenant_sessions_revoked")
    tenants_path(served).write_text(original)

    record = await reload_by_signal(served)
    old_cookie = await status_of(client, "/whoami")
    relaunched = await launch(client, "noord", userId="jan")

    assert record["tenants"] == 2
    assert old_cookie == 401
    assert relaunched.status == 303
    assert await status_of(client, "/whoami") == 200


async def test_longer_lifetime_keeps_revocations(serve_gateway: StartServed) -> None:
    served = await serve_gateway(
        gateway_overrides={
            "session": {"lifetime": "2s", "idle_timeout": "2s"},
            # Each purge drops the expired revocations from memory.
            "revocations": {"purge_interval": "500ms"},
        }
    )
    client = await logged_in(served, "noord", "jan")
    cookie = next(c.value for c in client.cookie_jar if c.key == "__Host-sso_session")
    edit_yaml(
        gateway_path(served),
        lambda data: data["session"].update(lifetime="1m", idle_timeout="1m"),
    )
    await reload_by_signal(served)
    copy = served.client("noord")
    copy.cookie_jar.update_cookies({"__Host-sso_session": cookie})
    async with client.post(
        "/sso/logout", headers={"Origin": served.base_url}, allow_redirects=False
    ) as response:
        assert response.status == 303

    # Past the old lifetime, within the new one: the revocation still holds.
    await asyncio.sleep(2.5)

    assert await status_of(copy, "/whoami") == 401


async def test_removed_tenant_handshake_fails(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    edit_yaml(tenants_path(served), remove_noord)

    await reload_by_signal(served)
    try:
        await status_of(client, "/whoami")
    except aiohttp.ClientError as error:
        outcome: BaseException | None = error
    else:
        outcome = None

    assert isinstance(outcome, aiohttp.ClientSSLError | aiohttp.ClientOSError), outcome
    assert "unknown ca" in str(outcome)


async def test_reload_applies_new_crl(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    assert await status_of(client, "/whoami") == 200
    harness = served.harness
    write_crl(harness.ca, harness.client_certs["noord"], harness.folder / "noord.crl")
    edit_yaml(
        tenants_path(served),
        lambda data: data["tenants"][0].update(crl_file="noord.crl"),
    )

    record = await reload_by_signal(served)
    status = await status_of(client, "/whoami")

    assert record["event"] == "config_reloaded"
    assert status == 403
    (refusal,) = served.events("certificate_revoked")
    assert refusal["tenant"] == "noord"


async def test_reload_keeps_restart_settings(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    port = served.port
    mark = served.mark()
    edit_yaml(gateway_path(served), lambda data: data["listen"].update(port=port + 1))

    record = await reload_by_signal(served)

    assert record["event"] == "config_reloaded"
    (warning,) = [
        line
        for line in served.records()[mark:]
        if line.get("event") == "config_restart_required"
    ]
    assert warning["key"] == "listen.port"
    assert "restart to apply" in warning["message"]
    assert warning["level"] == "warning"
    assert peer_fingerprint(served)


async def test_reload_applies_balancers(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides={"balancers": ["127.0.0.1/32"]})
    await served.harness.add_link("noord", "ysis-jan", "medimo-jan")
    cert = served.harness.client_certs["noord"]
    header = V2_SIGNATURE + b"\x20\x00\x00\x00"
    before = await asyncio.to_thread(launch_from, "127.0.0.1", served.port, served, cert, header)
    edit_yaml(gateway_path(served), lambda data: data.update(balancers=[]))
    mark = served.mark()

    record = await reload_by_signal(served)
    with_header = await asyncio.to_thread(launch_from, "127.0.0.1", served.port, served, cert, header)
    without = await asyncio.to_thread(launch_from, "127.0.0.1", served.port, served, cert)

    assert before == ([303], None)
    assert record["event"] == "config_reloaded"
    assert not [r for r in served.records()[mark:] if r.get("event") == "config_restart_required"]
    # A former balancer can no longer name the client's address.
    assert with_header[0] == []
    assert with_header[1] is not None
    assert without == ([303], None)


# --- a broken file ------------------------------------------------------------


async def test_broken_file_keeps_config(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    (started,) = served.events("started")
    edit_yaml(
        tenants_path(served),
        lambda data: data["tenants"][0].update(allowed_ips=["10.0.0.1"]),
    )

    record = await reload_by_signal(served)

    assert record["event"] == "config_reload_failed"
    assert await status_of(client, "/whoami") == 200
    assert (
        await served.metric("sso_gateway_config_info", hash=started["config_hash"]) == 1
    )


def _deep_nesting(served: ServedGateway) -> None:
    tenants_path(served).write_text("tenants: " + "[" * 3000 + "]" * 3000 + "\n")


def _unknown_home(served: ServedGateway) -> None:
    edit_yaml(
        tenants_path(served),
        lambda data: data["tenants"][0].update(certificates=["~nosuchuser/ca.pem"]),
    )


def _nul_in_secret_path(served: ServedGateway) -> None:
    edit_yaml(
        gateway_path(served),
        lambda data: data["upstream"].update(api_token={"file": "secrets/api-token\0"}),
    )


def _empty_tenants(served: ServedGateway) -> None:
    tenants_path(served).write_text("")


def _huge_integer(served: ServedGateway) -> None:
    path = tenants_path(served)
    path.write_text(path.read_text() + "extra: " + "9" * 5000 + "\n")


def _fifo_as_crl(served: ServedGateway) -> None:
    fifo = served.harness.folder / "crl.fifo"
    os.mkfifo(fifo)
    edit_yaml(tenants_path(served), lambda data: data["tenants"][0].update(crl_file=str(fifo)))


HOSTILE_EDITS = [
    pytest.param(_deep_nesting, id="deep-nesting"),
    pytest.param(_huge_integer, id="huge-integer"),
    pytest.param(_fifo_as_crl, id="fifo-as-crl"),
    pytest.param(_unknown_home, id="unknown-home-folder"),
    pytest.param(_nul_in_secret_path, id="nul-in-secret-path"),
    pytest.param(_empty_tenants, id="empty-tenants-file"),
]


@pytest.mark.parametrize("hostile", HOSTILE_EDITS)
async def test_hostile_file_keeps_reloading(
    serve_gateway: StartServed, hostile: Any
) -> None:
    served = await serve_gateway()
    client = await logged_in(served, "noord", "jan")
    original = tenants_path(served).read_text(), gateway_path(served).read_text()
    hostile(served)

    failed = await reload_by_signal(served)
    still = await status_of(client, "/whoami")
    tenants_path(served).write_text(original[0])
    gateway_path(served).write_text(original[1])
    edit_yaml(tenants_path(served), lambda data: data["tenants"].pop(1))
    applied = await reload_by_signal(served)

    assert failed["event"] == "config_reload_failed"
    assert still == 200
    # The reloader survived the bad file, so the next good one is in force.
    assert applied["event"] == "config_reloaded"
    assert applied["tenants"] == 1


async def test_parent_survives_hostile_sighup(serve_gateway: StartServed) -> None:
    served = await serve_gateway(workers=2)
    original = tenants_path(served).read_text()
    _huge_integer(served)
    mark = served.mark()

    served.send_signal(signal.SIGHUP)
    await served.wait_for_event("supervisor_reload_failed", after=mark)
    tenants_path(served).write_text(original)
    edit_yaml(tenants_path(served), lambda data: data["tenants"].pop(1))
    mark = served.mark()
    served.send_signal(signal.SIGHUP)
    applied = await served.wait_for_event("config_reloaded", after=mark)

    assert served.process.poll() is None
    assert applied["tenants"] == 1


async def test_new_watch_interval_applies_at_once(serve_gateway: StartServed) -> None:
    served = await serve_gateway(gateway_overrides=WATCHING)
    edit_yaml(gateway_path(served), lambda data: data.update(config_watch_interval="10d"))
    await served.wait_for_event("config_reloaded")
    edit_yaml(gateway_path(served), lambda data: data.update(config_watch_interval="200ms"))
    await reload_by_signal(served)
    mark = served.mark()

    edit_yaml(tenants_path(served), lambda data: data["tenants"].pop(1))
    applied = await served.wait_for_event("config_reloaded", after=mark, timeout=5)

    assert applied["trigger"] == "file change"


@pytest.mark.parametrize("workers", [1, 2])
async def test_watch_survives_hostile_file(
    serve_gateway: StartServed, workers: int
) -> None:
    served = await serve_gateway(workers=workers, gateway_overrides=WATCHING)
    original = tenants_path(served).read_text()
    mark = served.mark()

    _unknown_home(served)
    await served.wait_for_event("config_reload_failed", after=mark)
    _deep_nesting(served)
    await asyncio.sleep(1.0)
    tenants_path(served).write_text(original)
    edit_yaml(tenants_path(served), lambda data: data["tenants"].pop(1))
    applied = await served.wait_for_event("config_reloaded", after=mark)

    assert served.process.poll() is None
    assert applied["tenants"] == 1


async def test_broken_file_logs_problems(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    mark = served.mark()
    edit_yaml(
        tenants_path(served),
        lambda data: data["tenants"][0].update(allowed_ips=["10.0.0.1"], views=["x"]),
    )
    command = ["check-config", "--config", str(gateway_path(served))]
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [
        line
        for line in checked.stdout.splitlines()
        if ": " in line and ": warning: " not in line and "error(s)" not in line
    ]

    record = await reload_by_signal(served)

    assert record["errors"] == 2
    logged = [
        line["message"]
        for line in served.records()[mark:]
        if line.get("event") == "config_problem"
    ]
    assert len(errors) == 2
    assert logged == errors
    assert all(line["level"] == "error" for line in served.events("config_problem"))


async def test_broken_file_counted_as_failure(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    edit_yaml(tenants_path(served), lambda data: data["tenants"][0].update(views=["x"]))

    await reload_by_signal(served)

    assert (
        await served.metric("sso_gateway_config_reloads_total", result="failure") == 1
    )
    assert (
        await served.metric("sso_gateway_config_reloads_total", result="success") == 0
    )
    assert await served.metric("sso_gateway_config_last_reload_success") == 0


async def test_mismatched_key_keeps_certificate(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    before = peer_fingerprint(served)
    other = served.harness.ca.issue_cert("localhost")
    served.harness.pem("server-key.pem", other.private_key_pem)
    mark = served.mark()

    record = await reload_by_signal(served)

    assert record["event"] == "config_reload_failed"
    (problem,) = [
        line
        for line in served.records()[mark:]
        if line.get("event") == "config_problem"
    ]
    assert "tls" in problem["message"]
    assert "the key belongs to the certificate" in problem["message"]
    assert peer_fingerprint(served) == before


async def test_failed_reload_logs_no_secret(serve_gateway: StartServed) -> None:
    served = await serve_gateway()
    harness = served.harness
    short_key = "too-short-for-a-session-key"
    (harness.folder / "secrets" / "session-key-0").write_text(short_key)

    record = await reload_by_signal(served)

    assert record["event"] == "config_reload_failed"
    (problem,) = served.events("config_problem")
    assert "session-key-0" in problem["message"]
    log = served.log_text()
    assert short_key not in log
    assert harness.api_token not in log
    assert harness.signing_key.decode() not in log
    for key in harness.session_keys:
        assert key.decode() not in log
