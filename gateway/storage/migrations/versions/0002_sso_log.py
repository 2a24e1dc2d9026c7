"""Create the SSO log, a hash-chained table that rejects updates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 09:12:40
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Raised by the database for any UPDATE of an SSO log row.
APPEND_ONLY_MESSAGE = "sso_log is append-only: rows cannot be updated"

SQLITE_TRIGGER = f"""
CREATE TRIGGER sso_log_no_update BEFORE UPDATE ON sso_log
BEGIN
    SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}');
END
"""

POSTGRES_FUNCTION = f"""
CREATE FUNCTION sso_log_reject_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}';
END
$$
"""

POSTGRES_TRIGGER = """
CREATE TRIGGER sso_log_no_update BEFORE UPDATE ON sso_log
FOR EACH ROW EXECUTE FUNCTION sso_log_reject_update()
"""


def upgrade() -> None:
    """Create ``sso_log``, its indexes and the trigger that rejects updates."""
    op.create_table(
        "sso_log",
        # Assigned by the writer as the last id plus one, never by a sequence.
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=True),
        sa.Column("ysis_user", sa.String(64), nullable=True),
        sa.Column("medimo_account", sa.String(128), nullable=True),
        sa.Column("medimo_client", sa.String(128), nullable=True),
        sa.Column("client_lookup", sa.String(16), nullable=True),
        sa.Column("source_ip", sa.String(45), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("operator", sa.String(128), nullable=True),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    )
    # One row per predecessor: two writers cannot fork the chain.
    op.create_index("ix_sso_log_prev_hash", "sso_log", ["prev_hash"], unique=True)
    op.create_index("ix_sso_log_logged_at", "sso_log", ["logged_at"])
    op.create_index("ix_sso_log_ysis_user", "sso_log", ["ysis_user"])
    op.create_index("ix_sso_log_medimo_account", "sso_log", ["medimo_account"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    """Drop the trigger, the indexes and ``sso_log``."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS sso_log_no_update ON sso_log")
        op.execute("DROP FUNCTION IF EXISTS sso_log_reject_update()")
    else:
        op.execute("DROP TRIGGER IF EXISTS sso_log_no_update")
    for name in (
        "ix_sso_log_medimo_account",
        "ix_sso_log_ysis_user",
        "ix_sso_log_logged_at",
        "ix_sso_log_prev_hash",
    ):
        op.drop_index(name, table_name="sso_log")
    op.drop_table("sso_log")
