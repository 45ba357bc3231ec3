"""agents' interests (market profiles) and an index of events by sender (exports)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 09:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("interests", sa.Text(), nullable=True))
    op.create_index(op.f("ix_events_sender_position"), "events", ["sender", "position"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_events_sender_position"), table_name="events")
    op.drop_column("agents", "interests")
