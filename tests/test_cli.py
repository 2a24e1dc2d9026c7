"""The sso-gateway command line, run as a subprocess from an unrelated folder.

The configurations come from ``GatewayHarness.write_config``, the files a
running test gateway uses, so paths inside them are relative to their folder.
The links commands run against SQLite and a real redis-server.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis
import trustme
from alembic.command import upgrade as command_upgrade
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text as sql_text

from gateway.config.loader import load_config
from gateway.links.cache import NOT_FOUND_MARKER, link_key
from gateway.ssolog.entry import Entry
from gateway.ssolog.store import SqlSsoLog
from gateway.storage.database import alembic_config, create_engine
from gateway.storage.revocations import Revocation, SqlRevocationStore
from tests.support.harness import GatewayHarness, cookie_status, launch, whoami
from tests.support.pair import (
    PUBSUB_LIMIT,
    MakeGateway,
    cookie_of,
    logged_in,
    refused_within,
    start_pair,
)
from tests.support.services import RedisServer, free_port


def command() -> list[str]:
    """Return the installed sso-gateway script, else the package's __main__."""
    beside = Path(sys.executable).with_name("sso-gateway")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("sso-gateway")
    return [found] if found else [sys.executable, "-m", "gateway"]


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working folder that holds none of the configuration's files."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


class Cli:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the command; ``env`` adds variables to this process's environment."""
        result = subprocess.run(
            [*command(), *map(str, args)],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=None if env is None else {**os.environ, **env},
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def cli(cwd: Path) -> Cli:
    return Cli(cwd)


def write_config(folder: Path, redis_url: str) -> Path:
    """Write the harness's gateway.yaml and tenants.yaml; return gateway.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    # The upstream port is only written, never connected to.
    return GatewayHarness(folder, redis_url=redis_url).write_config(upstream_port=9)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config", "redis://127.0.0.1:6379/0")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {path}"
    path.write_text(text.replace(old, new))


# --- check-config ------------------------------------------------------------


def test_check_config_valid(cli: Cli, config_path: Path) -> None:
    result = cli.run("check-config", "--config", config_path)

    assert result.returncode == 0, result.stdout
    assert "configuration valid: 2 tenant(s)" in result.stdout


def test_check_config_prints_warnings(cli: Cli, config_path: Path) -> None:
    result = cli.run("check-config", "--config", config_path)

    tenants = config_path.with_name("tenants.yaml")
    warnings = [line for line in result.stdout.splitlines() if ": warning: " in line]
    assert len(warnings) == 2, result.stdout
    assert all(line.startswith(f"{tenants}:") for line in warnings)


def test_check_config_relative_path(cli: Cli, config_path: Path, cwd: Path) -> None:
    relative = Path("..") / config_path.parent.name / config_path.name

    result = cli.run("check-config", "--config", relative)

    assert (cwd / relative).resolve() == config_path.resolve()
    assert result.returncode == 0, result.stdout


def test_check_config_env_default(config_path: Path, cwd: Path) -> None:
    result = subprocess.run(
        [*command(), "check-config"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SSO_GATEWAY_CONFIG": str(config_path)},
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_check_config_every_error(cli: Cli, config_path: Path) -> None:
    tenants = config_path.with_name("tenants.yaml")
    edit(tenants, "noord-client.pem\n  allowed_ips:\n  - 127.0.0.1/32", "noord-client.pem\n  allowed_ips:\n  - 127.0.0.1/8")
    edit(tenants, "name: zuid", "name: Zuid")
    edit(config_path, "forms:", "colour: red\nforms:")

    result = cli.run("check-config", "--config", config_path)

    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("/")]
    errors = [line for line in errors if ": warning: " not in line]
    assert len(errors) == 3, result.stdout
    assert any("'127.0.0.1/8' has host bits set" in line for line in errors)
    assert any("'Zuid' is not a valid tenant name" in line for line in errors)
    assert any("unknown key 'colour'" in line for line in errors)
    assert result.stdout.splitlines()[-1].startswith("3 error(s), ")


@pytest.mark.parametrize(
    ("flag", "code"),
    [
        pytest.param("", 1, id="without-allow-any-ip"),
        pytest.param("  allow_any_ip: true\n", 0, id="with-allow-any-ip"),
    ],
)
def test_check_config_any_ip(cli: Cli, config_path: Path, flag: str, code: int) -> None:
    tenants = config_path.with_name("tenants.yaml")
    edit(tenants, "- ::1/128\n- name: zuid", f"- ::1/128\n  - 0.0.0.0/0\n{flag}- name: zuid")

    result = cli.run("check-config", "--config", config_path)

    assert result.returncode == code, result.stdout
    assert "'0.0.0.0/0' admits every address" in result.stdout


def test_check_config_missing_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    result = cli.run("check-config", "--config", path)

    assert result.returncode == 1
    assert f"{path}: file not found" in result.stdout


def test_check_config_hides_secret(cli: Cli, config_path: Path) -> None:
    literal = "Literal-Secret-0123456789abcdef0123456789"
    edit(config_path, "file: secrets/api-token", literal)

    result = cli.run("check-config", "--config", config_path)

    assert result.returncode == 1
    assert "upstream.api_token: literal secrets are not allowed" in result.stdout
    assert literal not in result.stdout + result.stderr


def test_check_config_hides_file_secret(cli: Cli, config_path: Path) -> None:
    short = "Short-Secret"
    config_path.with_name("secrets").joinpath("session-key-0").write_text(short)

    result = cli.run("check-config", "--config", config_path)

    assert result.returncode == 1
    assert "is 12 bytes, at least 32 are required" in result.stdout
    assert short not in result.stdout + result.stderr


# --- certs fingerprint -------------------------------------------------------


@pytest.fixture
def leaf(tmp_path: Path) -> trustme.LeafCert:
    return trustme.CA().issue_cert("noord.ysis.example")


def der_of(pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.public_bytes(serialization.Encoding.DER)


def test_fingerprint_pem(cli: Cli, tmp_path: Path, leaf: trustme.LeafCert) -> None:
    pem = leaf.cert_chain_pems[0].bytes()
    path = tmp_path / "noord.pem"
    path.write_bytes(pem)

    result = cli.run("certs", "fingerprint", path)

    assert result.returncode == 0, result.stderr
    fingerprint = result.stdout.split()[0]
    assert fingerprint == hashlib.sha256(der_of(pem)).hexdigest()


def test_fingerprint_der(cli: Cli, tmp_path: Path, leaf: trustme.LeafCert) -> None:
    der = der_of(leaf.cert_chain_pems[0].bytes())
    path = tmp_path / "noord.der"
    path.write_bytes(der)

    result = cli.run("certs", "fingerprint", path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == hashlib.sha256(der).hexdigest()


def test_fingerprint_every_certificate(
    cli: Cli, tmp_path: Path, leaf: trustme.LeafCert
) -> None:
    chain = [blob.bytes() for blob in leaf.cert_chain_pems]
    other = trustme.CA().cert_pem.bytes()
    path = tmp_path / "bundle.pem"
    path.write_bytes(chain[0] + other)

    result = cli.run("certs", "fingerprint", path)

    printed = [line.split()[0] for line in result.stdout.splitlines()]
    expected = [hashlib.sha256(der_of(pem)).hexdigest() for pem in (chain[0], other)]
    assert printed == expected


def test_fingerprint_relative_to_cwd(
    cli: Cli, cwd: Path, leaf: trustme.LeafCert
) -> None:
    pem = leaf.cert_chain_pems[0].bytes()
    (cwd / "here.pem").write_bytes(pem)

    result = cli.run("certs", "fingerprint", "here.pem")

    assert result.stdout.split()[0] == hashlib.sha256(der_of(pem)).hexdigest()


def test_fingerprint_missing_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"

    result = cli.run("certs", "fingerprint", path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: certificate file '{path}' cannot be read")


def test_fingerprint_key_file(cli: Cli, tmp_path: Path, leaf: trustme.LeafCert) -> None:
    path = tmp_path / "noord-key.pem"
    leaf.private_key_pem.write_to_path(str(path))

    result = cli.run("certs", "fingerprint", path)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "contains a private key where a certificate belongs" in result.stderr


def test_fingerprint_not_certificate(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a certificate\n")

    result = cli.run("certs", "fingerprint", path)

    assert result.returncode == 1
    assert "holds no valid PEM or DER certificate" in result.stderr


# --- keys generate -----------------------------------------------------------


def decode_key(printed: str) -> bytes:
    text = printed.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_keys_generate_length(cli: Cli) -> None:
    result = cli.run("keys", "generate")

    assert result.returncode == 0
    assert len(result.stdout.strip()) >= 32
    assert len(decode_key(result.stdout)) == 48


def test_keys_generate_differs(cli: Cli) -> None:
    first = cli.run("keys", "generate").stdout
    second = cli.run("keys", "generate").stdout

    assert first != second


def test_keys_generate_bytes(cli: Cli) -> None:
    result = cli.run("keys", "generate", "--bytes", "64")

    assert len(decode_key(result.stdout)) == 64


def test_keys_generate_too_few(cli: Cli) -> None:
    result = cli.run("keys", "generate", "--bytes", "16")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "at least 32 random bytes" in result.stderr


def test_keys_generate_too_many(cli: Cli) -> None:
    result = cli.run("keys", "generate", "--bytes", "100000000")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "at most 1024" in result.stderr


def test_generated_key_accepted(cli: Cli, config_path: Path) -> None:
    key = cli.run("keys", "generate").stdout.strip()
    config_path.with_name("secrets").joinpath("session-key-0").write_text(key + "\n")

    (loaded,) = load_config(config_path).gateway.session.keys

    assert loaded.text() == key


# --- db upgrade --------------------------------------------------------------


def sqlite_tables(path: Path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}
    finally:
        connection.close()


def test_db_upgrade_creates_schema(cli: Cli, config_path: Path) -> None:
    result = cli.run("db", "upgrade", "--config", config_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "upgraded the database schema from none to 0003 (applied 0001, 0002, 0003)\n"
    )
    tables = sqlite_tables(config_path.with_name("gateway.db"))
    assert {"links", "revocations", "alembic_version"} <= tables


def test_db_upgrade_twice(cli: Cli, config_path: Path) -> None:
    cli.run("db", "upgrade", "--config", config_path)

    result = cli.run("db", "upgrade", "--config", config_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "database schema is up to date at revision 0003\n"


def test_db_upgrade_from_older_revision(
    cli: Cli, tmp_path: Path, redis_url: str, database_url: str
) -> None:
    folder = tmp_path / "older"
    folder.mkdir()
    harness = GatewayHarness(folder, redis_url=redis_url, database_url=database_url)
    config = harness.write_config(upstream_port=9)
    command_upgrade(alembic_config(database_url), "0001")

    result = cli.run("db", "upgrade", "--config", config)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "upgraded the database schema from 0001 to 0003 (applied 0002, 0003)\n"
    )


def test_db_upgrade_unknown_revision(cli: Cli, config_path: Path) -> None:
    cli.run("db", "upgrade", "--config", config_path)
    database = config_path.with_name("gateway.db")
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    connection.close()

    result = cli.run("db", "upgrade", "--config", config_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: database schema is at revision '0099', which this gateway "
        "version does not know"
    )


def test_db_upgrade_relative_sqlite(cli: Cli, config_path: Path, cwd: Path) -> None:
    text = config_path.read_text()
    start = text.index("sqlite+aiosqlite:///")
    end = text.index("\n", start)
    config_path.write_text(text[:start] + "sqlite+aiosqlite:///data.db" + text[end:])

    result = cli.run("db", "upgrade", "--config", config_path)

    assert result.returncode == 0, result.stderr
    assert "links" in sqlite_tables(config_path.with_name("data.db"))
    assert not (cwd / "data.db").exists()


def test_db_upgrade_bad_config(cli: Cli, config_path: Path) -> None:
    edit(config_path, "forms:", "colour: red\nforms:")

    result = cli.run("db", "upgrade", "--config", config_path)

    assert result.returncode == 2
    assert "unknown key 'colour'" in result.stderr
    assert not config_path.with_name("gateway.db").exists()


# --- links -------------------------------------------------------------------


@pytest.fixture
def links_config(cli: Cli, tmp_path: Path, redis_url: str) -> Path:
    path = write_config(tmp_path / "links", redis_url)
    assert cli.run("db", "upgrade", "--config", path).returncode == 0
    return path


def links(cli: Cli, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run("links", *args, "--config", config)


def add(cli: Cli, config: Path, user: str, account: str, tenant: str = "noord") -> (
    subprocess.CompletedProcess[str]
):
    return links(
        cli, config, "add", "--tenant", tenant, "--ysis-user", user,
        "--account", account, "--operator", "beheer",
    )


def rows(cli: Cli, config: Path, *args: str) -> list[list[str]]:
    result = links(cli, config, "list", *args)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_links_add_prints(cli: Cli, links_config: Path) -> None:
    result = add(cli, links_config, "ysis-jan", "medimo-jan")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "linked noord/ysis-jan to medimo-jan\n"


def test_links_list_rows(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    (row,) = rows(cli, links_config)

    assert row[:4] == ["noord", "ysis-jan", "medimo-jan", "beheer"]
    created = dt.datetime.fromisoformat(row[4])
    assert abs((created - before).total_seconds()) < 60
    assert row[5] == "-"
    assert len(row) == 6


def test_links_list_tenant(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-anna", "medimo-anna", tenant="zuid")

    listed = rows(cli, links_config, "--tenant", "zuid")

    assert [row[:3] for row in listed] == [["zuid", "ysis-anna", "medimo-anna"]]


def test_links_list_ordered(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-piet", "medimo-piet", tenant="zuid")
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-anna", "medimo-anna")

    listed = [row[:2] for row in rows(cli, links_config)]

    assert listed == [["noord", "ysis-anna"], ["noord", "ysis-jan"], ["zuid", "ysis-piet"]]


def test_links_add_linked_user(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    before = rows(cli, links_config)

    result = add(cli, links_config, "ysis-jan", "medimo-other")

    assert result.returncode == 1
    assert result.stderr == (
        "error: tenant 'noord': Ysis user 'ysis-jan' is already linked to Medimo "
        "account 'medimo-jan'. Nothing was changed: remove that link first with "
        "'sso-gateway links remove --tenant noord --ysis-user ysis-jan'\n"
    )
    assert result.stdout == ""
    assert rows(cli, links_config) == before


def test_links_add_linked_account(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    before = rows(cli, links_config)

    result = add(cli, links_config, "ysis-piet", "medimo-jan")

    assert result.returncode == 1
    assert result.stderr == (
        "error: tenant 'noord': Medimo account 'medimo-jan' is already linked to "
        "Ysis user 'ysis-jan'. Nothing was changed: remove that link first with "
        "'sso-gateway links remove --tenant noord --ysis-user ysis-jan'\n"
    )
    assert result.stdout == ""
    assert rows(cli, links_config) == before


def test_links_same_account_two_tenants(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    result = add(cli, links_config, "ysis-jan", "medimo-jan", tenant="zuid")

    assert result.returncode == 0, result.stderr


def test_links_add_unknown_tenant(cli: Cli, links_config: Path) -> None:
    result = add(cli, links_config, "ysis-jan", "medimo-jan", tenant="west")

    assert result.returncode == 1
    assert "tenant 'west' is not in" in result.stderr
    assert rows(cli, links_config) == []


@pytest.mark.parametrize(
    "user",
    [
        pytest.param("ysis jan", id="space"),
        pytest.param("a" * 65, id="65-characters"),
        pytest.param("ysis/jan", id="slash"),
    ],
)
def test_links_add_invalid_user(cli: Cli, links_config: Path, user: str) -> None:
    result = add(cli, links_config, user, "medimo-jan")

    assert result.returncode == 1
    assert "is not a valid Ysis account ID" in result.stderr
    assert rows(cli, links_config) == []


@pytest.mark.parametrize(
    "account",
    [
        pytest.param("", id="empty"),
        pytest.param("../admin", id="path"),
        pytest.param("medimo jan", id="space"),
        pytest.param(".medimo", id="dot-first"),
        pytest.param("m" * 129, id="129-characters"),
    ],
)
def test_links_add_invalid_account(cli: Cli, links_config: Path, account: str) -> None:
    result = add(cli, links_config, "ysis-jan", account)

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: Medimo account {account!r} is not a valid account ID: use up to 128 "
    )
    assert rows(cli, links_config) == []


def test_links_remove_unknown(cli: Cli, links_config: Path) -> None:
    result = links(cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-nobody")

    assert result.returncode == 1
    assert "tenant 'noord': Ysis user 'ysis-nobody' is not linked" in result.stderr


def test_links_remove_known(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    result = links(cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan")

    assert result.returncode == 0, result.stderr
    assert "removed noord/ysis-jan (was medimo-jan)" in result.stdout
    assert rows(cli, links_config) == []


async def stored_revocations(config: Path) -> list[Revocation]:
    engine = create_engine(load_config(config).gateway.database.url)
    try:
        return await SqlRevocationStore(engine).since(0)
    finally:
        await engine.dispose()


async def revocations_of(config: Path) -> list[tuple[str, str, str, dt.datetime]]:
    found = await stored_revocations(config)
    return [(row.kind, row.tenant, row.subject, row.expires_at) for row in found]


async def test_links_remove_revokes(cli: Cli, links_config: Path) -> None:
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan")
    start = dt.datetime.now(dt.UTC)

    await asyncio.to_thread(
        links, cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan"
    )

    ((kind, tenant, subject, expires),) = await revocations_of(links_config)
    assert (kind, tenant, subject) == ("account", "noord", "medimo-jan")
    # In force for the longest session lifetime, 10 hours by default.
    lifetime = (expires - start).total_seconds()
    assert 10 * 3600 - 60 < lifetime < 10 * 3600 + 60


async def test_links_remove_records_operator(cli: Cli, links_config: Path) -> None:
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan")

    await asyncio.to_thread(
        links, cli, links_config, "remove", "--tenant", "noord",
        "--ysis-user", "ysis-jan", "--operator", "beheer-2",
    )

    (revocation,) = await stored_revocations(links_config)
    assert revocation.revoked_by == "beheer-2"


def test_links_remove_long_operator_keeps_link(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    result = links(
        cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--operator", "b" * 129,
    )

    assert result.returncode == 1
    assert "--operator is 129 characters long, the maximum is 128" in result.stderr
    listed = [row[:3] for row in rows(cli, links_config)]
    assert listed == [["noord", "ysis-jan", "medimo-jan"]]


async def test_links_remove_unknown_no_revocation(cli: Cli, links_config: Path) -> None:
    await asyncio.to_thread(
        links, cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan"
    )

    assert await revocations_of(links_config) == []


def test_links_add_clears_cache(cli: Cli, links_config: Path, redis_url: str) -> None:
    key = link_key("noord", "ysis-jan")
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(key, NOT_FOUND_MARKER, px=60_000)

        add(cli, links_config, "ysis-jan", "medimo-jan")

        assert client.get(key) is None
    finally:
        client.close()


def test_links_redis_down_warns(cli: Cli, tmp_path: Path) -> None:
    # Nothing listens on this loopback port once free_port has returned it.
    config = write_config(tmp_path / "down", f"redis://127.0.0.1:{free_port()}/0")
    cli.run("db", "upgrade", "--config", config)

    result = add(cli, config, "ysis-jan", "medimo-jan")

    assert result.returncode == 0, result.stderr
    assert "warning: the link cache in Redis could not be updated" in result.stderr
    assert [row[:3] for row in rows(cli, config)] == [["noord", "ysis-jan", "medimo-jan"]]


def test_links_schema_missing(cli: Cli, tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path / "fresh", redis_url)

    result = links(cli, config, "list")

    assert result.returncode == 2
    assert "sso-gateway db upgrade" in result.stderr


def test_links_bad_config(cli: Cli, links_config: Path) -> None:
    edit(links_config, "forms:", "colour: red\nforms:")

    result = links(cli, links_config, "list")

    assert result.returncode == 2
    assert "unknown key 'colour'" in result.stderr


# --- links against a running gateway ----------------------------------------


async def run_links(harness: GatewayHarness, *args: str, cwd: Path) -> None:
    assert harness.config is not None
    argv = ["links", *args, "--config", str(harness.config.path)]
    result = await asyncio.to_thread(Cli(cwd).run, *argv)
    assert result.returncode == 0, result.stderr


async def wait_for_status(
    client: aiohttp.ClientSession, path: str, status: int, limit: float
) -> int:
    """Poll ``path`` until it returns ``status`` or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while True:
        async with client.get(path, allow_redirects=False) as response:
            await response.read()
            if response.status == status or time.monotonic() > deadline:
                return response.status
        await asyncio.sleep(0.2)


async def test_add_seen_by_next_launch(gateway: GatewayHarness, cwd: Path) -> None:
    first = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
    assert first.headers["Location"] == "/sso/ysis/noord/link"

    await run_links(
        gateway, "add", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--account", "medimo-jan", "--operator", "beheer", cwd=cwd,
    )
    client = gateway.client("noord")
    second = await launch(client, "noord", userId="ysis-jan")

    assert second.status == 303
    assert second.headers["Location"] == "/"
    assert (await whoami(client))["X-Medimo-Account"] == "medimo-jan"


async def test_remove_seen_by_next_launch(gateway: GatewayHarness, cwd: Path) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    session = gateway.client("noord")
    assert (await launch(session, "noord", userId="ysis-jan")).headers["Location"] == "/"
    assert (await whoami(session))["X-Medimo-Account"] == "medimo-jan"

    await run_links(gateway, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan", cwd=cwd)
    after = await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    assert after.status == 303
    assert after.headers["Location"] == "/sso/ysis/noord/link"


async def test_remove_revokes_session(gateway: GatewayHarness, cwd: Path) -> None:
    await gateway.add_link("noord", "ysis-jan", "medimo-jan")
    session = gateway.client("noord")
    await launch(session, "noord", userId="ysis-jan")
    assert (await whoami(session))["X-Medimo-Account"] == "medimo-jan"

    await run_links(gateway, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan", cwd=cwd)

    # Announced over Redis; the SQL poll would catch it within 5 s too.
    assert await wait_for_status(session, "/whoami", 401, limit=10) == 401


async def test_unlinked_launch_then_add_remove(gateway: GatewayHarness, cwd: Path) -> None:
    unlinked = await launch(gateway.client("noord"), "noord", userId="ysis-jan")
    assert unlinked.headers["Location"] == "/sso/ysis/noord/link"
    await run_links(
        gateway, "add", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--account", "medimo-jan", "--operator", "beheer", cwd=cwd,
    )
    session = gateway.client("noord")
    assert (await launch(session, "noord", userId="ysis-jan")).headers["Location"] == "/"

    await run_links(gateway, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan", cwd=cwd)
    relaunch = await launch(gateway.client("noord"), "noord", userId="ysis-jan")

    assert relaunch.headers["Location"] == "/sso/ysis/noord/link"
    assert await wait_for_status(session, "/whoami", 401, limit=10) == 401


# --- the SSO log ---------------------------------------------------------------


def log_rows(cli: Cli, config: Path, *args: str) -> list[dict[str, object]]:
    """Run ``sso-gateway log`` and return its JSON lines."""
    result = cli.run("log", *args, "--config", config)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def events_of(rows: list[dict[str, object]]) -> list[object]:
    return [row["event"] for row in rows]


async def append_rows(config: Path, *entries: Entry) -> None:
    """Append rows to the SSO log of ``config`` as another instance."""
    engine = create_engine(load_config(config).gateway.database.url)
    try:
        await SqlSsoLog(engine, "gateway-old").append(entries)
    finally:
        await engine.dispose()


async def run_sql(config: Path, *statements: str) -> None:
    engine = create_engine(load_config(config).gateway.database.url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(sql_text(statement))
    finally:
        await engine.dispose()


def drop_trigger(config: Path) -> str:
    """Return the statement that drops the update trigger in ``config``'s database."""
    url = load_config(config).gateway.database.url
    if url.startswith("postgresql"):
        return "DROP TRIGGER sso_log_no_update ON sso_log"
    return "DROP TRIGGER sso_log_no_update"


AT = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def at(minutes: int, event: str = "launch", **fields: str) -> Entry:
    values = {"tenant": "noord", "ysis_user": "ysis-jan", **fields}
    return Entry(event, AT + dt.timedelta(minutes=minutes), **values)


def test_log_empty(cli: Cli, links_config: Path) -> None:
    assert log_rows(cli, links_config) == []


def test_log_line_format(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    (row,) = log_rows(cli, links_config)

    assert list(row) == [
        "id", "time", "instance", "event", "tenant", "ysis_user",
        "medimo_account", "medimo_client", "client_lookup", "source_ip",
        "outcome", "reason", "detail", "operator", "request_id", "prev_hash",
        "row_hash",
    ]
    assert row["id"] == 1
    assert row["prev_hash"] == "0" * 64
    assert dt.datetime.fromisoformat(str(row["time"])).tzinfo is not None


def test_links_add_logged(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    (row,) = log_rows(cli, links_config)

    assert row["event"] == "link_added_by_admin"
    assert row["tenant"] == "noord"
    assert row["ysis_user"] == "ysis-jan"
    assert row["medimo_account"] == "medimo-jan"
    assert row["operator"] == "beheer"
    assert row["outcome"] == "ok"
    assert row["source_ip"] is None


def test_links_add_conflict_not_logged(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    assert add(cli, links_config, "ysis-jan", "medimo-other").returncode == 1

    assert events_of(log_rows(cli, links_config)) == ["link_added_by_admin"]


def test_links_remove_logged(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    links(
        cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--operator", "beheerder-2",
    )

    rows = log_rows(cli, links_config)
    assert events_of(rows) == [
        "link_added_by_admin", "link_removed_by_admin", "sessions_revoked",
    ]
    for row in rows[1:]:
        assert row["tenant"] == "noord"
        assert row["ysis_user"] == "ysis-jan"
        assert row["medimo_account"] == "medimo-jan"
        assert row["operator"] == "beheerder-2"
    assert rows[2]["reason"] == "link_removed"


def test_links_remove_unknown_not_logged(cli: Cli, links_config: Path) -> None:
    links(cli, links_config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan")

    assert log_rows(cli, links_config) == []


def test_links_operator_defaults_to_login(
    links_config: Path, cwd: Path
) -> None:
    result = subprocess.run(
        [
            *command(), "links", "add", "--tenant", "noord", "--ysis-user",
            "ysis-jan", "--account", "medimo-jan", "--config", str(links_config),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "LOGNAME": "beheerder-login"},
    )
    assert result.returncode == 0, result.stderr

    (row,) = log_rows(Cli(cwd), links_config)

    assert row["operator"] == "beheerder-login"


def test_links_import_logged(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "links.csv"
    source.write_text(
        "tenant,ysis_user,medimo_account,created_by\n"
        "noord,ysis-jan,medimo-jan,Jan Jansen\n"
        "zuid,ysis-anna,medimo-anna,\n"
    )

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    rows = log_rows(cli, links_config)
    assert events_of(rows) == ["links_imported", "links_imported"]
    imported = [
        (row["tenant"], row["ysis_user"], row["medimo_account"]) for row in rows
    ]
    assert imported == [
        ("noord", "ysis-jan", "medimo-jan"),
        ("zuid", "ysis-anna", "medimo-anna"),
    ]
    assert {row["operator"] for row in rows} == {"beheer"}
    # created_by of a row may be a person's name, which the log never holds.
    assert "Jan Jansen" not in json.dumps(rows)


def test_links_import_dry_run_not_logged(
    cli: Cli, links_config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "links.csv"
    source.write_text("tenant,ysis_user,medimo_account\nnoord,ysis-jan,medimo-jan\n")

    links(cli, links_config, "import", str(source), "--dry-run", "--operator", "beheer")

    assert log_rows(cli, links_config) == []


async def test_log_filter_tenant(cli: Cli, links_config: Path) -> None:
    await append_rows(links_config, at(0), at(1, tenant="zuid"), at(2))

    rows = await asyncio.to_thread(log_rows, cli, links_config, "--tenant", "zuid")

    assert [row["id"] for row in rows] == [2]


async def test_log_filter_user(cli: Cli, links_config: Path) -> None:
    await append_rows(
        links_config,
        at(0, ysis_user="ysis-jan", medimo_account="medimo-jan"),
        at(1, ysis_user="ysis-piet", medimo_account="medimo-piet"),
        at(2, ysis_user="ysis-jan", medimo_account="medimo-jan"),
    )

    by_ysis = await asyncio.to_thread(log_rows, cli, links_config, "--user", "ysis-jan")
    by_medimo = await asyncio.to_thread(
        log_rows, cli, links_config, "--user", "medimo-piet"
    )

    assert [row["id"] for row in by_ysis] == [1, 3]
    assert [row["id"] for row in by_medimo] == [2]


async def test_log_filter_time(cli: Cli, links_config: Path) -> None:
    await append_rows(links_config, at(0), at(10), at(20), at(30))

    # 10:10 in Amsterdam (UTC+1 in March) is 09:10 UTC.
    rows = await asyncio.to_thread(
        log_rows, cli, links_config,
        "--since", "2026-03-02T10:10:00+01:00", "--until", "2026-03-02T09:30:00Z",
    )

    assert [row["id"] for row in rows] == [2, 3]


async def test_log_filter_date(cli: Cli, links_config: Path) -> None:
    await append_rows(links_config, at(0), at(24 * 60))

    rows = await asyncio.to_thread(
        log_rows, cli, links_config, "--since", "2026-03-03"
    )

    assert [row["id"] for row in rows] == [2]


async def test_log_limit_newest(cli: Cli, links_config: Path) -> None:
    await append_rows(links_config, at(0), at(1), at(2))

    rows = await asyncio.to_thread(log_rows, cli, links_config, "--limit", "2")

    assert [row["id"] for row in rows] == [2, 3]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ("--since", "2026-03-02T10:00"), "has no UTC offset", id="no-offset"
        ),
        pytest.param(("--until", "gisteren"), "is not an ISO 8601", id="not-a-time"),
        pytest.param(("--limit", "0"), "is not a positive whole number", id="zero"),
        pytest.param(
            ("--limit", "-3"), "is not a positive whole number", id="negative"
        ),
    ],
)
def test_log_bad_filter(
    cli: Cli, links_config: Path, args: tuple[str, ...], expected: str
) -> None:
    result = cli.run("log", *args, "--config", links_config)

    assert result.returncode == 2
    assert expected in result.stderr


def test_log_schema_missing(cli: Cli, tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path / "fresh", redis_url)

    result = cli.run("log", "--config", config)

    assert result.returncode == 2
    assert "sso-gateway db upgrade" in result.stderr


# --- sessions revoke ---------------------------------------------------------


def revoke(cli: Cli, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run("sessions", "revoke", *args, "--config", config)


async def revoke_async(
    cli: Cli, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(revoke, cli, config, *args)


async def test_sessions_revoke_tenant_prints(cli: Cli, links_config: Path) -> None:
    result = await revoke_async(
        cli, links_config, "--tenant", "noord", "--operator", "beheer"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "revoked every session of tenant 'noord'\n"
    assert result.stderr == ""


async def test_sessions_revoke_tenant_records(cli: Cli, links_config: Path) -> None:
    start = dt.datetime.now(dt.UTC)

    await revoke_async(cli, links_config, "--tenant", "noord", "--operator", "beheer")

    (revocation,) = await stored_revocations(links_config)
    assert revocation.kind == "tenant"
    assert (revocation.tenant, revocation.subject) == ("noord", "")
    assert revocation.revoked_by == "beheer"
    # In force for the longest session lifetime, 10 hours by default.
    lifetime = (revocation.expires_at - start).total_seconds()
    assert 10 * 3600 - 60 < lifetime < 10 * 3600 + 60


async def test_sessions_revoke_account_records(cli: Cli, links_config: Path) -> None:
    result = await revoke_async(
        cli, links_config, "--tenant", "noord", "--account", "medimo-jan",
        "--operator", "beheer",
    )

    assert result.stdout == (
        "revoked the sessions of Medimo account 'medimo-jan' in tenant 'noord'\n"
    )
    (revocation,) = await stored_revocations(links_config)
    assert (revocation.kind, revocation.tenant, revocation.subject) == (
        "account", "noord", "medimo-jan",
    )


async def test_sessions_revoke_linked_account_no_note(
    cli: Cli, links_config: Path
) -> None:
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan")

    result = await revoke_async(
        cli, links_config, "--tenant", "noord", "--account", "medimo-jan",
        "--operator", "beheer",
    )

    assert result.returncode == 0
    assert result.stderr == ""


async def test_sessions_revoke_unlinked_account_notes(
    cli: Cli, links_config: Path
) -> None:
    # medimo-jan is linked in zuid, not in noord.
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan", "zuid")

    result = await revoke_async(
        cli, links_config, "--tenant", "noord", "--account", "medimo-jan",
        "--operator", "beheer",
    )

    assert result.returncode == 0
    assert result.stdout == (
        "revoked the sessions of Medimo account 'medimo-jan' in tenant 'noord'\n"
    )
    assert result.stderr == (
        "note: no link of tenant 'noord' has Medimo account 'medimo-jan': check "
        "the spelling. Sessions of that account may exist all the same, so they "
        "are revoked\n"
    )
    ((kind, tenant, subject, _),) = await revocations_of(links_config)
    assert (kind, tenant, subject) == ("account", "noord", "medimo-jan")


async def test_sessions_revoke_login_name(
    cli: Cli, links_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # getpass.getuser reads LOGNAME first.
    monkeypatch.setenv("LOGNAME", "beheerder-op-dienst")

    await revoke_async(cli, links_config, "--tenant", "noord")

    (revocation,) = await stored_revocations(links_config)
    assert revocation.revoked_by == "beheerder-op-dienst"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--tenant", "west"), "tenant 'west' is not in", id="unknown-tenant"
        ),
        pytest.param(
            ("--tenant", "noord", "--account", ""), "--account must not be empty",
            id="empty-account",
        ),
        pytest.param(
            ("--tenant", "noord", "--account", "  "), "--account must not be empty",
            id="blank-account",
        ),
        pytest.param(
            ("--tenant", "noord", "--account", "a" * 129),
            "--account is 129 characters long, the maximum is 128",
            id="long-account",
        ),
        pytest.param(
            ("--tenant", "noord", "--operator", "b" * 129),
            "--operator is 129 characters long, the maximum is 128",
            id="long-operator",
        ),
        pytest.param(
            ("--tenant", "noord", "--operator", ""), "--operator must not be empty",
            id="empty-operator",
        ),
    ],
)
async def test_sessions_revoke_refuses(
    cli: Cli, links_config: Path, args: tuple[str, ...], message: str
) -> None:
    result = await revoke_async(cli, links_config, *args)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert await stored_revocations(links_config) == []


async def test_sessions_revoke_redis_down(cli: Cli, tmp_path: Path) -> None:
    # Nothing listens on this loopback port once free_port has returned it.
    config = write_config(tmp_path / "down", f"redis://127.0.0.1:{free_port()}/0")
    cli.run("db", "upgrade", "--config", config)

    result = await revoke_async(
        cli, config, "--tenant", "noord", "--operator", "beheer"
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: Redis could not be reached (")
    # The same intervals as the README's: the fallback poll of a gateway that
    # lost Redis, and the regular read of one that still has it.
    assert result.stderr.endswith(
        "so the revocation was not announced. Running gateways read it from the "
        "database: every 2 s those that cannot reach Redis either, every 5 s the "
        "others; all of them apply it within 5 s\n"
    )
    assert len(await stored_revocations(config)) == 1


def test_sessions_revoke_schema_missing(
    cli: Cli, tmp_path: Path, redis_url: str
) -> None:
    config = write_config(tmp_path / "fresh", redis_url)

    result = revoke(cli, config, "--tenant", "noord", "--operator", "beheer")

    assert result.returncode == 2
    assert "sso-gateway db upgrade" in result.stderr


def test_log_verify_intact(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-piet", "medimo-piet")

    result = cli.run("log", "verify", "--config", links_config)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("SSO log intact: 2 row(s), from row 1 ")
    assert lines[1] == f"anchor (prev_hash of row 1): {'0' * 64}"
    last = log_rows(cli, links_config)[-1]
    assert lines[2] == f"row_hash of row 2: {last['row_hash']}"


def test_log_verify_empty(cli: Cli, links_config: Path) -> None:
    result = cli.run("log", "verify", "--config", links_config)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "SSO log intact: 0 rows\n"


def test_log_verify_config_before_command(cli: Cli, links_config: Path) -> None:
    result = cli.run("log", "--config", links_config, "verify")

    assert result.returncode == 0, result.stderr


def test_log_verify_rejects_filters(cli: Cli, links_config: Path) -> None:
    result = cli.run("log", "--tenant", "noord", "verify", "--config", links_config)

    assert result.returncode == 2
    assert "--tenant only filter 'sso-gateway log' itself" in result.stderr


@pytest.fixture
def any_database_config(
    cli: Cli, tmp_path: Path, redis_url: str, database_url: str
) -> Path:
    """A migrated configuration on SQLite and on PostgreSQL."""
    folder = tmp_path / "any"
    folder.mkdir()
    harness = GatewayHarness(folder, redis_url=redis_url, database_url=database_url)
    path = harness.write_config(upstream_port=9)
    assert cli.run("db", "upgrade", "--config", path).returncode == 0
    return path


async def test_log_verify_edited_row(cli: Cli, any_database_config: Path) -> None:
    await append_rows(any_database_config, at(0), at(1), at(2))
    await run_sql(
        any_database_config,
        drop_trigger(any_database_config),
        "UPDATE sso_log SET medimo_account = 'medimo-piet' WHERE id = 2",
    )

    result = await asyncio.to_thread(
        cli.run, "log", "verify", "--config", any_database_config
    )

    assert result.returncode == 1
    assert "error: the SSO log chain is broken: row 2: " in result.stderr
    assert "1 row(s) before it are intact" in result.stderr


async def test_log_verify_deleted_row(cli: Cli, any_database_config: Path) -> None:
    await append_rows(any_database_config, at(0), at(1), at(2))
    await run_sql(any_database_config, "DELETE FROM sso_log WHERE id = 2")

    result = await asyncio.to_thread(
        cli.run, "log", "verify", "--config", any_database_config
    )

    assert result.returncode == 1
    assert "row 3: row 2 is missing" in result.stderr


async def test_log_verify_changed_hash(cli: Cli, any_database_config: Path) -> None:
    await append_rows(any_database_config, at(0), at(1), at(2))
    await run_sql(
        any_database_config,
        drop_trigger(any_database_config),
        f"UPDATE sso_log SET row_hash = '{'b' * 64}' WHERE id = 3",
    )

    result = await asyncio.to_thread(
        cli.run, "log", "verify", "--config", any_database_config
    )

    assert result.returncode == 1
    assert "broken: row 3: " in result.stderr


async def test_log_purge_old_rows(cli: Cli, links_config: Path) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=6 * 366)
    await append_rows(links_config, Entry("launch", old), Entry("launch", old))
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan")

    result = await asyncio.to_thread(
        cli.run, "log", "purge", "--operator", "beheer", "--config", links_config
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 2 row(s) logged before ")
    assert result.stdout.rstrip().endswith("(retention 5y)")
    rows = await asyncio.to_thread(log_rows, cli, links_config)
    assert events_of(rows) == ["link_added_by_admin", "log_purged"]
    assert rows[1]["operator"] == "beheer"


async def test_log_verify_after_purge(cli: Cli, links_config: Path) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=6 * 366)
    await append_rows(links_config, Entry("launch", old))
    await asyncio.to_thread(add, cli, links_config, "ysis-jan", "medimo-jan")
    await asyncio.to_thread(
        cli.run, "log", "purge", "--operator", "beheer", "--config", links_config
    )

    result = await asyncio.to_thread(cli.run, "log", "verify", "--config", links_config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SSO log intact: 2 row(s), from row 2 ")


def test_log_purge_nothing_logged(cli: Cli, links_config: Path) -> None:
    result = cli.run("log", "purge", "--operator", "beheer", "--config", links_config)

    assert result.returncode == 0, result.stderr
    (row,) = log_rows(cli, links_config)
    assert row["event"] == "log_purged"
    assert str(row["detail"]).startswith("deleted 0 row(s) logged before ")


def test_log_purge_retention_from_config(cli: Cli, links_config: Path) -> None:
    edit(links_config, "forms:", "sso_log:\n  retention: 30d\nforms:")

    result = cli.run("log", "purge", "--operator", "beheer", "--config", links_config)

    assert result.stdout.rstrip().endswith("(retention 30d)")
    cutoff = dt.datetime.fromisoformat(result.stdout.split(" before ")[1].split(" ")[0])
    expected = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    assert abs((cutoff - expected).total_seconds()) < 60
# --- revocations from the command line against two running gateways ---------


async def test_revoke_tenant_cuts_both_instances(
    make_gateway: MakeGateway, killable_redis: RedisServer, cwd: Path
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    cookie = cookie_of(await logged_in(first))
    assert first.config is not None

    await revoke_async(
        Cli(cwd), first.config.path, "--tenant", "noord", "--operator", "beheer"
    )

    await refused_within(second, cookie, PUBSUB_LIMIT)
    await refused_within(first, cookie, PUBSUB_LIMIT)


async def test_revoke_account_cuts_both_instances(
    make_gateway: MakeGateway, killable_redis: RedisServer, cwd: Path
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    cookie = cookie_of(await logged_in(second))
    assert first.config is not None

    await revoke_async(
        Cli(cwd), first.config.path, "--tenant", "noord", "--account", "medimo-jan",
        "--operator", "beheer",
    )

    await refused_within(first, cookie, PUBSUB_LIMIT)
    await refused_within(second, cookie, PUBSUB_LIMIT)


async def test_revoke_account_spares_other_accounts(
    make_gateway: MakeGateway, killable_redis: RedisServer, cwd: Path
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    jan = cookie_of(await logged_in(first))
    piet = cookie_of(await logged_in(first, "ysis-piet", "medimo-piet"))
    assert first.config is not None

    await revoke_async(
        Cli(cwd), first.config.path, "--tenant", "noord", "--account", "medimo-jan",
        "--operator", "beheer",
    )

    await refused_within(second, jan, PUBSUB_LIMIT)
    assert await cookie_status(second, piet) == 200


async def test_revoke_tenant_spares_other_tenants(
    make_gateway: MakeGateway, killable_redis: RedisServer, cwd: Path
) -> None:
    tenants = {"noord": {}, "oost": {}}
    first, second = await start_pair(make_gateway, killable_redis, tenants=tenants)
    noord = cookie_of(await logged_in(first))
    await first.add_link("oost", "ysis-els", "medimo-els")
    oost_client = first.client("oost")
    assert (await launch(oost_client, "oost", userId="ysis-els")).status == 303
    assert first.config is not None

    await revoke_async(
        Cli(cwd), first.config.path, "--tenant", "noord", "--operator", "beheer"
    )

    await refused_within(second, noord, PUBSUB_LIMIT)
    assert await cookie_status(second, cookie_of(oost_client), "oost") == 200


async def test_links_remove_cuts_other_instance(
    make_gateway: MakeGateway, killable_redis: RedisServer, cwd: Path
) -> None:
    first, second = await start_pair(make_gateway, killable_redis)
    cookie = cookie_of(await logged_in(first))

    await run_links(
        first, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--operator", "beheer", cwd=cwd,
    )

    await refused_within(second, cookie, PUBSUB_LIMIT)
