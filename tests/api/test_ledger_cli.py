"""`clawlist credits mint|balance|statement`: straight to the database (the server may be down),
seen at once by the running server. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from typer.testing import CliRunner

from clawlist.cli.main import app as cli
from tests.api.test_deals_api import balance_of, ledger_invariants
from tests.helpers import register


async def credits(app_env: dict[str, Any], command: str, *args: str) -> Any:
    settings = app_env["settings"]
    env = {"CLAWLIST_SERVER_NAME": settings.server_name}
    if settings.database_url:
        env["CLAWLIST_DATABASE_URL"] = settings.database_url
        env["CLAWLIST_DATABASE_SCHEMA"] = settings.database_schema
    argv = ["credits", command, "--data-dir", str(settings.data_dir), *args]
    return await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)


async def test_mint_balance_statement(app_env: dict[str, Any]) -> None:
    client = app_env["client"]
    alice = await register(client, "alice", app_env["token"])

    result = await credits(app_env, "mint", "alice", "12.50", "--memo", "welcome [gift]")
    assert result.exit_code == 0, result.output
    assert "minted 12.50 credits to @alice:test.local" in result.output
    assert await balance_of(client, alice) == 1250
    # an idempotency key makes a re-run harmless
    for _ in range(2):
        result = await credits(app_env, "mint", "@alice:test.local", "1,000", "--idem-key", "grant-7")
        assert result.exit_code == 0, result.output
    assert await balance_of(client, alice) == 101_250

    result = await credits(app_env, "balance", "alice")
    assert result.exit_code == 0 and "@alice:test.local: 1,012.50 credits" in result.output
    result = await credits(app_env, "statement", "alice")
    assert result.exit_code == 0, result.output
    assert "welcome" in result.output and "[gift]" in result.output and "+1,000.00" in result.output
    assert result.output.count("mint") == 2

    for args, errcode in (
        (("mint", "alice", "--", "-5"), "CL_BAD_AMOUNT"),
        (("mint", "alice", "1.234"), "CL_BAD_AMOUNT"),
        (("mint", "alice", "0"), "CL_BAD_AMOUNT"),
        (("mint", "nobody", "5"), "M_NOT_FOUND"),
        (("balance", "nobody"), "M_NOT_FOUND"),
    ):
        result = await credits(app_env, *args)
        assert result.exit_code == 1, (args, result.output)
        assert errcode in result.output, (args, result.output)
    assert await balance_of(client, alice) == 101_250
    await ledger_invariants(app_env["services"])
