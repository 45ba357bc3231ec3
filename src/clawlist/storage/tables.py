"""The schema, as SQLAlchemy Core tables. Alembic migrations in `migrations/` create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Single-row counter: the next stream position. Its row lock serialises writers across processes,
# which is what makes positions visible in order (no reader sees N+1 before N commits).
stream_counter = Table(
    "stream_counter",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("handle", String(32), nullable=False),
    Column("display_name", String(255), nullable=True),
    Column("avatar_url", String(1024), nullable=True),
    Column("bio", Text, nullable=True),
    Column("interests", Text, nullable=True),  # JSON array of short strings (market profile)
    Column("public_key", LargeBinary, nullable=True),
    Column("password_hash", String(255), nullable=True),
    Column("owner_human_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False, default="agent"),  # agent | system
    Column("created_ts", BigInteger, nullable=False),
    Column("deactivated_ts", BigInteger, nullable=True),
)

# Every handle an agent has ever had, lower-cased. A handle, once used, names one agent forever,
# so an old `@handle:server` can never be taken over by someone else.
handles = Table(
    "handles",
    metadata,
    Column("handle", String(32), primary_key=True),
    Column("user_id", String(255), nullable=False, index=True),
    Column("current", Boolean, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

humans = Table(
    "humans",
    metadata,
    Column("human_id", String(64), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # stored lower-cased
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),  # observer | owner | moderator | admin
    Column("display_name", String(255), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("deactivated_ts", BigInteger, nullable=True),
)

registration_tokens = Table(
    "registration_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("uses_allowed", Integer, nullable=True),
    Column("uses", Integer, nullable=False, default=0),
    Column("expires_ts", BigInteger, nullable=True),
    Column("created_by", String(255), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
)

login_challenges = Table(
    "login_challenges",
    metadata,
    Column("nonce_hash", String(64), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
)

# A session is one login (a device, in Matrix words): a token family for JWT logins, or the
# holder of one long-lived token. Idempotency of sends is keyed on it.
sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("principal_id", String(255), nullable=False, index=True),
    Column("principal_kind", String(16), nullable=False),  # agent | human
    Column("kind", String(16), nullable=False),  # jwt | static
    Column("scope", String(16), nullable=False),  # full | read
    Column("label", String(255), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("revoked_ts", BigInteger, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    # The Matrix device id (a client may choose it at login); None for native sessions.
    Column("device_id", String(255), nullable=True),
    Column("device_name", String(255), nullable=True),
    Index("ix_sessions_device", "principal_id", "device_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False, index=True),
    Column("issued_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
)

static_tokens = Table(
    "static_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False, index=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=True),
)

claim_codes = Table(
    "claim_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("agent_user_id", String(255), nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
    Column("used_by", String(64), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

rooms = Table(
    "rooms",
    metadata,
    Column("room_id", String(255), primary_key=True),
    Column("creator", String(255), nullable=False),
    Column("room_type", String(64), nullable=True),  # None | m.space
    Column("is_public", Boolean, nullable=False),
    Column("is_direct", Boolean, nullable=False),
    Column("dm_key", String(600), nullable=True, unique=True),
    Column("depth", BigInteger, nullable=False),
    # Position of the room's latest state change (or redaction): the version of its state.
    Column("state_position", BigInteger, nullable=False, default=0, server_default="0"),
    Column("created_ts", BigInteger, nullable=False),
)

room_aliases = Table(
    "room_aliases",
    metadata,
    Column("alias", String(255), primary_key=True),
    Column("room_id", String(255), nullable=False, index=True),
    Column("creator", String(255), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("room_id", String(255), nullable=False),
    Column("type", String(255), nullable=False),
    Column("state_key", String(255), nullable=True),
    Column("sender", String(255), nullable=False),
    Column("origin_server_ts", BigInteger, nullable=False),
    Column("depth", BigInteger, nullable=False),
    Column("content", Text, nullable=False),  # canonical JSON
    Column("relates_to", String(64), nullable=True),
    Column("rel_type", String(64), nullable=True),
    Column("redacted_by", String(64), nullable=True),
    Column("session_id", String(64), nullable=True),
    Column("txn_id", String(255), nullable=True),
    Index("ix_events_room_position", "room_id", "position"),
    Index("ix_events_relates_to", "relates_to"),
    Index("ix_events_sender_position", "sender", "position"),  # an agent's own events (exports)
)

current_state = Table(
    "current_state",
    metadata,
    Column("room_id", String(255), primary_key=True),
    Column("type", String(255), primary_key=True),
    Column("state_key", String(255), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("position", BigInteger, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("room_id", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("membership", String(16), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_memberships_user", "user_id", "membership"),
)

# (sender, session, txn_id) -> the event it produced: a retransmission gets the first answer.
transactions = Table(
    "transactions",
    metadata,
    Column("sender", String(255), primary_key=True),
    Column("session_id", String(64), primary_key=True),
    Column("txn_id", String(255), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("room_id", String(255), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("room_id", String(255), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("receipt_type", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
)

# Named monotonic counters (account-data versions, filter ids): UPDATE ... RETURNING under the row lock.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Per-user key/value JSON (Matrix account data): global when room_id is "", else per room.
# `version` comes from the "account_data" counter, so a sync can ask "what changed after N".
account_data = Table(
    "account_data",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("room_id", String(255), primary_key=True),
    Column("type", String(255), primary_key=True),
    Column("content", Text, nullable=False),  # JSON object
    Column("version", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Index("ix_account_data_version", "user_id", "version"),
)

# Matrix sync filters, numbered per user.
filters = Table(
    "filters",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("filter_id", BigInteger, primary_key=True),
    Column("definition", Text, nullable=False),  # canonical JSON
    Column("created_ts", BigInteger, nullable=False),
)

# Uploaded files; the bytes live under data_dir/media/, named by media_id.
media = Table(
    "media",
    metadata,
    Column("media_id", String(64), primary_key=True),
    Column("uploader", String(255), nullable=False, index=True),
    Column("content_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("upload_name", String(255), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# Reports of events for trust & safety review.
event_reports = Table(
    "event_reports",
    metadata,
    Column("report_id", Integer, primary_key=True, autoincrement=True),
    Column("room_id", String(255), nullable=False),
    Column("event_id", String(64), nullable=False, index=True),
    Column("reporter", String(255), nullable=False),
    Column("reason", Text, nullable=True),
    Column("score", Integer, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("resolved_ts", BigInteger, nullable=True),
)

# Rooms a user forgot after leaving (Matrix /forget): hidden from their syncs while their membership
# is still the one they forgot at (`position`); a later join or invite brings the room back.
forgotten_rooms = Table(
    "forgotten_rooms",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("room_id", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("forgotten_ts", BigInteger, nullable=False),
)

# -- the marketplace (projections of market events, written in the event's transaction)

# A listing is the `clawlist.listing` message that posted it: listing_id is that event's id.
listings = Table(
    "listings",
    metadata,
    Column("listing_id", String(255), primary_key=True),
    Column("room_id", String(255), nullable=False),
    Column("seller", String(255), nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("category", String(64), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("available", Integer, nullable=False),  # quantity not held by open deals nor sold
    Column("condition", String(32), nullable=True),
    Column("location", Text, nullable=True),
    Column("country", String(2), nullable=True),
    Column("region", String(64), nullable=True),
    Column("tags", Text, nullable=False),  # JSON array of strings
    Column("images", Text, nullable=False),  # JSON array of mxc:// URIs
    Column("state", String(16), nullable=False),  # active | reserved | sold | withdrawn | expired
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Index("ix_listings_state_category_price", "state", "category", "price"),
    Index("ix_listings_seller_state", "seller", "state"),
    Index("ix_listings_state_created", "state", "created_ts"),
    Index("ix_listings_state_expires", "state", "expires_ts"),
)

# An offer (or counter-offer) is its event: offer_id is the event id. `parent_id` is the offer a
# counter answers. from_agent made it; to_agent may accept, reject or counter it.
offers = Table(
    "offers",
    metadata,
    Column("offer_id", String(255), primary_key=True),
    Column("listing_id", String(255), nullable=False, index=True),
    Column("room_id", String(255), nullable=False),
    Column("buyer", String(255), nullable=False),
    Column("seller", String(255), nullable=False),
    Column("from_agent", String(255), nullable=False),
    Column("to_agent", String(255), nullable=False),
    Column("parent_id", String(255), nullable=True),
    Column("amount", BigInteger, nullable=False),  # total for `quantity` units, minor units
    Column("quantity", Integer, nullable=False),
    # open | countered | accepted | rejected | withdrawn | expired
    Column("state", String(16), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Index("ix_offers_state_expires", "state", "expires_ts"),
    Index("ix_offers_room_state", "room_id", "state"),
)

deals = Table(
    "deals",
    metadata,
    Column("deal_id", String(64), primary_key=True),
    Column("listing_id", String(255), nullable=False, index=True),
    Column("offer_id", String(255), nullable=False, unique=True),
    Column("room_id", String(255), nullable=False),
    Column("buyer", String(255), nullable=False, index=True),
    Column("seller", String(255), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("fee", BigInteger, nullable=True),  # taken on release
    Column("state", String(16), nullable=False),
    Column("cancel_requested_by", String(255), nullable=True),  # cancellation after funding needs both
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("ended_ts", BigInteger, nullable=True),  # completed, resolved or cancelled
    Column("due_ts", BigInteger, nullable=True),  # agreed: funding deadline; delivered: auto-confirm time
    Index("ix_deals_state_due", "state", "due_ts"),
)

# Every deal transition: the row beside the event in the DM.
deal_transitions = Table(
    "deal_transitions",
    metadata,
    Column("deal_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("event_id", String(255), nullable=True),
    Column("note", Text, nullable=True),
    Column("ts", BigInteger, nullable=False),
)

# Double-entry ledger. Accounts: `wallet:<user_id>`, `escrow:<deal_id>`, `fees`, `mint`. `balance`
# is the sum of the account's entries, kept in the same transaction; only `mint` may go negative.
ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("account_id", String(320), primary_key=True),
    Column("kind", String(16), nullable=False),  # wallet | escrow | fees | mint
    Column("owner", String(255), nullable=True, index=True),
    Column("balance", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

# A transfer is balanced (its entries sum to zero) and idempotent by `idem_key`.
ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("idem_key", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # mint | hold | release | refund | fee | split | transfer
    Column("deal_id", String(64), nullable=True, index=True),
    Column("memo", Text, nullable=True),
    Column("created_by", String(255), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("transfer_id", String(64), nullable=False, index=True),
    Column("account_id", String(320), nullable=False),
    Column("amount", BigInteger, nullable=False),  # positive: credit to the account; negative: debit
    Column("created_ts", BigInteger, nullable=False),
    Index("ix_ledger_entries_account", "account_id", "entry_id"),
)

# Feedback on a deal, once per party (rater), +1 / 0 / -1.
feedback = Table(
    "feedback",
    metadata,
    Column("deal_id", String(64), primary_key=True),
    Column("rater", String(255), primary_key=True),
    Column("ratee", String(255), nullable=False, index=True),
    Column("rating", Integer, nullable=False),
    Column("comment", Text, nullable=False),
    Column("deal_amount", BigInteger, nullable=False),
    Column("event_id", String(255), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
)

disputes = Table(
    "disputes",
    metadata,
    Column("deal_id", String(64), primary_key=True),
    Column("opened_by", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("state", String(16), nullable=False),  # open | resolved
    Column("opened_ts", BigInteger, nullable=False),
    Column("resolved_ts", BigInteger, nullable=True),
    Column("resolver", String(255), nullable=True),
    Column("outcome", String(16), nullable=True),  # refund | release | split
    Column("buyer_amount", BigInteger, nullable=True),  # split: what goes back to the buyer
    Column("decision", Text, nullable=True),
    Column("decision_event_id", String(255), nullable=True),
    Index("ix_disputes_state_opened", "state", "opened_ts"),
)

__all__ = [
    "account_data",
    "agents",
    "audit_log",
    "claim_codes",
    "counters",
    "current_state",
    "deal_transitions",
    "deals",
    "disputes",
    "event_reports",
    "events",
    "feedback",
    "filters",
    "forgotten_rooms",
    "handles",
    "humans",
    "ledger_accounts",
    "ledger_entries",
    "ledger_transfers",
    "listings",
    "login_challenges",
    "media",
    "memberships",
    "metadata",
    "offers",
    "receipts",
    "refresh_tokens",
    "registration_tokens",
    "room_aliases",
    "rooms",
    "server_secrets",
    "sessions",
    "static_tokens",
    "stream_counter",
    "transactions",
]
