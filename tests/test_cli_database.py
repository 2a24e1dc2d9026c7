"""Every database command, run as a subprocess, when the database cannot be reached.

The PostgreSQL cases name a database that was never created on the test
server, or a loopback port that nothing listens on. Each command must print
one line on standard error and exit 1, never with a traceback.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.harness import GatewayHarness
from tests.support.services import POSTGRES_ADMIN_URL, free_port
from tests.test_cli import Cli, cli, cwd  # noqa: F401

POSTGRES_BASE = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace(
    "postgresql://", "postgresql+asyncpg://", 1
)

#: Each command that opens the database, with the arguments it needs.
COMMANDS = [
    pytest.param(("db", "upgrade"), id="db-upgrade"),
    pytest.param(("links", "list"), id="links-list"),
    pytest.param(
        (
            "links", "add", "--tenant", "noord", "--ysis-user", "ysis-jan",
            "--account", "medimo-jan", "--operator", "beheer",
        ),
        id="links-add",
    ),
    pytest.param(
        (
            "links", "remove", "--tenant", "noord", "--ysis-user", "ysis-jan",
            "--operator", "beheer",
        ),
        id="links-remove",
    ),
    pytest.param(("links", "export"), id="links-export"),
    pytest.param(("links", "import", "IMPORT", "--operator", "beheer"), id="links-import"),
    pytest.param(("log",), id="log"),
    pytest.param(("log", "verify"), id="log-verify"),
    pytest.param(("log", "purge", "--operator", "beheer"), id="log-purge"),
    pytest.param(
        ("sessions", "revoke", "--tenant", "noord", "--operator", "beheer"),
        id="sessions-revoke",
    ),
    pytest.param(("serve",), id="serve"),
]


def write_config(folder: Path, redis_url: str, database_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    harness = GatewayHarness(folder, redis_url=redis_url, database_url=database_url)
    # The upstream port is only written, never connected to.
    return harness.write_config(upstream_port=9)


@pytest.fixture(params=["missing-database", "closed-port"])
def unreachable(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A PostgreSQL URL that cannot be connected to, and what the error names."""
    if request.param == "missing-database":
        name = f"gateway_test_absent_{uuid.uuid4().hex[:12]}"
        return f"{POSTGRES_BASE}/{name}", f'database "{name}" does not exist'
    # Nothing listens on this loopback port once free_port has returned it.
    port = free_port()
    return f"postgresql+asyncpg://gateway@127.0.0.1:{port}/gateway", "Connect call failed"


def run(cli: Cli, config: Path, args: tuple[str, ...]) -> tuple[int, str, str]:
    source = config.with_name("links.csv")
    source.write_text("tenant,ysis_user,medimo_account\nnoord,ysis-jan,medimo-jan\n")
    argv = [str(source) if arg == "IMPORT" else arg for arg in args]
    result = cli.run(*argv, "--config", config)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("args", COMMANDS)
def test_unreachable_postgres(
    cli: Cli,
    tmp_path: Path,
    redis_url: str,
    unreachable: tuple[str, str],
    args: tuple[str, ...],
) -> None:
    url, reason = unreachable
    config = write_config(tmp_path / "config", redis_url, url)

    code, stdout, stderr = run(cli, config, args)

    assert code == 1
    assert stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"error: database {url} cannot be reached: "), line
    assert reason in line
    assert "check database.url" in line


@pytest.mark.parametrize("args", COMMANDS)
def test_unopenable_sqlite(
    cli: Cli, tmp_path: Path, redis_url: str, args: tuple[str, ...]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'absent-folder' / 'gateway.db'}"
    config = write_config(tmp_path / "config", redis_url, url)

    code, stdout, stderr = run(cli, config, args)

    assert code == 1
    assert stdout == ""
    (line,) = stderr.splitlines()
    assert line.startswith(f"error: database {url} cannot be reached: "), line
    assert "unable to open database file" in line
    assert "that its folder exists" in line
    assert not (tmp_path / "absent-folder").exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("db", "upgrade"), id="db-upgrade"),
        pytest.param(("links", "list"), id="links-list"),
        pytest.param(("serve",), id="serve"),
    ],
)
def test_unreachable_hides_password(
    cli: Cli, tmp_path: Path, redis_url: str, args: tuple[str, ...]
) -> None:
    password = "Db-Password-0123456789"
    config = write_config(tmp_path / "config", redis_url, "sqlite+aiosqlite:///unused.db")
    document = yaml.safe_load(config.read_text())
    document["database"]["url"] = {"env": "GATEWAY_TEST_DATABASE_URL"}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    url = f"postgresql+asyncpg://gateway:{password}@127.0.0.1:{free_port()}/gateway"

    result = cli.run(
        *args, "--config", config, env={"GATEWAY_TEST_DATABASE_URL": url}
    )

    assert result.returncode == 1
    assert password not in result.stdout + result.stderr
    assert result.stderr.startswith(
        "error: database postgresql+asyncpg://gateway:***@127.0.0.1:"
    )
