"""The links of a tenant that was taken out of tenants.yaml.

The links stay in the table. ``links list``, ``export`` and ``remove`` work
on them and print a note that the tenant is gone. ``links add`` and
``import`` add no new link for it.
"""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import pytest
import yaml

from tests.test_cli import (  # noqa: F401
    Cli,
    add,
    cli,
    cwd,
    links,
    links_config,
    revocations_of,
    rows,
)


def drop_tenant(config: Path, name: str) -> None:
    tenants = config.with_name("tenants.yaml")
    document = yaml.safe_load(tenants.read_text())
    document["tenants"] = [t for t in document["tenants"] if t["name"] != name]
    tenants.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def gone_config(cli: Cli, links_config: Path) -> Path:
    """Links in noord and zuid, then zuid taken out of tenants.yaml."""
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-anna", "medimo-anna", tenant="zuid")
    add(cli, links_config, "ysis-els", "medimo-els", tenant="zuid")
    drop_tenant(links_config, "zuid")
    return links_config


def note(config: Path, count: int) -> str:
    tenants = config.with_name("tenants.yaml")
    return (
        f"note: tenant 'zuid' is not in {tenants}: no gateway uses its {count} "
        "link(s); remove them with 'sso-gateway links remove --tenant zuid "
        "--ysis-user USER'\n"
    )


def test_list_shows_removed_tenant(cli: Cli, gone_config: Path) -> None:
    result = links(cli, gone_config, "list")

    assert result.returncode == 0
    listed = [line.split("\t")[:2] for line in result.stdout.splitlines()]
    assert listed == [["noord", "ysis-jan"], ["zuid", "ysis-anna"], ["zuid", "ysis-els"]]
    assert result.stderr == note(gone_config, 2)


def test_list_removed_tenant_alone(cli: Cli, gone_config: Path) -> None:
    result = links(cli, gone_config, "list", "--tenant", "zuid")

    assert result.returncode == 0
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == [
        "ysis-anna", "ysis-els",
    ]
    assert result.stderr == note(gone_config, 2)


def test_export_removed_tenant(cli: Cli, gone_config: Path) -> None:
    result = links(cli, gone_config, "export", "--tenant", "zuid")

    assert result.returncode == 0
    exported = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["ysis_user"] for row in exported] == ["ysis-anna", "ysis-els"]
    assert result.stderr == note(gone_config, 2) + "exported 2 link(s)\n"


@pytest.mark.parametrize("action", ["list", "export"])
def test_unknown_tenant_without_links(cli: Cli, gone_config: Path, action: str) -> None:
    result = links(cli, gone_config, action, "--tenant", "west")

    assert result.returncode == 1
    assert result.stdout == ""
    tenants = gone_config.with_name("tenants.yaml")
    assert result.stderr == f"error: tenant 'west' is not in {tenants} and has no links\n"


async def test_remove_from_removed_tenant(cli: Cli, gone_config: Path) -> None:
    result = await asyncio.to_thread(
        links, cli, gone_config, "remove", "--tenant", "zuid",
        "--ysis-user", "ysis-anna", "--operator", "beheer",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "removed zuid/ysis-anna (was medimo-anna); its sessions are revoked\n"
    tenants = gone_config.with_name("tenants.yaml")
    assert result.stderr == f"note: tenant 'zuid' is not in {tenants}; 1 link(s) of it remain\n"
    remaining = await asyncio.to_thread(rows, cli, gone_config, "--tenant", "zuid")
    assert [row[1] for row in remaining] == ["ysis-els"]
    # The name may be configured again later, so the sessions are revoked.
    assert [row[:3] for row in await revocations_of(gone_config)] == [
        ("account", "zuid", "medimo-anna")
    ]


def test_remove_unlinked_user_of_removed_tenant(cli: Cli, gone_config: Path) -> None:
    result = links(
        cli, gone_config, "remove", "--tenant", "zuid", "--ysis-user", "ysis-piet",
        "--operator", "beheer",
    )

    assert result.returncode == 1
    assert result.stderr == "error: tenant 'zuid': Ysis user 'ysis-piet' is not linked\n"


def test_remove_unknown_tenant_without_links(cli: Cli, gone_config: Path) -> None:
    result = links(
        cli, gone_config, "remove", "--tenant", "west", "--ysis-user", "ysis-jan",
        "--operator", "beheer",
    )

    assert result.returncode == 1
    tenants = gone_config.with_name("tenants.yaml")
    assert result.stderr == f"error: tenant 'west' is not in {tenants} and has no links\n"


def test_add_to_removed_tenant_refused(cli: Cli, gone_config: Path) -> None:
    before = rows(cli, gone_config)

    result = add(cli, gone_config, "ysis-piet", "medimo-piet", tenant="zuid")

    assert result.returncode == 1
    tenants = gone_config.with_name("tenants.yaml")
    assert result.stderr == (
        f"error: tenant 'zuid' is not in {tenants}: add the tenant there first\n"
    )
    assert rows(cli, gone_config) == before


def test_import_earlier_export(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-anna", "medimo-anna", tenant="zuid")
    exported = tmp_path / "links.csv"
    assert links(cli, links_config, "export", "--output", str(exported)).returncode == 0
    drop_tenant(links_config, "zuid")

    result = links(cli, links_config, "import", str(exported), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported 0 link(s); 2 already present\n"
    tenants = links_config.with_name("tenants.yaml")
    assert result.stderr == (
        f"note: tenant 'zuid' is not in {tenants}: its 1 row(s) were skipped "
        "because the link table has them; remove those links with "
        "'sso-gateway links remove --tenant zuid --ysis-user USER'\n"
    )


def test_import_new_link_for_removed_tenant(
    cli: Cli, gone_config: Path, tmp_path: Path
) -> None:
    before = rows(cli, gone_config)
    source = tmp_path / "in.csv"
    source.write_text(
        "tenant,ysis_user,medimo_account\n"
        "noord,ysis-piet,medimo-piet\n"
        "zuid,ysis-anna,medimo-anna\n"
        "zuid,ysis-kees,medimo-kees\n"
    )

    result = links(cli, gone_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 1
    assert result.stderr == (
        f"{source}:4: tenant 'zuid' is not configured: add it to the tenants file "
        "first, or leave the rows of this tenant out of the file\n"
        "error: 1 problem(s); nothing was imported\n"
    )
    assert rows(cli, gone_config) == before
