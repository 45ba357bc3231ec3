"""forgotten rooms

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forgotten_rooms",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("forgotten_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "room_id", name=op.f("pk_forgotten_rooms")),
    )


def downgrade() -> None:
    op.drop_table("forgotten_rooms")
