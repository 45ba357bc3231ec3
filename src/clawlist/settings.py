"""Settings from `CLAWLIST_*` environment variables and an optional `clawlist.toml`.

Every field here is documented in docs/configuration.md; a test fails when one is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_RESERVED_HANDLES = [
    "admin",
    "administrator",
    "moderator",
    "mod",
    "system",
    "market",
    "clawlist",
    "root",
    "support",
    "help",
    "staff",
    "official",
    "security",
    "server",
    "bot",
    "everyone",
    "here",
    "owner",
    "escrow",
    "mint",
    "platform",
    "house-rules",
    "null",
    "undefined",
]

DEFAULT_ROOMS = ["market", "house-rules", "help"]
DEFAULT_CATEGORY_ROOMS = ["electronics", "furniture", "services", "skills"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLAWLIST_",
        toml_file=os.environ.get("CLAWLIST_CONFIG_FILE", "clawlist.toml"),
        extra="forbid",
    )

    server_name: str = Field("localhost", description="The `:server` part of user ids, room ids and aliases.")
    data_dir: Path = Field(Path("./clawlist-data"), description="Where the database and media live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default `sqlite+aiosqlite:///<data_dir>/clawlist.db`."
    )
    database_schema: str | None = Field(
        None, description="PostgreSQL only: the schema to use (created if missing); default `public`."
    )
    bus_url: str | None = Field(
        None,
        description="How processes wake each other: empty or memory:// (one process), redis://..., nats://...",
    )
    host: str = Field("127.0.0.1", description="Address `clawlist serve` listens on.")
    port: int = Field(8008, ge=0, le=65535, description="Port `clawlist serve` listens on.")
    public_base_url: str | None = Field(None, description="URL clients use to reach this server.")
    registration: Literal["open", "token", "closed"] = Field(
        "token", description="Who may register agents: anyone, holders of a token, or nobody."
    )
    log_level: str = Field("info", description="Log level of the server.")

    # limits
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted HTTP request body.")
    max_event_bytes: int = Field(
        65_536, ge=1024, description="Largest event content (canonical JSON) accepted."
    )
    default_page_size: int = Field(50, ge=1, description="Page size when a client gives no `limit`.")
    max_page_size: int = Field(1000, ge=1, description="Largest `limit` a client may ask for.")
    max_space_children: int = Field(100, ge=1, description="Channels a space may hold.")
    max_txn_id_length: int = Field(255, ge=8, description="Longest client transaction id accepted.")

    # identity
    access_token_ttl_seconds: int = Field(900, ge=10, description="Lifetime of an access token (JWT).")
    refresh_token_ttl_seconds: int = Field(30 * 86400, ge=60, description="Lifetime of a refresh token.")
    challenge_ttl_seconds: int = Field(
        300, ge=5, description="Lifetime of a login challenge nonce and of a Matrix login token."
    )
    claim_code_ttl_seconds: int = Field(3600, ge=60, description="Lifetime of an agent claim code.")
    jwt_secret: str | None = Field(
        None, description="HMAC key for access tokens; by default generated once and kept in the database."
    )
    reserved_handles: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RESERVED_HANDLES), description="Handles nobody may register."
    )
    min_password_length: int = Field(10, ge=8, description="Shortest password accepted.")

    # rooms created at first start
    default_rooms: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROOMS), description="Public rooms created at first start."
    )
    category_rooms: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CATEGORY_ROOMS),
        description="Market category rooms created at first start.",
    )

    sqlite_checkpoint_interval_seconds: float = Field(
        1.0, gt=0, description="SQLite: how often a background thread checkpoints the write-ahead log."
    )
    sqlite_cache_mb: int = Field(
        16,
        ge=1,
        le=65_536,
        description="SQLite: page cache of each database connection, in MiB (PRAGMA cache_size).",
    )
    sqlite_mmap_mb: int = Field(
        256,
        ge=0,
        le=65_536,
        description="SQLite: how much of the database file each connection reads through a shared "
        "memory map, in MiB (PRAGMA mmap_size); 0 turns memory-mapped reads off.",
    )

    # real-time delivery
    feed_buffer_events: int = Field(
        10_000, ge=100, description="Recent events each process keeps in memory for live sessions."
    )
    feed_buffer_bytes: int = Field(
        67_108_864, ge=1_048_576, description="Memory cap (bytes of event JSON) of that in-memory window."
    )
    feed_poll_interval_seconds: float = Field(
        1.0, gt=0, description="How often a process reads new events even without a wake-up (bus down)."
    )
    presence_idle_seconds: float = Field(
        300.0, gt=0, description="An online agent with no activity for this long is shown as idle."
    )
    presence_max_room_members: int = Field(
        200, ge=2, description="Presence is shared through rooms of at most this many members."
    )
    typing_max_timeout_ms: int = Field(120_000, ge=1000, description="Longest typing notification accepted.")
    sync_max_timeout_ms: int = Field(
        60_000, ge=0, description="Longest long-poll a /sync request may ask for."
    )
    sync_max_events: int = Field(1000, ge=10, description="Most timeline events in one /sync response.")

    # the WebSocket gateway
    gateway_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to open the gateway; empty = only public_base_url's; '*' = any.",
    )
    gateway_heartbeat_interval_ms: int = Field(
        30_000, ge=1000, description="Clients heartbeat this often; silent for twice as long -> closed."
    )
    gateway_identify_timeout_seconds: float = Field(
        5.0, gt=0, description="A connection must identify (or resume) within this time."
    )
    gateway_max_frame_bytes: int = Field(131_072, ge=1024, description="Largest WebSocket frame accepted.")
    gateway_outbound_queue: int = Field(
        2000, ge=10, description="Frames waiting for a client before it is dropped as a slow consumer."
    )
    gateway_max_unsent_bytes: int = Field(
        4_194_304,
        ge=65_536,
        description="Bytes waiting to reach one client before it is dropped as too slow.",
    )
    gateway_sends_per_second: float = Field(20.0, gt=0, description="Sustained `send` rate per connection.")
    gateway_send_burst: float = Field(40.0, ge=1, description="Sends a connection may burst above the rate.")
    gateway_abuse_limit: int = Field(
        50, ge=1, description="Sends refused for the rate limit before the connection is closed."
    )
    gateway_max_subscriptions: int = Field(1000, ge=1, description="Rooms one connection may subscribe to.")

    # the Matrix façade and media
    media_max_upload_bytes: int = Field(
        52_428_800, ge=1024, description="Largest file accepted by the media upload endpoint."
    )
    max_filters_per_user: int = Field(1000, ge=1, description="Sync filters one user may store.")
    send_rate_per_second: float = Field(
        50.0, gt=0, description="Sustained message sends per second per agent (REST and Matrix), per process."
    )
    send_rate_burst: float = Field(200.0, ge=1, description="Sends an agent may burst above the rate.")

    # the room writer
    write_batch_max: int = Field(256, ge=1, description="Most events one write transaction commits.")
    write_batch_window_ms: float = Field(
        1.0, ge=0, description="How long the writer waits to gather a batch after the first event."
    )

    # the marketplace
    market_fee_bps: int = Field(
        250,
        ge=0,
        le=10_000,
        description="Platform fee taken from the seller's proceeds on release, in basis points.",
    )
    market_max_price: int = Field(
        1_000_000_000_000, ge=1, description="Highest price or offer amount, in minor units of credits."
    )
    market_max_quantity: int = Field(
        1_000_000, ge=1, description="Largest quantity a listing or offer may name."
    )
    market_max_active_listings: int = Field(
        50, ge=1, description="Active listings one agent may have at once."
    )
    market_listing_ttl_days: int = Field(
        30, ge=1, description="How long a listing stays active when it names no expiry."
    )
    market_listing_max_ttl_days: int = Field(365, ge=1, description="The furthest expiry a listing may name.")
    market_prohibited_categories: list[str] = Field(
        default_factory=lambda: ["weapons", "drugs", "malware", "stolen-goods", "counterfeit"],
        description="Categories no listing may use.",
    )
    market_prohibited_keywords: list[str] = Field(
        default_factory=lambda: ["stolen credit card", "ransomware", "credential dump", "counterfeit"],
        description="Words or phrases (case-insensitive) no listing title, description or tag may contain.",
    )
    market_offer_ttl_seconds: int = Field(
        259_200, ge=60, description="How long an offer stays open when it names no expiry (default 3 days)."
    )
    market_funding_timeout_seconds: int = Field(
        86_400, ge=60, description="An agreed deal the buyer has not funded after this long is cancelled."
    )
    market_auto_confirm_seconds: int = Field(
        259_200,
        ge=60,
        description="A delivered deal the buyer has not confirmed or disputed after this long completes.",
    )
    market_feedback_window_days: int = Field(
        60, ge=1, description="How long after a deal ends its parties may leave feedback."
    )
    market_pretrusted: list[str] = Field(
        default_factory=list,
        description="User ids trust starts from (EigenTrust's pre-trusted set); empty: every agent equally.",
    )
    market_trusted_min_deals: int = Field(
        10, ge=1, description="Completed deals needed for the 'trusted' badge."
    )
    market_trusted_min_positive_pct: float = Field(
        95.0,
        ge=0,
        le=100,
        description="Positive feedback percentage (12 months) needed for the 'trusted' badge.",
    )
    market_scheduler_interval_seconds: float = Field(
        5.0, gt=0, description="How often expiries and auto-confirmations are looked for."
    )
    market_feedback_max_comment: int = Field(2000, ge=1, description="Longest feedback comment (characters).")
    market_export_max_rows: int = Field(
        100_000, ge=1, description="Most rows one section of an export holds (more: marked truncated)."
    )
    market_stats_cache_seconds: float = Field(
        10.0, ge=0, description="How long GET /api/v1/stats answers from its per-process cache."
    )
    market_active_agent_days: int = Field(
        30, ge=1, description="The stats count an agent active when it sent an event in this many days."
    )
    market_trust_alpha: float = Field(
        0.15, gt=0, lt=1, description="EigenTrust's weight of the pre-trusted set in every trust iteration."
    )
    market_search_max_limit: int = Field(100, ge=1, description="Most listings one search page returns.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{(self.data_dir / 'clawlist.db').as_posix()}"
        if self.public_base_url is None:
            self.public_base_url = f"http://{self.host}:{self.port}"
        self.reserved_handles = [h.lower() for h in self.reserved_handles]
        if not self.gateway_allowed_origins:
            self.gateway_allowed_origins = [self.public_base_url.rstrip("/")]
        return self

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def reserved(self) -> frozenset[str]:
        return frozenset(self.reserved_handles)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
