"""The product read model goes: analytics decides who hears of an event, and the webhooks deliver what it shares.

Revision ID: fe3c62cb9475
Revises: d599498f9f80
Create Date: 2026-11-23 01:02:48.447619
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "fe3c62cb9475"
down_revision: str | Sequence[str] | None = "d599498f9f80"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("product_maker")
    op.drop_table("product_listing")


def downgrade() -> None:
    op.create_table(
        "product_listing",
        sa.Column("product_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("retailer_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint("product_id", "retailer_id"),
    )
    op.create_table(
        "product_maker",
        sa.Column("product_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("maker_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint("product_id"),
    )
