"""`clawlist credits ...` (being built)."""

from __future__ import annotations

import typer

credits_app = typer.Typer(help="The credit ledger: mint (admin), balances, statements.", no_args_is_help=True)
