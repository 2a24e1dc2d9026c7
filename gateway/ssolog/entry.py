"""Entries of the SSO log and the hash that chains its rows.

A row's hash is the SHA-256, as lower-case hex, of ``HASH_PREFIX`` followed
by the row's canonical encoding. That encoding is a JSON object of every
column except ``row_hash`` (``prev_hash`` included), with sorted keys, no
spaces and ASCII escapes. ``logged_at`` is written in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Each row stores the hash of the row before
it in ``prev_hash``, so changing or deleting a row breaks the chain after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.storage.tables import (
    CLIENT_LOOKUP_LENGTH,
    CREATED_BY_LENGTH,
    DETAIL_LENGTH,
    INSTANCE_LENGTH,
    MEDIMO_ACCOUNT_LENGTH,
    MEDIMO_CLIENT_LENGTH,
    OUTCOME_LENGTH,
    REASON_LENGTH,
    REQUEST_ID_LENGTH,
    SOURCE_IP_LENGTH,
    TENANT_LENGTH,
    YSIS_USER_LENGTH,
    require_aware,
)

#: Events written by the gateway while it serves requests.
REQUEST_EVENTS = frozenset(
    {
        "launch",
        "link_created",
        "logged_in",
        "client_opened",
        "logout",
        "refused",
    }
)

#: Events of administrators' commands. Their rows name the operator.
ADMIN_EVENTS = frozenset(
    {
        "link_added_by_admin",
        "link_removed_by_admin",
        "links_imported",
        "sessions_revoked",
    }
)

#: Events about the log itself.
LOG_EVENTS = frozenset({"log_purged", "entries_dropped"})

EVENTS = REQUEST_EVENTS | ADMIN_EVENTS | LOG_EVENTS

#: ``prev_hash`` of the first row ever written.
GENESIS_HASH = "0" * 64

#: Version tag in front of every hashed encoding, so a later format can differ.
HASH_PREFIX = b"sso-log-v1\n"

_TEXT_LIMITS = {
    "tenant": TENANT_LENGTH,
    "ysis_user": YSIS_USER_LENGTH,
    "medimo_account": MEDIMO_ACCOUNT_LENGTH,
    "medimo_client": MEDIMO_CLIENT_LENGTH,
    "client_lookup": CLIENT_LOOKUP_LENGTH,
    "source_ip": SOURCE_IP_LENGTH,
    "outcome": OUTCOME_LENGTH,
    "reason": REASON_LENGTH,
    "detail": DETAIL_LENGTH,
    "operator": CREATED_BY_LENGTH,
    "request_id": REQUEST_ID_LENGTH,
}


@dataclass(frozen=True)
class Entry:
    """One event of the log; the store adds id, instance and the hashes.

    Entries read back from the table keep their stored values unchanged, so
    that verifying hashes what is stored. ``prepared`` checks new entries.
    """

    event: str
    logged_at: datetime
    tenant: str | None = None
    ysis_user: str | None = None
    medimo_account: str | None = None
    medimo_client: str | None = None
    client_lookup: str | None = None
    source_ip: str | None = None
    outcome: str | None = None
    reason: str | None = None
    detail: str | None = None
    operator: str | None = None
    request_id: str | None = None


def prepared(entry: Entry) -> Entry:
    """Return a new entry checked and cleaned for its columns.

    Text is cut to its column's length and stripped of control characters,
    so that a value from upstream can never make a whole batch fail.
    """
    if entry.event not in EVENTS:
        raise ValueError(
            f"unknown SSO log event {entry.event!r}: expected one of "
            f"{', '.join(sorted(EVENTS))}"
        )
    require_aware("logged_at", entry.logged_at)
    cleaned: dict[str, Any] = {
        name: clean_text(getattr(entry, name), limit)
        for name, limit in _TEXT_LIMITS.items()
    }
    return dataclasses.replace(
        entry, logged_at=entry.logged_at.astimezone(UTC), **cleaned
    )


@dataclass(frozen=True)
class Row:
    """A stored row: its entry, its position in the chain and its hashes."""

    id: int
    instance: str
    entry: Entry
    prev_hash: str
    row_hash: str

    def computed_hash(self) -> str:
        """Return the hash that this row's fields and ``prev_hash`` give."""
        return chain_hash(self.id, self.instance, self.entry, self.prev_hash)

    def columns(self) -> dict[str, Any]:
        """Return the row as column values for an insert."""
        return {
            "id": self.id,
            "instance": self.instance,
            **{field.name: getattr(self.entry, field.name) for field in _ENTRY_FIELDS},
            "prev_hash": self.prev_hash,
            "row_hash": self.row_hash,
        }

    def document(self) -> dict[str, Any]:
        """Return the row as a JSON-ready mapping, columns in table order."""
        values = self.columns()
        return {
            "id": values.pop("id"),
            "time": _timestamp(values.pop("logged_at")),
            "instance": values.pop("instance"),
            "event": values.pop("event"),
            **values,
        }


_ENTRY_FIELDS = dataclasses.fields(Entry)


def chain(
    previous_id: int, previous_hash: str, instance: str, entries: Sequence[Entry]
) -> list[Row]:
    """Return ``entries``, prepared, as rows that follow the row ``previous_id``."""
    rows: list[Row] = []
    for offset, new in enumerate(entries, start=1):
        entry = prepared(new)
        row_id = previous_id + offset
        row_hash = chain_hash(row_id, instance, entry, previous_hash)
        rows.append(Row(row_id, instance, entry, previous_hash, row_hash))
        previous_hash = row_hash
    return rows


def chain_hash(row_id: int, instance: str, entry: Entry, prev_hash: str) -> str:
    """Return the hash of a row: see the module docstring for the encoding."""
    document: dict[str, Any] = {
        field.name: getattr(entry, field.name) for field in _ENTRY_FIELDS
    }
    document.update(
        id=row_id,
        instance=instance,
        logged_at=_timestamp(entry.logged_at),
        prev_hash=prev_hash,
    )
    encoded = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(HASH_PREFIX + encoded.encode("ascii")).hexdigest()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clean_text(value: str | None, limit: int) -> str | None:
    """Drop control characters and lone surrogates, then cut to ``limit``."""
    if value is None:
        return None
    kept = (char for char in value if unicodedata.category(char) not in ("Cc", "Cs"))
    return "".join(kept)[:limit]


def instance_name(configured: str | None) -> str:
    """Return the configured instance name, else host name and process ID."""
    if configured:
        return configured
    suffix = f"-{os.getpid()}"
    return socket.gethostname()[: INSTANCE_LENGTH - len(suffix)] + suffix
