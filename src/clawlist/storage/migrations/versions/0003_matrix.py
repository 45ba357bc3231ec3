"""matrix: devices, account data, filters, media, event reports, counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("device_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("device_name", sa.String(length=255), nullable=True))
        batch.create_index("ix_sessions_device", ["principal_id", "device_id"], unique=False)
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    op.create_table(
        "account_data",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "room_id", "type", name=op.f("pk_account_data")),
    )
    op.create_index("ix_account_data_version", "account_data", ["user_id", "version"], unique=False)
    op.create_table(
        "filters",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("filter_id", sa.BigInteger(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "filter_id", name=op.f("pk_filters")),
    )
    op.create_table(
        "media",
        sa.Column("media_id", sa.String(length=64), nullable=False),
        sa.Column("uploader", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("upload_name", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("media_id", name=op.f("pk_media")),
    )
    op.create_index(op.f("ix_media_uploader"), "media", ["uploader"], unique=False)
    op.create_table(
        "event_reports",
        sa.Column("report_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("reporter", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("resolved_ts", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("report_id", name=op.f("pk_event_reports")),
    )
    op.create_index(op.f("ix_event_reports_event_id"), "event_reports", ["event_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_event_reports_event_id"), table_name="event_reports")
    op.drop_table("event_reports")
    op.drop_index(op.f("ix_media_uploader"), table_name="media")
    op.drop_table("media")
    op.drop_table("filters")
    op.drop_index("ix_account_data_version", table_name="account_data")
    op.drop_table("account_data")
    op.drop_table("counters")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_device")
        batch.drop_column("device_name")
        batch.drop_column("device_id")
