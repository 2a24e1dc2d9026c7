"""links export and links import: the CSV checks, then the commands end to end."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from pathlib import Path

import pytest
import redis

from gateway.config.loader import load_config
from gateway.links.cache import NOT_FOUND_MARKER, link_key
from gateway.links.sql import SqlLinkStore
from gateway.links.store import Link
from gateway.links.transfer import COLUMNS, plan_import
from gateway.storage.database import create_engine
from tests.test_cli import (  # noqa: F401
    Cli,
    add,
    any_database_config,
    cli,
    cwd,
    links,
    links_config,
    rows,
)

NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)
HEADER = ",".join(COLUMNS[:3])


def plan(text: str, current: list[Link] | None = None) -> tuple[list[Link], list[Link], list[str]]:
    result = plan_import(
        text, "links.csv", tenants={"noord", "zuid"}, current=current or [], operator="beheer", now=NOW
    )
    return result.new, result.existing, result.problems


def existing(user: str, account: str, tenant: str = "noord") -> Link:
    return Link(tenant, user, account, NOW, "beheer", None)


# --- checking the file ----------------------------------------------------------


def test_plan_new_rows() -> None:
    new, present, problems = plan(f"{HEADER}\nnoord,ysis-jan,medimo-jan\nzuid,ysis-anna,medimo-anna\n")

    assert problems == []
    assert present == []
    assert [(link.tenant, link.ysis_user, link.medimo_account) for link in new] == [
        ("noord", "ysis-jan", "medimo-jan"),
        ("zuid", "ysis-anna", "medimo-anna"),
    ]
    assert all(link.created_by == "beheer" and link.created_at == NOW for link in new)


def test_plan_keeps_given_fields() -> None:
    text = ",".join(COLUMNS) + "\nnoord,ysis-jan,medimo-jan,2025-03-01T09:00:00+01:00,oud-systeem,2026-11-30T10:00:00+00:00\n"

    (link,), _, problems = plan(text)

    assert problems == []
    assert link.created_at == dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
    assert link.created_by == "oud-systeem"
    assert link.last_used_at == dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.timezone.utc)


def test_plan_same_link_present_is_skipped() -> None:
    new, present, problems = plan(f"{HEADER}\nnoord,ysis-jan,medimo-jan\n", [existing("ysis-jan", "medimo-jan")])

    assert (new, problems) == ([], [])
    assert len(present) == 1


@pytest.mark.parametrize(
    ("rows_text", "current", "expected"),
    [
        pytest.param("noord,ysis-jan,medimo-jan\nnoord,ysis-jan,medimo-piet", [], "links.csv:3: Ysis user 'ysis-jan' of tenant 'noord' is also on row 2", id="user-twice"),
        pytest.param("noord,ysis-jan,medimo-jan\nnoord,ysis-piet,medimo-jan", [], "links.csv:3: Medimo account 'medimo-jan' of tenant 'noord' is also on row 2", id="account-twice"),
        pytest.param("noord,ysis-jan,medimo-piet", [existing("ysis-jan", "medimo-jan")], "is already linked to 'medimo-jan'", id="user-linked"),
        pytest.param("noord,ysis-piet,medimo-jan", [existing("ysis-jan", "medimo-jan")], "is already linked to Ysis user 'ysis-jan'", id="account-linked"),
        pytest.param("oost,ysis-jan,medimo-jan", [], "links.csv:2: tenant 'oost' is not configured", id="unknown-tenant"),
        pytest.param(",ysis-jan,medimo-jan", [], "links.csv:2: tenant is empty", id="empty-tenant"),
        pytest.param("noord,ysis jan,medimo-jan", [], "links.csv:2: ysis_user 'ysis jan' is not a valid Ysis account ID", id="bad-user"),
        pytest.param("noord,ysis-jan,../admin", [], "links.csv:2: medimo_account '../admin' is not a valid account ID", id="bad-account"),
        pytest.param("noord,ysis-jan,", [], "links.csv:2: medimo_account '' is not a valid account ID", id="empty-account"),
        pytest.param("noord,ysis-jan,medimo-jan,extra", [], "more fields than the header", id="extra-field"),
    ],
)
def test_plan_problem(rows_text: str, current: list[Link], expected: str) -> None:
    new, _, problems = plan(f"{HEADER}\n{rows_text}\n", current)

    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("tenant,ysis_user\nnoord,ysis-jan\n", "the header must name", id="missing-column"),
        pytest.param(f"{HEADER},colour\n", "the header must name", id="unknown-column"),
        pytest.param(f"{HEADER},tenant\n", "the header must name", id="repeated-column"),
        pytest.param("", "the header must name", id="empty-file"),
    ],
)
def test_plan_bad_header(text: str, expected: str) -> None:
    _, _, problems = plan(text)

    assert len(problems) == 1
    assert expected in problems[0]
    assert problems[0].startswith("links.csv:1: ")


@pytest.mark.parametrize("column", ["created_at", "last_used_at"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("gisteren", "is not an ISO 8601 time", id="not-a-time"),
        pytest.param("2026-01-01T08:00:00", "has no UTC offset", id="no-offset"),
        pytest.param("9999-12-31T23:59:59-01:00", "is outside the years 1 to 9999 in UTC", id="after-9999"),
        pytest.param("0001-01-01T00:00:00+01:00", "is outside the years 1 to 9999 in UTC", id="before-1"),
    ],
)
def test_plan_bad_time(column: str, value: str, expected: str) -> None:
    _, _, problems = plan(f"tenant,ysis_user,medimo_account,{column}\nnoord,ysis-jan,medimo-jan,{value}\n")

    assert len(problems) == 1
    assert problems[0].startswith(f"links.csv:2: {column} {value!r} {expected}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("be\x00heer", "created_by 'be\\x00heer' contains the control character U+0000", id="nul"),
        pytest.param("beheer\x1b[2J", "contains the control character U+001B", id="escape"),
        pytest.param("be\x07heer", "contains the control character U+0007", id="bell"),
        pytest.param('"be\theer"', "contains the control character U+0009", id="tab"),
        pytest.param('"be\nheer"', "contains the control character U+000A", id="newline"),
        pytest.param('"=HYPERLINK(""http://x"")"', "created_by '=HYPERLINK(\"http://x\")' starts with '='", id="equals"),
        pytest.param("+31201234567", "starts with '+'", id="plus"),
        pytest.param("-2+3", "starts with '-'", id="minus"),
        pytest.param("@SUM(A1)", "starts with '@'", id="at"),
        pytest.param("b" * 129, "created_by is 129 characters long, the maximum is 128", id="too-long"),
    ],
)
def test_plan_bad_created_by(value: str, expected: str) -> None:
    text = f"tenant,ysis_user,medimo_account,created_by\nnoord,ysis-piet,medimo-piet\nnoord,ysis-jan,medimo-jan,{value}\n"

    _, _, problems = plan(text)

    assert len(problems) == 1, problems
    assert problems[0].startswith("links.csv:3: created_by ")
    assert expected in problems[0]


def test_plan_names_first_line_of_record() -> None:
    # Line 2 is blank, and the record on line 3 goes on on line 4.
    text = f"{HEADER},created_by\n\nnoord,ysis-piet,medimo-piet,\"Piet\nPietersen\"\nnoord,ysis-jan,medimo-jan,=1\n"

    _, _, problems = plan(text)

    assert [problem.split(":")[1] for problem in problems] == ["3", "5"]
    assert "U+000A" in problems[0]


def test_plan_unconfigured_tenant_present_is_skipped() -> None:
    kept = existing("ysis-els", "medimo-els", tenant="oost")

    new, present, problems = plan(f"{HEADER}\noost,ysis-els,medimo-els\nnoord,ysis-jan,medimo-jan\n", [kept])

    assert problems == []
    assert present == [kept]
    assert [link.ysis_user for link in new] == ["ysis-jan"]


@pytest.mark.parametrize(
    "row",
    [
        pytest.param("oost,ysis-nieuw,medimo-nieuw", id="new-link"),
        pytest.param("oost,ysis-els,medimo-ander", id="other-account"),
    ],
)
def test_plan_unconfigured_tenant_new_is_refused(row: str) -> None:
    kept = existing("ysis-els", "medimo-els", tenant="oost")

    new, _, problems = plan(f"{HEADER}\n{row}\n", [kept])

    assert new == []
    assert problems == [
        (
            "links.csv:2: tenant 'oost' is not configured: add it to the tenants "
            "file first, or leave the rows of this tenant out of the file"
        )
    ]


def test_plan_reports_every_row() -> None:
    text = f"{HEADER}\noost,a,b\nnoord,ysis-jan,medimo-jan\nnoord,bad id,x\n"

    new, _, problems = plan(text)

    assert [problem.split(":")[1] for problem in problems] == ["2", "4"]
    assert len(new) == 1


# --- the commands ----------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_export_import_round_trip(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    add(cli, links_config, "ysis-anna", "medimo-anna", tenant="zuid")
    exported = tmp_path / "links.csv"

    assert links(cli, links_config, "export", "--output", str(exported)).returncode == 0
    listed = rows(cli, links_config)
    for row in listed:
        assert links(cli, links_config, "remove", "--tenant", row[0], "--ysis-user", row[1], "--operator", "beheer").returncode == 0
    result = links(cli, links_config, "import", str(exported), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported 2 link(s); 0 already present\n"
    assert rows(cli, links_config) == listed


def test_export_to_stdout(cli: Cli, links_config: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")

    result = links(cli, links_config, "export", "--tenant", "noord")

    parsed = list(csv.reader(io.StringIO(result.stdout)))
    assert parsed[0] == list(COLUMNS)
    assert parsed[1][:3] == ["noord", "ysis-jan", "medimo-jan"]
    assert parsed[1][4] == "beheer"


def test_import_conflict_changes_nothing(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    add(cli, links_config, "ysis-jan", "medimo-jan")
    source = write(tmp_path / "in.csv", f"{HEADER}\nnoord,ysis-piet,medimo-piet\nnoord,ysis-kees,medimo-jan\n")

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 1
    assert f"{source}:3: Medimo account 'medimo-jan'" in result.stderr
    assert "nothing was imported" in result.stderr
    assert [row[1] for row in rows(cli, links_config)] == ["ysis-jan"]


def test_import_again_skips_present(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", f"{HEADER}\nnoord,ysis-jan,medimo-jan\n")
    links(cli, links_config, "import", str(source), "--operator", "beheer")

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 0
    assert result.stdout == "imported 0 link(s); 1 already present\n"


def test_import_dry_run_changes_nothing(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", f"{HEADER}\nnoord,ysis-jan,medimo-jan\n")

    result = links(cli, links_config, "import", str(source), "--dry-run", "--operator", "beheer")

    assert result.returncode == 0
    assert result.stdout == "would import 1 link(s); 0 already present\n"
    assert rows(cli, links_config) == []


def test_import_clears_cached_absence(cli: Cli, links_config: Path, tmp_path: Path, redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url)
    store.set(link_key("noord", "ysis-jan"), NOT_FOUND_MARKER)
    source = write(tmp_path / "in.csv", f"{HEADER}\nnoord,ysis-jan,medimo-jan\n")

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    assert store.get(link_key("noord", "ysis-jan")) is None
    store.close()


def test_import_missing_file(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"

    result = links(cli, links_config, "import", str(path), "--operator", "beheer")

    assert result.returncode == 1
    assert result.stderr == f"error: {path} does not exist: check the path; nothing was imported\n"


def test_import_folder(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    result = links(cli, links_config, "import", str(tmp_path), "--operator", "beheer")

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {tmp_path} is a folder: ")


def test_import_not_utf8(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes(f"{HEADER}\nnoord,ysis-jos\xe9,medimo-jan\n".encode("latin-1"))

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {source}:2: cannot be read as UTF-8 text: ")
    assert rows(cli, links_config) == []


def test_import_byte_order_mark(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = tmp_path / "excel.csv"
    source.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\r\nnoord,ysis-jan,medimo-jan\r\n".encode())

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    assert [row[:3] for row in rows(cli, links_config)] == [["noord", "ysis-jan", "medimo-jan"]]


def test_import_time_out_of_range(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.csv",
        "tenant,ysis_user,medimo_account,created_at\n"
        "noord,ysis-piet,medimo-piet,2026-01-01T08:00:00+01:00\n"
        "noord,ysis-jan,medimo-jan,9999-12-31T23:59:59-01:00\n",
    )

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"{source}:3: created_at '9999-12-31T23:59:59-01:00' is outside the years 1 to 9999 in UTC"
    )
    assert result.stderr.endswith("error: 1 problem(s); nothing was imported\n")
    assert rows(cli, links_config) == []


async def test_import_nul_refused(cli: Cli, any_database_config: Path, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.csv",
        "tenant,ysis_user,medimo_account,created_by\n"
        "noord,ysis-piet,medimo-piet,beheer\n"
        "noord,ysis-jan,medimo-jan,be\x00heer\n",
    )

    result = await asyncio.to_thread(
        links, cli, any_database_config, "import", str(source), "--operator", "beheer"
    )

    assert result.returncode == 1
    (problem, summary) = result.stderr.splitlines()
    assert problem == (
        f"{source}:3: created_by 'be\\x00heer' contains the control character U+0000 "
        "at position 3: use visible characters and spaces only"
    )
    assert summary == "error: 1 problem(s); nothing was imported"
    assert await asyncio.to_thread(rows, cli, any_database_config) == []


def test_import_empty_operator(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", f"{HEADER}\nnoord,ysis-jan,medimo-jan\n")

    result = links(cli, links_config, "import", str(source), "--operator", "")

    assert result.returncode == 1
    assert result.stderr == "error: --operator must not be empty\n"
    assert rows(cli, links_config) == []


def test_import_formula_created_by(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.csv",
        "tenant,ysis_user,medimo_account,created_by\n"
        "noord,ysis-jan,medimo-jan,\"=HYPERLINK(\"\"http://x\"\")\"\n"
        "noord,ysis-piet,medimo-piet,@SUM(A1)\n",
    )

    result = links(cli, links_config, "import", str(source), "--operator", "beheer")

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{source}:2: created_by '=HYPERLINK(\"http://x\")' starts with '='")
    assert lines[1].startswith(f"{source}:3: created_by '@SUM(A1)' starts with '@'")
    assert rows(cli, links_config) == []


# --- what the commands show of names stored before the rule ---------------------


async def store_links(config: Path, *found: Link) -> None:
    """Write links as they are, as a gateway before the name rule did."""
    engine = create_engine(load_config(config).gateway.database.url)
    try:
        await SqlLinkStore(engine).add_all(list(found))
    finally:
        await engine.dispose()


OLD_NAMES = {
    "ysis-1": "=1+1",
    "ysis-2": "+31201234567",
    "ysis-3": "-2+3",
    "ysis-4": "@SUM(A1)",
    "ysis-5": "\tbeheer",
    "ysis-6": "\rbeheer",
    "ysis-7": "\uff1d1+1",
    "ysis-8": "Jan Jansen",
}


async def test_export_neutralises_formulas(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    await store_links(
        links_config,
        *(Link("noord", user, f"medimo-{user}", NOW, name, None) for user, name in OLD_NAMES.items()),
    )
    output = tmp_path / "out.csv"

    result = await asyncio.to_thread(links, cli, links_config, "export", "--output", str(output))

    assert result.returncode == 0, result.stderr
    with output.open(newline="", encoding="utf-8") as read_back:
        exported = {row["ysis_user"]: row["created_by"] for row in csv.DictReader(read_back)}
    assert exported == {
        "ysis-1": "'=1+1",
        "ysis-2": "'+31201234567",
        "ysis-3": "'-2+3",
        "ysis-4": "'@SUM(A1)",
        "ysis-5": "'\tbeheer",
        "ysis-6": "'\rbeheer",
        "ysis-7": "'\uff1d1+1",
        "ysis-8": "Jan Jansen",
    }


def test_round_trip_keeps_names(cli: Cli, links_config: Path, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.csv",
        "tenant,ysis_user,medimo_account,created_at,created_by,last_used_at\n"
        "noord,-1,medimo-1,2025-03-01T09:00:00+01:00,Jan Jansen,\n"
        "noord,@jan,medimo-2,2025-03-01T09:00:00+00:00,\"Zoë d'Ancona, beheer\",2026-11-30T10:00:00+00:00\n"
        "zuid,ysis-3,medimo-3,2025-03-01T09:00:00+00:00,DOMEIN\\jan,\n",
    )
    assert links(cli, links_config, "import", str(source), "--operator", "beheer").returncode == 0
    exported = tmp_path / "out.csv"
    listed = rows(cli, links_config)

    assert links(cli, links_config, "export", "--output", str(exported)).returncode == 0
    for row in listed:
        links(cli, links_config, "remove", "--tenant", row[0], "--ysis-user", row[1], "--operator", "beheer")
    result = links(cli, links_config, "import", str(exported), "--operator", "beheer")

    assert result.returncode == 0, result.stderr
    assert rows(cli, links_config) == listed
    with exported.open(newline="") as read_back:
        names = [row["created_by"] for row in csv.DictReader(read_back)]
    assert names == ["Jan Jansen", "Zoë d'Ancona, beheer", "DOMEIN\\jan"]


async def test_list_escapes_control_characters(cli: Cli, links_config: Path) -> None:
    name = "evil\x1b[2J\x1b]0;title\x07\tx\ny\rz\u202e\\w"
    await store_links(links_config, Link("noord", "ysis-jan", "medimo-jan", NOW, name, None))

    result = await asyncio.to_thread(links, cli, links_config, "list")

    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    fields = line.split("\t")
    assert len(fields) == 6
    assert fields[3] == "evil\\x1b[2J\\x1b]0;title\\x07\\tx\\ny\\rz\\u202e\\\\w"
    assert not any(char in result.stdout for char in "\x1b\x07\r\u202e")
