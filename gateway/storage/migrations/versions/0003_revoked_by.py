"""Record who revoked: the administrator of a command-line revocation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-11 09:12:40
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``revocations.revoked_by`` column.

    Rows written before it stay NULL, as do the gateway's own revocations.
    """
    op.add_column(
        "revocations", sa.Column("revoked_by", sa.String(128), nullable=True)
    )


def downgrade() -> None:
    """Drop ``revocations.revoked_by`` again."""
    # A plain DROP COLUMN, not a batch copy of the table: the copy could lose
    # SQLite's AUTOINCREMENT, and then ids of purged rows could come back.
    op.drop_column("revocations", "revoked_by")
