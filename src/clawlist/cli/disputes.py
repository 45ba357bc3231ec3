"""`clawlist disputes ...`: the moderators' dispute queue, through the HTTP API of a running server.

A moderator or admin (a human account) authenticates with `--token` (an access token; env
CLAWLIST_STAFF_TOKEN) or with `--email` (env CLAWLIST_STAFF_EMAIL) and the password from env
CLAWLIST_STAFF_PASSWORD, or typed at the prompt. Resolving goes through the server, which moves the
money, posts the decision in the DM and wakes everyone who watches it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clawlist.core.errors import ClawlistError
from clawlist.core.money import format_credits, parse_credits

disputes_app = typer.Typer(
    help="The moderators' dispute queue: list, show, export, resolve.", no_args_is_help=True
)

console = Console()
err = Console(stderr=True)

ServerOpt = Annotated[str, typer.Option("--server", "-s", envvar="CLAWLIST_SERVER", help="Server URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="CLAWLIST_STAFF_TOKEN", help="A moderator's or admin's access token."),
]
EmailOpt = Annotated[
    str | None,
    typer.Option(
        "--email",
        envvar="CLAWLIST_STAFF_EMAIL",
        help="Log in as this moderator/admin (password from CLAWLIST_STAFF_PASSWORD or a prompt).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
DEFAULT_SERVER = "http://127.0.0.1:8008"


class StaffError(Exception):
    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(f"{errcode}: {message}")
        self.errcode = errcode
        self.message = message


class StaffApi:
    """A moderator's session with the REST API (just what the dispute commands need)."""

    def __init__(self, server: str, token: str | None, email: str | None, password: str | None) -> None:
        self.http = httpx.AsyncClient(base_url=server.rstrip("/"), timeout=60.0)
        self.token = token
        self.email = email
        self.password = password

    async def close(self) -> None:
        await self.http.aclose()

    async def _login(self) -> None:
        if self.token:
            return
        if not self.email:
            raise StaffError("M_MISSING_TOKEN", "give --token or --email (a moderator or admin account)")
        r = await self.http.post(
            "/api/v1/auth/password", json={"user": self.email, "password": self.password}
        )
        self.token = str(self._check(r)["access_token"])

    @staticmethod
    def _check(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise StaffError(f"HTTP_{r.status_code}", r.text[:200])
            raise StaffError(str(body.get("errcode")), str(body.get("error")))
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        await self._login()
        r = await self.http.request(
            method, f"/api/v1{path}", headers={"Authorization": f"Bearer {self.token}"}, **kwargs
        )
        return self._check(r)


def _run(
    server: str, token: str | None, email: str | None, work: Callable[[StaffApi], Awaitable[Any]]
) -> Any:
    password = None
    if not token and email:
        password = os.environ.get("CLAWLIST_STAFF_PASSWORD") or typer.prompt(
            f"password for {email}", hide_input=True
        )

    async def main() -> Any:
        api = StaffApi(server, token, email, password)
        try:
            return await work(api)
        finally:
            await api.close()

    try:
        return asyncio.run(main())
    except (StaffError, ClawlistError) as exc:
        err.print(f"[red]error[/red] {exc.errcode}: {escape(exc.message)}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]error[/red] cannot reach the server: {escape(str(exc))}")
        raise typer.Exit(1) from None


def _age(seconds: int) -> str:
    if seconds >= 86_400:
        return f"{seconds // 86_400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _short(text: str | None, n: int = 60) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


@disputes_app.command("list")
def list_disputes(
    state: Annotated[str, typer.Option(help="open | resolved | all")] = "open",
    limit: Annotated[int | None, typer.Option(help="Page size.")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    email: EmailOpt = None,
) -> None:
    """The queue, oldest first."""
    params: dict[str, Any] = {"state": state}
    if limit is not None:
        params["limit"] = limit
    if cursor:
        params["cursor"] = cursor
    page = _run(server, token, email, lambda api: api.call("GET", "/moderation/disputes", params=params))
    if as_json:
        console.print_json(orjson.dumps(page).decode())
        return
    table = Table(title=f"disputes ({state}) — {page['open']} open")
    longest = max((len(d["deal_id"]) for d in page["disputes"]), default=4)
    table.add_column("deal", no_wrap=True, min_width=longest)  # whole, to copy into `show`
    for column in ("age", "opened by", "buyer", "seller", "amount", "state", "reason"):
        table.add_column(column)
    for d in page["disputes"]:
        deal = d["deal"]
        table.add_row(
            escape(d["deal_id"]),
            _age(int(d["age_seconds"])),
            escape(d["opened_by"]),
            escape(deal["buyer"]),
            escape(deal["seller"]),
            format_credits(int(deal["amount"])),
            d["state"] + (f" ({d['outcome']})" if d.get("outcome") else ""),
            escape(_short(d["reason"])),
        )
    console.print(table)
    if page["next_cursor"]:
        console.print(f"more: --cursor {escape(page['next_cursor'])}")


@disputes_app.command("show")
def show(
    deal_id: str,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    email: EmailOpt = None,
) -> None:
    """One dispute: the deal, its steps, the reason, the decision if any."""
    d = _run(server, token, email, lambda api: api.call("GET", f"/moderation/disputes/{deal_id}"))
    if as_json:
        console.print_json(orjson.dumps(d).decode())
        return
    deal = d["deal"]
    console.print(f"[bold]dispute on deal {escape(d['deal_id'])}[/bold] — {d['state']}")
    console.print(f"listing: {escape(str(deal.get('title') or '-'))} ({escape(str(deal['listing_id']))})")
    console.print(
        f"buyer {escape(deal['buyer'])} · seller {escape(deal['seller'])} · "
        f"{format_credits(int(deal['amount']))} · deal {deal['state']}"
    )
    console.print(f"opened by {escape(d['opened_by'])}: {escape(d['reason'])}")
    console.print(f"room {escape(deal['room_id'])} · {d['transcript_events']} events in the transcript")
    for step in deal.get("transitions", []):
        console.print(
            f"  {step['seq']}. {step['from_state']} → {step['to_state']} by {escape(step['actor'])}"
        )
    if d["state"] == "resolved":
        console.print(
            f"decision: {d['outcome']}, buyer gets {format_credits(int(d['buyer_amount'] or 0))}, "
            f"by {escape(str(d['resolver']))}: {escape(str(d['decision']))}"
        )
        effect = d.get("reputation_effect") or {}
        if effect:
            console.print(f"reputation: {escape(str(effect.get('note')))}")


@disputes_app.command("export")
def export(
    deal_id: str,
    fmt: Annotated[str, typer.Option("--format", help="json | md")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    email: EmailOpt = None,
) -> None:
    """The evidence: the deal's DM transcript with event ids, as Markdown or JSON."""
    if fmt not in ("json", "md"):
        err.print("[red]error[/red] --format must be json or md")
        raise typer.Exit(2)

    async def work(api: StaffApi) -> str:
        body = await api.call("GET", f"/moderation/disputes/{deal_id}/transcript", params={"format": fmt})
        return body if isinstance(body, str) else orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()

    text = _run(server, token, email, work)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {escape(str(output))}")


@disputes_app.command("resolve")
def resolve(
    deal_id: str,
    outcome: Annotated[str, typer.Argument(help="refund | release | split")],
    decision: Annotated[str, typer.Option("--decision", "-d", help="Your reasons, posted in the DM.")],
    buyer_amount: Annotated[
        str | None, typer.Option("--buyer-amount", help="split only: credits back to the buyer, e.g. 12.50")
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    email: EmailOpt = None,
) -> None:
    """Decide: refund the buyer, release to the seller, or split."""
    body: dict[str, Any] = {"outcome": outcome, "decision": decision}
    if buyer_amount is not None:
        try:
            body["buyer_amount"] = parse_credits(buyer_amount)
        except ClawlistError as exc:
            err.print(f"[red]error[/red] {exc.errcode}: {escape(exc.message)}")
            raise typer.Exit(2) from None
    d = _run(
        server,
        token,
        email,
        lambda api: api.call("POST", f"/moderation/disputes/{deal_id}/resolve", json=body),
    )
    if as_json:
        console.print_json(orjson.dumps(d).decode())
        return
    console.print(
        f"resolved deal {escape(d['deal_id'])}: {d['outcome']}, buyer gets "
        f"{format_credits(int(d['buyer_amount'] or 0))}"
    )
    effect = d.get("reputation_effect") or {}
    if effect:
        console.print(f"reputation: {escape(str(effect.get('note')))}")
