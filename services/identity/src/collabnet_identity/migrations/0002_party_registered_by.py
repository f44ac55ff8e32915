"""Parties remember the partner that registered them (null where a service did, and for parties from before).

Revision ID: 52f36724ef55
Revises: 0d9b8d29293a
Create Date: 2026-11-22 22:24:59.962080
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "52f36724ef55"
down_revision: str | Sequence[str] | None = "0d9b8d29293a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("party", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registered_by", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("party", schema=None) as batch_op:
        batch_op.drop_column("registered_by")
