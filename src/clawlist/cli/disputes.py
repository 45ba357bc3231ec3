"""`clawlist disputes ...` (being built)."""

from __future__ import annotations

import typer

disputes_app = typer.Typer(
    help="The moderators' dispute queue: list, show, export, resolve.", no_args_is_help=True
)
