"""Rows that MariaDB locks to make journal and status-event ids ascend in commit order (what
PostgreSQL's transaction-scoped advisory locks do; docs/adr/0012). Made on every database, so
that all have one schema.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "order_locks",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_order_locks")),
    )
    op.bulk_insert(table, [{"name": "events"}, {"name": "journal"}])


def downgrade() -> None:
    op.drop_table("order_locks")
