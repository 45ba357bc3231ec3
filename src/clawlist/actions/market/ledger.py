"""The credit ledger: double-entry accounts, balanced transfers idempotent by key.

Accounts (created on first use): `wallet:<user_id>` (an agent's credits), `escrow:<deal_id>` (a
funded deal's hold), `fees` (the platform's cut) and `mint` (where minted credits come from; the
only account that may go negative, so the sum of every balance is always zero).

`post_transfer` runs inside a writer operation (`svc.writer.run`): the writer serialises every
write of the server (on PostgreSQL across processes too), so its balance check and its writes are
atomic. It reads everything it needs and raises before writing anything, so a refused transfer
leaves the rest of the writer's batch untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions import audit
from clawlist.actions.actor import Actor
from clawlist.actions.services import Services
from clawlist.actions.users import resolve_agent
from clawlist.core.errors import ClawlistError, bad_request, forbidden
from clawlist.core.money import HARD_MAX, check_amount, format_credits
from clawlist.core.tokens import new_opaque_id
from clawlist.storage.event_writer import WriteTx
from clawlist.storage.tables import ledger_accounts, ledger_entries, ledger_transfers

MINT = "mint"
FEES = "fees"
TRANSFER_KINDS = frozenset({"mint", "hold", "release", "refund", "fee", "split", "transfer"})
MAX_IDEM_KEY = 255


def wallet(user_id: str) -> str:
    return f"wallet:{user_id}"


def escrow(deal_id: str) -> str:
    return f"escrow:{deal_id}"


def _account_kind(account_id: str) -> tuple[str, str | None]:
    """(kind, owner) of an account id; refuses ids that are none of the four kinds."""
    if account_id in (MINT, FEES):
        return account_id, None
    prefix, sep, rest = account_id.partition(":")
    if sep and rest and prefix == "wallet":
        return "wallet", rest
    if sep and rest and prefix == "escrow":
        return "escrow", None
    raise ValueError(f"unknown ledger account {account_id!r}")


def transfer_id_for(idem_key: str) -> str:
    """The transfer id is derived from its idempotency key (unique), so no randomness is needed."""
    return "tr_" + hashlib.sha256(idem_key.encode("utf-8")).hexdigest()[:32]


def _net(entries: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Entries summed per account (zero sums dropped), after checking each one."""
    net: dict[str, int] = {}
    for account_id, amount in entries:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError("ledger amounts are integers of minor units")
        if abs(amount) > HARD_MAX:
            raise ValueError("ledger amount out of range")
        _account_kind(account_id)
        net[account_id] = net.get(account_id, 0) + amount
    return {k: v for k, v in net.items() if v != 0}


# Built once (the hot path of every deal step): executing a prebuilt statement with bound
# parameters reuses its compiled form instead of building and hashing an expression per call.
_TRANSFER_BY_KEY = select(ledger_transfers.c.transfer_id).where(
    ledger_transfers.c.idem_key == bindparam("idem_key")
)
_ENTRIES_OF = select(ledger_entries.c.account_id, ledger_entries.c.amount).where(
    ledger_entries.c.transfer_id == bindparam("transfer_id")
)
_BALANCES = select(ledger_accounts.c.account_id, ledger_accounts.c.balance).where(
    ledger_accounts.c.account_id.in_(bindparam("account_ids", expanding=True))
)
_BALANCE = select(ledger_accounts.c.balance).where(ledger_accounts.c.account_id == bindparam("account_id"))
#: The common case, one debited account: the key lookup and its balance in one statement.
_KEY_AND_BALANCE = select(
    _TRANSFER_BY_KEY.scalar_subquery().label("existing"), _BALANCE.scalar_subquery().label("balance")
)
_INSERT_TRANSFER = ledger_transfers.insert()
_INSERT_ENTRIES = ledger_entries.insert()


def _credit_upsert(insert: Any) -> Any:
    """INSERT an account with `balance` = the entry's amount, or add the amount to the existing
    account's balance: one statement creates accounts on first use and moves the money."""
    stmt = insert(ledger_accounts)
    return stmt.on_conflict_do_update(
        index_elements=[ledger_accounts.c.account_id],
        set_={"balance": ledger_accounts.c.balance + stmt.excluded.balance},
    )


_APPLY_SQLITE = _credit_upsert(sqlite_insert)
_APPLY_POSTGRESQL = _credit_upsert(pg_insert)


async def post_transfer(
    conn: AsyncConnection,
    *,
    idem_key: str,
    kind: str,
    entries: Iterable[tuple[str, int]],
    created_by: str,
    deal_id: str | None = None,
    memo: str | None = None,
    now_ms: int,
) -> str:
    """Write one balanced transfer; returns its id. The same `idem_key` again writes nothing and
    returns the first transfer's id (409 CL_IDEM_KEY_REUSED if it named other entries).

    Refused with 409 CL_INSUFFICIENT_FUNDS (with `account`, `balance` and `needed`) when an account
    other than `mint` would go negative. Call it inside a writer operation.

    Four statements when one account is debited (the usual case: the key lookup with that
    account's balance, then the transfer, its entries, and the balances, accounts created on first
    use), five otherwise, whatever the number of accounts."""
    if not idem_key or len(idem_key) > MAX_IDEM_KEY:
        raise ValueError("idem_key must be 1-255 characters")
    if kind not in TRANSFER_KINDS:
        raise ValueError(f"unknown transfer kind {kind!r}")
    net = _net(entries)
    if sum(net.values()) != 0:
        raise ValueError("a transfer's entries must sum to zero")
    if not net:
        raise ValueError("a transfer moves something")
    # only a debit can take an account below zero: the debited accounts' balances are read
    debited = sorted(a for a, delta in net.items() if delta < 0 and a != MINT)
    balances: dict[str, int] = {}
    if len(debited) == 1:
        row = (await conn.execute(_KEY_AND_BALANCE, {"idem_key": idem_key, "account_id": debited[0]})).one()
        existing = row.existing
        if row.balance is not None:
            balances[debited[0]] = int(row.balance)
    else:
        existing = (await conn.execute(_TRANSFER_BY_KEY, {"idem_key": idem_key})).scalar()
        if debited and existing is None:
            rows = (await conn.execute(_BALANCES, {"account_ids": debited})).all()
            balances = {str(r.account_id): int(r.balance) for r in rows}
    if existing is not None:
        rows = (await conn.execute(_ENTRIES_OF, {"transfer_id": existing})).all()
        if _net((str(r.account_id), int(r.amount)) for r in rows) != net:
            raise ClawlistError(
                409, "CL_IDEM_KEY_REUSED", f"the idempotency key {idem_key!r} was used for another transfer"
            )
        return str(existing)
    for account_id in debited:
        have, delta = balances.get(account_id, 0), net[account_id]
        if have + delta < 0:
            raise ClawlistError(
                409,
                "CL_INSUFFICIENT_FUNDS",
                f"insufficient funds: {account_id} holds {format_credits(have)}, "
                f"this needs {format_credits(-delta)}",
                account=account_id,
                balance=have,
                needed=-delta,
            )
    # every check passed: now write
    transfer_id = transfer_id_for(idem_key)
    await conn.execute(
        _INSERT_TRANSFER,
        {
            "transfer_id": transfer_id,
            "idem_key": idem_key,
            "kind": kind,
            "deal_id": deal_id,
            "memo": memo,
            "created_by": created_by,
            "created_ts": now_ms,
        },
    )
    ordered = sorted(net.items())
    await conn.execute(
        _INSERT_ENTRIES,
        [
            {"transfer_id": transfer_id, "account_id": a, "amount": v, "created_ts": now_ms}
            for a, v in ordered
        ],
    )
    accounts = []
    for account_id, delta in ordered:
        acct_kind, owner = _account_kind(account_id)
        accounts.append(
            {
                "account_id": account_id,
                "kind": acct_kind,
                "owner": owner,
                "balance": delta,
                "created_ts": now_ms,
            }
        )
    apply = _APPLY_SQLITE if conn.dialect.name == "sqlite" else _APPLY_POSTGRESQL
    await conn.execute(apply, accounts)
    return transfer_id


async def mint(
    svc: Services, actor: Actor, user_id: str, amount: int, *, idem_key: str, memo: str | None = None
) -> str:
    """Create `amount` credits in an agent's wallet (admins and the system only). Idempotent by key."""
    if actor.scope != "full" or not actor.is_admin:
        raise forbidden("only an admin can mint credits")
    amount = check_amount(amount)
    if not isinstance(idem_key, str) or not 0 < len(idem_key) <= MAX_IDEM_KEY - 5:
        raise bad_request(f"idem_key must be a string of 1-{MAX_IDEM_KEY - 5} characters")
    if memo is not None and not isinstance(memo, str):
        raise bad_request("memo must be a string")
    user_id = await agent_id(svc, user_id)

    async def op(tx: WriteTx) -> str:
        now = tx.now_ms()
        transfer_id = await post_transfer(
            tx.conn,
            idem_key=f"mint:{idem_key}",
            kind="mint",
            entries=[(MINT, -amount), (wallet(user_id), amount)],
            created_by=actor.principal_id,
            memo=memo,
            now_ms=now,
        )
        await audit.record(
            tx.conn,
            ts=now,
            actor=actor.principal_id,
            action="credits.mint",
            target=user_id,
            details={"amount": amount, "transfer_id": transfer_id, "idem_key": idem_key},
            is_sqlite=tx.is_sqlite,
        )
        return transfer_id

    return await svc.writer.run(op)


async def agent_id(svc: Services, ref: str) -> str:
    """The user id of an agent named by user id or handle (404 if there is none)."""
    async with svc.db.read() as conn:
        return (await resolve_agent(conn, ref, svc.settings.server_name)).user_id


def new_idem_key(svc: Services) -> str:
    return new_opaque_id(svc.rng, 16)


async def account_balance(conn: AsyncConnection, account_id: str) -> int:
    value = (await conn.execute(_BALANCE, {"account_id": account_id})).scalar()
    return int(value or 0)


async def balance(svc: Services, user_id: str) -> int:
    """An agent's wallet balance in minor units (0 before its first credit)."""
    async with svc.db.read() as conn:
        return await account_balance(conn, wallet(user_id))


async def statement(
    svc: Services, user_id: str, *, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """A wallet's entries, newest first, each with its transfer's kind, memo and deal, and the
    balance right after it. `before` is an `entry_id` (the last one of the previous page)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise bad_request("limit must be a positive integer")
    limit = min(limit, svc.settings.max_page_size)
    if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
        raise bad_request("before must be an entry id")
    account_id = wallet(user_id)
    query = (
        select(
            ledger_entries.c.entry_id,
            ledger_entries.c.transfer_id,
            ledger_entries.c.amount,
            ledger_entries.c.created_ts,
            ledger_transfers.c.kind,
            ledger_transfers.c.memo,
            ledger_transfers.c.deal_id,
            ledger_transfers.c.created_by,
        )
        .select_from(
            ledger_entries.join(
                ledger_transfers, ledger_transfers.c.transfer_id == ledger_entries.c.transfer_id
            )
        )
        .where(ledger_entries.c.account_id == account_id)
        .order_by(ledger_entries.c.entry_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(ledger_entries.c.entry_id < before)
    async with svc.db.read() as conn:
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        running = int(
            (
                await conn.execute(
                    select(func.coalesce(func.sum(ledger_entries.c.amount), 0)).where(
                        (ledger_entries.c.account_id == account_id)
                        & (ledger_entries.c.entry_id <= rows[0].entry_id)
                    )
                )
            ).scalar_one()
        )
    out = []
    for row in rows:
        out.append(
            {
                "entry_id": int(row.entry_id),
                "transfer_id": row.transfer_id,
                "kind": row.kind,
                "amount": int(row.amount),
                "balance": running,
                "deal_id": row.deal_id,
                "memo": row.memo,
                "created_by": row.created_by,
                "ts": int(row.created_ts),
            }
        )
        running -= int(row.amount)
    return out
