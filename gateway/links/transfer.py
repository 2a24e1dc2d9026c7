"""Moving a link table in and out as CSV: ``links export`` and ``links import``.

The CSV has a header row with the columns of ``COLUMNS``. ``tenant``,
``ysis_user`` and ``medimo_account`` are required in every row; the other
columns may be left out or empty. Times are ISO 8601 with a UTC offset.

An import checks every row before it writes any: the tenant must be
configured, the IDs valid, ``created_by`` a valid administrator's name (see
``gateway.text``), and no row may break the one-to-one rule, neither against
another row nor against a link already in the table. A row equal to an
existing link is skipped, so an import can be run again. That holds for a
tenant that was removed from the tenants file too, because its links stay in
the table until they are removed. Any problem leaves the table as it was.

An export writes IDs as they are, because their rule admits no character that
a spreadsheet could run. ``created_by`` is free text and goes through
``spreadsheet_cell``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from gateway.links.store import Link
from gateway.text import operator_problem, spreadsheet_cell

if TYPE_CHECKING:
    from _csv import Reader

COLUMNS = ("tenant", "ysis_user", "medimo_account", "created_at", "created_by", "last_used_at")
REQUIRED = ("tenant", "ysis_user", "medimo_account")

#: Rows an import reads at most; a larger table is imported in parts.
MAX_ROWS = 1_000_000


def write_csv(links: Iterable[Link], output: TextIO) -> int:
    """Write links as CSV with a header row; return how many rows."""
    writer = csv.writer(output, lineterminator="\n")
    # The csv module quotes a field with a line feed, but not one with a lone
    # carriage return, which readers take for a line end. Such a row is
    # written with every field quoted.
    quoting = csv.writer(output, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(COLUMNS)
    count = 0
    for link in links:
        row = [
            link.tenant,
            link.ysis_user,
            link.medimo_account,
            link.created_at.isoformat(timespec="seconds"),
            spreadsheet_cell(link.created_by),
            link.last_used_at.isoformat(timespec="seconds") if link.last_used_at else "",
        ]
        (quoting if any("\r" in field for field in row) else writer).writerow(row)
        count += 1
    return count


@dataclass
class ImportPlan:
    """The checked rows of an import: what to add, what exists, what is wrong."""

    new: list[Link] = field(default_factory=list)
    existing: list[Link] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Rows skipped as present, per tenant that is not configured.
    unconfigured: dict[str, int] = field(default_factory=dict)


def plan_import(
    text: str,
    source: str,
    *,
    tenants: Collection[str],
    current: Sequence[Link],
    operator: str,
    now: dt.datetime,
) -> ImportPlan:
    """Check every row of a CSV against the tenants and the current table.

    ``source`` names the file in problems, as ``source:row: message``.
    """
    plan = ImportPlan()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, [])
    except csv.Error as error:
        plan.problems.append(f"{source}:1: the header is not valid CSV: {error}")
        return plan
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        plan.problems.append(
            f"{source}:1: the header must name the columns {', '.join(COLUMNS)} "
            f"(the first three are required), each once; found {', '.join(header) or 'nothing'}"
        )
        return plan

    by_user = {(link.tenant, link.ysis_user): link for link in current}
    by_account = {(link.tenant, link.medimo_account): link for link in current}
    seen_users: dict[tuple[str, str], int] = {}
    seen_accounts: dict[tuple[str, str], int] = {}
    try:
        for number, row in _records(reader, header):
            if len(plan.new) + len(plan.existing) >= MAX_ROWS:
                plan.problems.append(f"{source}:{number}: more than {MAX_ROWS} rows: split the file")
                break
            link = _read_row(row, operator, now)
            where = f"{source}:{number}"
            if isinstance(link, str):
                plan.problems.append(f"{where}: {link}")
                continue
            if link.tenant not in tenants:
                _place_unconfigured(link, by_user, plan, where)
                continue
            user_key = (link.tenant, link.ysis_user)
            account_key = (link.tenant, link.medimo_account)
            if user_key in seen_users:
                plan.problems.append(
                    f"{where}: Ysis user {link.ysis_user!r} of tenant {link.tenant!r} "
                    f"is also on row {seen_users[user_key]}: keep one of the rows"
                )
                continue
            if account_key in seen_accounts:
                plan.problems.append(
                    f"{where}: Medimo account {link.medimo_account!r} of tenant "
                    f"{link.tenant!r} is also on row {seen_accounts[account_key]}: "
                    "a Medimo account links to one Ysis user per tenant"
                )
                continue
            seen_users[user_key] = number
            seen_accounts[account_key] = number
            _place(link, by_user, by_account, plan, where)
    except csv.Error as error:
        plan.problems.append(f"{source}:{reader.line_num}: not valid CSV: {error}")
    return plan


def _records(
    reader: Reader, header: list[str]
) -> Iterator[tuple[int, dict[str | None, str]]]:
    """Yield each record with the number of the line it starts on.

    A quoted field may contain line breaks, so a record can span lines, and
    a problem names the first. Blank lines are skipped. Fields past the
    header's are collected under None, as ``csv.DictReader`` does.
    """
    line = 1
    while True:
        start = line + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        line = reader.line_num
        if not fields:
            continue
        record: dict[str | None, str] = dict(zip(header, fields))
        if len(fields) > len(header):
            record[None] = ",".join(fields[len(header) :])
        yield start, record


def _place(
    link: Link,
    by_user: dict[tuple[str, str], Link],
    by_account: dict[tuple[str, str], Link],
    plan: ImportPlan,
    where: str,
) -> None:
    linked = by_user.get((link.tenant, link.ysis_user))
    holder = by_account.get((link.tenant, link.medimo_account))
    if linked is not None and linked.medimo_account == link.medimo_account:
        plan.existing.append(linked)
    elif linked is not None:
        plan.problems.append(
            f"{where}: Ysis user {link.ysis_user!r} of tenant {link.tenant!r} is "
            f"already linked to {linked.medimo_account!r}: remove that link first"
        )
    elif holder is not None:
        plan.problems.append(
            f"{where}: Medimo account {link.medimo_account!r} of tenant "
            f"{link.tenant!r} is already linked to Ysis user {holder.ysis_user!r}: "
            "remove that link first"
        )
    else:
        plan.new.append(link)


def _place_unconfigured(
    link: Link, by_user: dict[tuple[str, str], Link], plan: ImportPlan, where: str
) -> None:
    """Skip a row of a tenant that is not configured if the table has it, else refuse it.

    A tenant removed from the tenants file keeps its links, so an earlier
    export still names them, and importing it again adds nothing. A new link for
    such a tenant could never be used.
    """
    linked = by_user.get((link.tenant, link.ysis_user))
    if linked is not None and linked.medimo_account == link.medimo_account:
        plan.existing.append(linked)
        plan.unconfigured[link.tenant] = plan.unconfigured.get(link.tenant, 0) + 1
        return
    plan.problems.append(
        f"{where}: tenant {link.tenant!r} is not configured: add it to the "
        "tenants file first, or leave the rows of this tenant out of the file"
    )


def _read_row(
    row: dict[str | None, str],
    operator: str,
    now: dt.datetime,
) -> Link | str:
    """Return the row's link, or the problem with the row, naming its column."""
    # Imported here, because the launch module imports the web stack.
    from gateway.flows.launch import ACCOUNT_ID
    from gateway.upstream.api import IDENTIFIER

    if None in row:
        return "the row has more fields than the header"
    values = {name: value.strip() for name, value in row.items()}
    tenant = values.get("tenant", "")
    ysis_user = values.get("ysis_user", "")
    account = values.get("medimo_account", "")
    if not tenant:
        return "tenant is empty: name a tenant of the tenants file"
    if not ACCOUNT_ID.match(ysis_user):
        return (
            f"ysis_user {ysis_user!r} is not a valid Ysis account ID: use 1 to 64 "
            "of the characters A-Z, a-z, 0-9 and . _ @ -"
        )
    if not IDENTIFIER.match(account):
        return (
            f"medimo_account {account!r} is not a valid account ID: use up to "
            "128 of the characters A-Z, a-z, 0-9 and . _ @ -, starting with a "
            "letter or digit"
        )
    created_by = values.get("created_by") or operator
    problem = operator_problem(created_by)
    if problem is not None:
        return f"created_by {problem}"
    try:
        created_at = _time("created_at", values.get("created_at", "")) or now
        last_used_at = _time("last_used_at", values.get("last_used_at", ""))
    except ValueError as error:
        return str(error)
    return Link(tenant, ysis_user, account, created_at, created_by, last_used_at)


def _time(column: str, text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{column} {text!r} is not an ISO 8601 time such as 2026-01-31T08:00:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise ValueError(f"{column} {text!r} has no UTC offset: add one, such as +00:00")
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        # Such as 9999-12-31T23:59:59-01:00, which is in the year 10000 in UTC.
        raise ValueError(
            f"{column} {text!r} is outside the years 1 to 9999 in UTC: "
            "give a time within them"
        ) from None
