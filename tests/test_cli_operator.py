"""The one rule for administrators' names, wherever the command line takes one.

``--operator`` of every command, the login name it defaults to and the
``created_by`` column of an import must be visible text that a spreadsheet
does not take for a formula. A refused name changes nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_cli import (  # noqa: F401
    Cli,
    add,
    cli,
    command,
    cwd,
    links,
    links_config,
    log_rows,
    rows,
    stored_revocations,
)

BAD_NAMES = [
    pytest.param("beheer\x1b[31m", "control character U+001B", id="escape"),
    pytest.param("beheer\x07", "control character U+0007", id="bell"),
    pytest.param("be\theer", "control character U+0009", id="tab"),
    pytest.param("be\nheer", "control character U+000A", id="newline"),
    pytest.param("beheer\u202egnp.exe", "control character U+202E", id="bidi-override"),
    pytest.param("=HYPERLINK(\"http://x\")", "starts with '='", id="equals"),
    pytest.param("+31201234567", "starts with '+'", id="plus"),
    pytest.param("-beheer", "starts with '-'", id="minus"),
    pytest.param("@beheer", "starts with '@'", id="at"),
    pytest.param("\uff1d1+1", "starts with '\uff1d'", id="full-width-equals"),
    pytest.param(" beheer", "starts or ends with a space", id="leading-space"),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_add_refuses_operator(
    cli: Cli, links_config: Path, name: str, message: str
) -> None:
    result = links(
        cli, links_config, "add", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--account", "medimo-jan", f"--operator={name}",
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: --operator {name!r} ")
    assert message in result.stderr
    # Python's repr shows the name, so no control character reaches the terminal.
    assert "\x1b" not in result.stderr
    assert "\x07" not in result.stderr
    assert rows(cli, links_config) == []


def run_with_operator(
    cli: Cli, config: Path, which: str, operator: str
) -> subprocess.CompletedProcess[str]:
    flag = f"--operator={operator}"
    if which == "remove":
        return links(
            cli, config, "remove", "--tenant", "noord", "--ysis-user", "ysis-jan", flag
        )
    if which == "import":
        source = config.with_name("in.csv")
        source.write_text("tenant,ysis_user,medimo_account\nnoord,ysis-piet,medimo-piet\n")
        return links(cli, config, "import", str(source), flag)
    if which == "revoke":
        return cli.run(
            "sessions", "revoke", "--tenant", "noord", flag, "--config", config
        )
    return cli.run("log", "purge", flag, "--config", config)


@pytest.mark.parametrize("which", ["remove", "import", "revoke", "purge"])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("=1+1", "starts with '='", id="formula"),
        pytest.param("beheer\x1b]0;x\x07", "control character U+001B", id="escape"),
    ],
)
async def test_every_command_refuses_operator(
    cli: Cli, links_config: Path, which: str, name: str, message: str
) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    before = rows(cli, links_config)

    result = run_with_operator(cli, links_config, which, name)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: --operator ")
    assert message in result.stderr
    assert rows(cli, links_config) == before
    assert [row["event"] for row in log_rows(cli, links_config)] == [
        "link_added_by_admin"
    ]
    assert await stored_revocations(links_config) == []


def test_login_name_follows_the_rule(links_config: Path, cwd: Path) -> None:
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
        env={"PATH": "/usr/bin:/bin", "LOGNAME": "=cmd|' /C calc'!A0"},
    )

    assert result.returncode == 1
    assert result.stderr.startswith("error: the login name \"=cmd|' /C calc'!A0\" ")
    assert "name the administrator with --operator NAME" in result.stderr
    assert rows(Cli(cwd), links_config) == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Jan Jansen", id="space"),
        pytest.param("DOMEIN\\jan", id="backslash"),
        pytest.param("Zoë d'Ancona", id="accents"),
        pytest.param("beheer@zorg.example", id="inner-at"),
        pytest.param("1e-beheerder", id="digit-first"),
    ],
)
def test_valid_operator_stored(cli: Cli, links_config: Path, name: str) -> None:
    result = links(
        cli, links_config, "add", "--tenant", "noord", "--ysis-user", "ysis-jan",
        "--account", "medimo-jan", "--operator", name,
    )

    assert result.returncode == 0, result.stderr
    (row,) = log_rows(cli, links_config)
    assert row["operator"] == name
