"""Create the link table and the revocation feed.

Revision ID: 0001
Revises:
Create Date: 2026-12-04 05:07:11
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``links`` and ``revocations`` tables with their indexes."""
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("ysis_user", sa.String(64), nullable=False),
        sa.Column("medimo_account", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_links_tenant_ysis_user", "links", ["tenant", "ysis_user"], unique=True
    )
    op.create_index(
        "ix_links_tenant_medimo_account",
        "links",
        ["tenant", "medimo_account"],
        unique=True,
    )
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # Pollers read "id > last seen id", so SQLite must never reuse an id.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_revocations_expires_at", "revocations", ["expires_at"])


def downgrade() -> None:
    """Drop both tables and their indexes."""
    op.drop_index("ix_revocations_expires_at", table_name="revocations")
    op.drop_table("revocations")
    op.drop_index("ix_links_tenant_medimo_account", table_name="links")
    op.drop_index("ix_links_tenant_ysis_user", table_name="links")
    op.drop_table("links")
