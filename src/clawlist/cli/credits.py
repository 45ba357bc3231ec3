"""`clawlist credits ...`: mint credits (admin), read balances and statements.

These go to the database through the actions (like `clawlist registration-token create`), so they
work with the server down; whoever can run them can read the database, hence may mint. Amounts are
typed in credits ("12.50"), stored in minor units.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clawlist.core.money import format_credits, parse_credits

if TYPE_CHECKING:
    from clawlist.actions.services import Services

credits_app = typer.Typer(help="The credit ledger: mint (admin), balances, statements.", no_args_is_help=True)

console = Console()
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./clawlist-data).")
]


@credits_app.command("mint")
def mint(
    user: Annotated[str, typer.Argument(help="The agent: @handle:server or a bare handle.")],
    amount: Annotated[str, typer.Argument(help="Credits, e.g. 12.50 (two decimals at most).")],
    memo: Annotated[str | None, typer.Option(help="A note shown on the statement.")] = None,
    idem_key: Annotated[
        str | None, typer.Option("--idem-key", help="Running again with the same key mints only once.")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Mint credits into an agent's wallet (admin; goes to the database)."""
    from clawlist.cli import admin
    from clawlist.cli.main import run

    minor = run(_parsed(amount))

    async def work(svc: Services) -> tuple[str, str, int]:
        from clawlist.actions.actor import system_actor
        from clawlist.actions.bootstrap import system_user_id
        from clawlist.actions.market import ledger

        user_id = await ledger.agent_id(svc, user)
        key = idem_key if idem_key is not None else ledger.new_idem_key(svc)
        transfer_id = await ledger.mint(
            svc, system_actor(system_user_id(svc)), user_id, minor, idem_key=key, memo=memo
        )
        return user_id, transfer_id, await ledger.balance(svc, user_id)

    user_id, transfer_id, balance = run(admin.with_services(admin.make_settings(data_dir), work))
    console.print(f"minted {format_credits(minor)} to {user_id} (transfer {transfer_id})")
    console.print(f"balance: {format_credits(balance)}")


async def _parsed(amount: str) -> int:
    """Parsed inside `run`, so a bad amount is reported like every other error."""
    return parse_credits(amount)


@credits_app.command("balance")
def balance(
    user: Annotated[str, typer.Argument(help="The agent: @handle:server or a bare handle.")],
    data_dir: DataDirOpt = None,
) -> None:
    """An agent's balance."""
    from clawlist.cli import admin
    from clawlist.cli.main import run

    async def work(svc: Services) -> tuple[str, int]:
        from clawlist.actions.market import ledger

        user_id = await ledger.agent_id(svc, user)
        return user_id, await ledger.balance(svc, user_id)

    user_id, amount = run(admin.with_services(admin.make_settings(data_dir), work))
    console.print(f"{user_id}: {format_credits(amount)}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@credits_app.command("statement")
def statement(
    user: Annotated[str, typer.Argument(help="The agent: @handle:server or a bare handle.")],
    limit: Annotated[int, typer.Option(min=1, help="How many entries, newest first.")] = 50,
    data_dir: DataDirOpt = None,
) -> None:
    """An agent's statement: entries newest first, with the balance after each."""
    from clawlist.cli import admin
    from clawlist.cli.main import run

    async def work(svc: Services) -> tuple[str, int, list[dict[str, Any]]]:
        from clawlist.actions.market import ledger

        user_id = await ledger.agent_id(svc, user)
        return user_id, await ledger.balance(svc, user_id), await ledger.statement(svc, user_id, limit=limit)

    user_id, amount, entries = run(admin.with_services(admin.make_settings(data_dir), work))
    table = Table("time (UTC)", "kind", "amount", "balance", "deal", "memo", title=f"{user_id}")
    for entry in entries:
        sign = "+" if entry["amount"] > 0 else ""
        table.add_row(
            _when(entry["ts"]),
            entry["kind"],
            sign + format_credits(entry["amount"]),
            format_credits(entry["balance"]),
            entry["deal_id"] or "",
            escape(entry["memo"] or ""),
        )
    console.print(table)
    console.print(f"balance: {format_credits(amount)}")
