"""SQL schema of the gateway: the link table, the revocation feed, the SSO log.

Every datetime column stores UTC and reads back as an aware UTC ``datetime`` on
both SQLite and PostgreSQL. Migrations under ``migrations/versions`` create the
same tables, so a change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

TENANT_LENGTH = 63
YSIS_USER_LENGTH = 64
MEDIMO_ACCOUNT_LENGTH = 128
CREATED_BY_LENGTH = 128
KIND_LENGTH = 16
SUBJECT_LENGTH = 128
INSTANCE_LENGTH = 128
EVENT_LENGTH = 32
MEDIMO_CLIENT_LENGTH = 128
CLIENT_LOOKUP_LENGTH = 16
SOURCE_IP_LENGTH = 45
OUTCOME_LENGTH = 32
REASON_LENGTH = 64
DETAIL_LENGTH = 200
REQUEST_ID_LENGTH = 32
#: A SHA-256 hash as lower-case hex.
HASH_LENGTH = 64
REVOKED_BY_LENGTH = 128


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetime column that stores UTC and returns UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        """Convert an aware datetime to UTC, rejecting naive ones."""
        if value is None:
            return None
        require_aware("datetime value", value)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite's DATETIME storage format drops the offset, so store naive UTC.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        """Return the stored value as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData()

links = Table(
    "links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(TENANT_LENGTH), nullable=False),
    Column("ysis_user", String(YSIS_USER_LENGTH), nullable=False),
    Column("medimo_account", String(MEDIMO_ACCOUNT_LENGTH), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("created_by", String(CREATED_BY_LENGTH), nullable=False),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Index("ix_links_tenant_ysis_user", "tenant", "ysis_user", unique=True),
    Index("ix_links_tenant_medimo_account", "tenant", "medimo_account", unique=True),
)

# Readers poll with "id > last seen id", so ids must never be reused. On SQLite,
# AUTOINCREMENT stops the id of a purged newest row from being handed out again.
# ``revoked_by`` names the administrator of a command-line revocation. It is
# NULL for the ones the gateway records itself (logout, a new launch).
revocations = Table(
    "revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(KIND_LENGTH), nullable=False),
    Column("tenant", String(TENANT_LENGTH), nullable=False),
    Column("subject", String(SUBJECT_LENGTH), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked_by", String(REVOKED_BY_LENGTH), nullable=True),
    Index("ix_revocations_expires_at", "expires_at"),
    sqlite_autoincrement=True,
)

# The SSO log is one hash chain in id order (see gateway.ssolog). Writers
# assign id as the last id plus one, and the unique prev_hash index lets
# only one row follow each row. Two writers that read the same last row
# therefore cannot both insert, so the chain does not fork.
sso_log = Table(
    "sso_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("logged_at", UtcDateTime(), nullable=False),
    Column("instance", String(INSTANCE_LENGTH), nullable=False),
    Column("event", String(EVENT_LENGTH), nullable=False),
    Column("tenant", String(TENANT_LENGTH), nullable=True),
    Column("ysis_user", String(YSIS_USER_LENGTH), nullable=True),
    Column("medimo_account", String(MEDIMO_ACCOUNT_LENGTH), nullable=True),
    Column("medimo_client", String(MEDIMO_CLIENT_LENGTH), nullable=True),
    Column("client_lookup", String(CLIENT_LOOKUP_LENGTH), nullable=True),
    Column("source_ip", String(SOURCE_IP_LENGTH), nullable=True),
    Column("outcome", String(OUTCOME_LENGTH), nullable=True),
    Column("reason", String(REASON_LENGTH), nullable=True),
    Column("detail", String(DETAIL_LENGTH), nullable=True),
    Column("operator", String(CREATED_BY_LENGTH), nullable=True),
    Column("request_id", String(REQUEST_ID_LENGTH), nullable=True),
    Column("prev_hash", String(HASH_LENGTH), nullable=False),
    Column("row_hash", String(HASH_LENGTH), nullable=False),
    Index("ix_sso_log_prev_hash", "prev_hash", unique=True),
    Index("ix_sso_log_logged_at", "logged_at"),
    Index("ix_sso_log_ysis_user", "ysis_user"),
    Index("ix_sso_log_medimo_account", "medimo_account"),
)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def require_aware(name: str, value: datetime) -> None:
    """Raise ValueError if ``value`` has no timezone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


def require_text(
    name: str, value: str, max_length: int, *, allow_empty: bool = False
) -> None:
    """Raise ValueError if ``value`` is empty or longer than its column allows."""
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValueError(
            f"{name} is {len(value)} characters long, the maximum is {max_length}"
        )
