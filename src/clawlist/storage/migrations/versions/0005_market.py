"""marketplace: listings, offers, deals, the credit ledger, feedback, disputes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 08:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deal_transitions",
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deal_id", "seq", name=op.f("pk_deal_transitions")),
    )
    op.create_table(
        "deals",
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("listing_id", sa.String(length=255), nullable=False),
        sa.Column("offer_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("buyer", sa.String(length=255), nullable=False),
        sa.Column("seller", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested_by", sa.String(length=255), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.Column("ended_ts", sa.BigInteger(), nullable=True),
        sa.Column("due_ts", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("deal_id", name=op.f("pk_deals")),
        sa.UniqueConstraint("offer_id", name=op.f("uq_deals_offer_id")),
    )
    op.create_index(op.f("ix_deals_buyer"), "deals", ["buyer"], unique=False)
    op.create_index(op.f("ix_deals_listing_id"), "deals", ["listing_id"], unique=False)
    op.create_index(op.f("ix_deals_seller"), "deals", ["seller"], unique=False)
    op.create_index("ix_deals_state_due", "deals", ["state", "due_ts"], unique=False)
    op.create_table(
        "disputes",
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("opened_by", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("opened_ts", sa.BigInteger(), nullable=False),
        sa.Column("resolved_ts", sa.BigInteger(), nullable=True),
        sa.Column("resolver", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("buyer_amount", sa.BigInteger(), nullable=True),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("decision_event_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("deal_id", name=op.f("pk_disputes")),
    )
    op.create_index("ix_disputes_state_opened", "disputes", ["state", "opened_ts"], unique=False)
    op.create_table(
        "feedback",
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("rater", sa.String(length=255), nullable=False),
        sa.Column("ratee", sa.String(length=255), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("deal_amount", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("deal_id", "rater", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_ratee"), "feedback", ["ratee"], unique=False)
    op.create_table(
        "ledger_accounts",
        sa.Column("account_id", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_ledger_accounts")),
    )
    op.create_index(op.f("ix_ledger_accounts_owner"), "ledger_accounts", ["owner"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=320), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_ledger_entries")),
    )
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account_id", "entry_id"], unique=False)
    op.create_index(op.f("ix_ledger_entries_transfer_id"), "ledger_entries", ["transfer_id"], unique=False)
    op.create_table(
        "ledger_transfers",
        sa.Column("transfer_id", sa.String(length=64), nullable=False),
        sa.Column("idem_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("deal_id", sa.String(length=64), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", name=op.f("pk_ledger_transfers")),
        sa.UniqueConstraint("idem_key", name=op.f("uq_ledger_transfers_idem_key")),
    )
    op.create_index(op.f("ix_ledger_transfers_deal_id"), "ledger_transfers", ["deal_id"], unique=False)
    op.create_table(
        "listings",
        sa.Column("listing_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("seller", sa.String(length=255), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("condition", sa.String(length=32), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("images", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("listing_id", name=op.f("pk_listings")),
    )
    op.create_index("ix_listings_seller_state", "listings", ["seller", "state"], unique=False)
    op.create_index(
        "ix_listings_state_category_price", "listings", ["state", "category", "price"], unique=False
    )
    op.create_index("ix_listings_state_created", "listings", ["state", "created_ts"], unique=False)
    op.create_index("ix_listings_state_expires", "listings", ["state", "expires_ts"], unique=False)
    op.create_table(
        "offers",
        sa.Column("offer_id", sa.String(length=255), nullable=False),
        sa.Column("listing_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("buyer", sa.String(length=255), nullable=False),
        sa.Column("seller", sa.String(length=255), nullable=False),
        sa.Column("from_agent", sa.String(length=255), nullable=False),
        sa.Column("to_agent", sa.String(length=255), nullable=False),
        sa.Column("parent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("offer_id", name=op.f("pk_offers")),
    )
    op.create_index(op.f("ix_offers_listing_id"), "offers", ["listing_id"], unique=False)
    op.create_index("ix_offers_room_state", "offers", ["room_id", "state"], unique=False)
    op.create_index("ix_offers_state_expires", "offers", ["state", "expires_ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_offers_state_expires", table_name="offers")
    op.drop_index("ix_offers_room_state", table_name="offers")
    op.drop_index(op.f("ix_offers_listing_id"), table_name="offers")
    op.drop_table("offers")
    op.drop_index("ix_listings_state_expires", table_name="listings")
    op.drop_index("ix_listings_state_created", table_name="listings")
    op.drop_index("ix_listings_state_category_price", table_name="listings")
    op.drop_index("ix_listings_seller_state", table_name="listings")
    op.drop_table("listings")
    op.drop_index(op.f("ix_ledger_transfers_deal_id"), table_name="ledger_transfers")
    op.drop_table("ledger_transfers")
    op.drop_index(op.f("ix_ledger_entries_transfer_id"), table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_account", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_ledger_accounts_owner"), table_name="ledger_accounts")
    op.drop_table("ledger_accounts")
    op.drop_index(op.f("ix_feedback_ratee"), table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_disputes_state_opened", table_name="disputes")
    op.drop_table("disputes")
    op.drop_index("ix_deals_state_due", table_name="deals")
    op.drop_index(op.f("ix_deals_seller"), table_name="deals")
    op.drop_index(op.f("ix_deals_listing_id"), table_name="deals")
    op.drop_index(op.f("ix_deals_buyer"), table_name="deals")
    op.drop_table("deals")
    op.drop_table("deal_transitions")
