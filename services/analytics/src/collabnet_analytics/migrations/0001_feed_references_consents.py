"""Feed events and entries, the feed's position counter, references, waiting events, partners, consents.

Revision ID: bc6ecf04e418
Revises:
Create Date: 2026-11-23 01:00:01.712055
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import collabnet_kit.db

revision: str = "bc6ecf04e418"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent",
        sa.Column("party_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("partner_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("expire_time", collabnet_kit.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("change_time", collabnet_kit.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("party_id", "partner_id"),
    )
    op.create_table(
        "feed_counter",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    counter = sa.table("feed_counter", sa.column("name", sa.String), sa.column("value", sa.BigInteger))
    op.bulk_insert(counter, [{"name": "feed", "value": 0}])
    op.create_table(
        "feed_event",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("time", collabnet_kit.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", collabnet_kit.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "partner",
        sa.Column("partner_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint("partner_id"),
    )
    op.create_table(
        "reference",
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("ref_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("partners", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "ref_id"),
    )
    op.create_table(
        "feed_entry",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("partner_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["feed_event.id"],
        ),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("partner_id", "event_id", name="feed_entry_once"),
    )
    with op.batch_alter_table("feed_entry", schema=None) as batch_op:
        batch_op.create_index("feed_entry_partner_position", ["partner_id", "position"], unique=False)

    op.create_table(
        "waiting_event",
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("ref_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["feed_event.id"],
        ),
        sa.PrimaryKeyConstraint("event_id", "kind", "ref_id"),
    )
    with op.batch_alter_table("waiting_event", schema=None) as batch_op:
        batch_op.create_index("waiting_event_reference", ["kind", "ref_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("waiting_event", schema=None) as batch_op:
        batch_op.drop_index("waiting_event_reference")

    op.drop_table("waiting_event")
    with op.batch_alter_table("feed_entry", schema=None) as batch_op:
        batch_op.drop_index("feed_entry_partner_position")

    op.drop_table("feed_entry")
    op.drop_table("reference")
    op.drop_table("partner")
    op.drop_table("feed_event")
    op.drop_table("feed_counter")
    op.drop_table("consent")
