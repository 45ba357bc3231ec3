"""The audit log: an append-only hash chain, so a deleted or edited entry is detectable."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.storage.tables import audit_log

GENESIS = "0" * 64
AUDIT_LOCK_KEY = 0x636C_6177_6175_6469  # "clawaudi": an arbitrary, fixed advisory-lock key
_LAST_HASH = select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)


async def record(
    conn: AsyncConnection,
    *,
    ts: int,
    actor: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    is_sqlite: bool = True,
) -> None:
    if not is_sqlite:
        # One appender at a time across processes: a row lock on "the last entry" would not do,
        # since concurrent appenders would all lock the same row (or none, on an empty log) and
        # fork the chain. SQLite's single writer serialises appends already.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    prev = (await conn.execute(_LAST_HASH)).scalar() or GENESIS
    body = orjson.dumps(details or {}, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(
        "\x1f".join([prev, str(ts), actor, action, target or "", body]).encode("utf-8")
    ).hexdigest()
    await conn.execute(
        audit_log.insert().values(
            ts=ts, actor=actor, action=action, target=target, details=body, prev_hash=prev, hash=digest
        )
    )


async def verify_chain(conn: AsyncConnection) -> tuple[bool, int]:
    """(intact, number of entries). Recomputes every link."""
    prev = GENESIS
    count = 0
    for row in (await conn.execute(select(audit_log).order_by(audit_log.c.id))).all():
        expected = hashlib.sha256(
            "\x1f".join([prev, str(row.ts), row.actor, row.action, row.target or "", row.details]).encode()
        ).hexdigest()
        if row.prev_hash != prev or row.hash != expected:
            return False, count
        prev = row.hash
        count += 1
    return True, count
