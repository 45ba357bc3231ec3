"""`clawlist demo`: a live market a newcomer can watch in one command.

It starts a server in this process (uvicorn in the same event loop) on a temporary embedded SQLite
database, registers N simulated agents through the Python SDK with the first start's registration
token, has the admin mint them credits, and lets them trade with slash commands
(`clawlist.cli.demo_agents`). A rich live panel shows the latest listings, deals by state, volume
and fees, the top agents by reputation and a ticker; without a terminal it prints plain progress
lines instead. Ctrl-C (or `--seconds`) stops it with a summary; the temporary directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from clawlist.cli.demo_agents import (
    BUYER_NAMES,
    CATALOGUE,
    SELLER_NAMES,
    STATE_ORDER,
    Buyer,
    MarketView,
    Moderator,
    Pace,
    Seller,
    Trader,
    credits_text,
    display_name,
    make_item,
    short,
)
from clawlist.client import ApiError, ClawlistClient, generate_key
from clawlist.core.money import format_credits

#: After `--seconds`, how long the agents may take to finish the deals already under way.
DRAIN_SECONDS = 12.0
#: Credits (minor units) each buyer starts with: 600-1,500 credits.
BUDGETS = (60_000, 150_000)
TOP_UP = 100_000
SERVER_NAME = "localhost"
PANEL_REFRESH = 1.0


class DemoError(Exception):
    pass


@dataclass
class Options:
    agents: int = 8
    seconds: float | None = None
    port: int | None = None
    seed: int = 1
    pace: float = 1.0
    plain: bool = False


@dataclass
class Snapshot:
    """What the panel reads from the server's REST API (refreshed every PANEL_REFRESH seconds)."""

    listings: list[dict[str, Any]] = field(default_factory=list)
    leaders: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    seconds: float
    agents: int
    deals: dict[str, int]
    disputes_opened: int
    disputes_resolved: int
    feedback: int
    volume: int
    fees: int
    listings: int
    commands: int
    refused: int
    errors: int
    stopped_by: str

    def lines(self) -> list[str]:
        open_deals = sum(
            n for s, n in self.deals.items() if s in ("agreed", "funded", "delivered", "disputed")
        )
        return [
            f"clawlist demo summary ({self.agents} agents, {self.seconds:.0f} s, "
            f"stopped by {self.stopped_by}):",
            f"  listings posted     {self.listings}",
            f"  deals completed     {self.deals.get('completed', 0)}",
            f"  disputes opened     {self.disputes_opened}",
            f"  disputes resolved   {self.disputes_resolved}",
            f"  deals cancelled     {self.deals.get('cancelled', 0)}",
            f"  deals still open    {open_deals}",
            f"  volume              {format_credits(self.volume)} (fees {format_credits(self.fees)})",
            f"  feedback left       {self.feedback}",
            f"  commands typed      {self.commands} (refused {self.refused}, agent errors {self.errors})",
        ]


# -- the server in this process ----------------------------------------------------------------------


def _bind(port: int | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port or 0))
    except OSError as exc:
        sock.close()
        raise DemoError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    return sock


@asynccontextmanager
async def embedded_server(data_dir: Path, port: int | None) -> AsyncIterator[tuple[str, Any]]:
    """A clawlist server on a fresh SQLite database in `data_dir`: yields (base URL, first start)."""
    import uvicorn

    from clawlist.app import create_app
    from clawlist.settings import DEFAULT_ROOMS, Settings

    class EmbeddedServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # the demo handles Ctrl-C itself, and stops the server when it is done

    sock = _bind(port)
    port = int(sock.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        server_name=SERVER_NAME,
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{(data_dir / 'clawlist.db').as_posix()}",
        database_schema=None,
        bus_url=None,
        host="127.0.0.1",
        port=port,
        public_base_url=base,
        registration="token",
        log_level="warning",
        default_rooms=list(DEFAULT_ROOMS),
        category_rooms=list(CATALOGUE),
        market_scheduler_interval_seconds=1.0,
    )
    app = create_app(settings, announce=lambda _text: None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
        ws="websockets-sansio",
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="clawlist-server")
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if task.done():
                raise DemoError(f"the server stopped during start-up: {task.exception()!r}")
            if time.monotonic() > deadline:
                raise DemoError("the server did not start within 60 s")
            await asyncio.sleep(0.05)
        first = getattr(app.state, "first_start", None)
        if first is None:
            raise DemoError("the fresh database gave no first-start credentials")
        yield base, first
    finally:
        # Long-polls still open (the agents' /sync) are cancelled at shutdown: not worth a traceback.
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        sock.close()


# -- setting up the market -----------------------------------------------------------------------------


async def _admin(base: str, email: str, password: str) -> ClawlistClient:
    client = ClawlistClient(base)
    tokens = await client.request(
        "POST", "/api/v1/auth/password", json={"user": email, "password": password}, auth=False
    )
    client.access_token = tokens["access_token"]
    client.refresh_token = tokens.get("refresh_token")
    client.user_id = tokens.get("user_id")
    return client


async def _agent(
    base: str, handle: str, registration_token: str, password: str | None = None
) -> ClawlistClient:
    """Register an agent (Ed25519 key; a password too for Matrix clients) and log it in."""
    key = generate_key()
    client = ClawlistClient(base)
    try:
        body: dict[str, Any] = {
            "handle": handle,
            "public_key": key.public_b64,
            "registration_token": registration_token,
        }
        if password is not None:
            body["password"] = password
        result = await client.request("POST", "/api/v1/agents", json=body, auth=False)
        await client.login(str(result["user_id"]), key)
    except BaseException:
        await client.close()
        raise
    return client


def _handles(n_sellers: int, n_buyers: int) -> tuple[list[str], list[str]]:
    def names(pool: tuple[str, ...], suffix: str, n: int) -> list[str]:
        return [
            f"{pool[i % len(pool)]}{'' if i < len(pool) else i // len(pool) + 1}-{suffix}" for i in range(n)
        ]

    return names(SELLER_NAMES, "shop", n_sellers), names(BUYER_NAMES, "buys", n_buyers)


@dataclass
class Market:
    base: str
    view: MarketView
    sellers: list[Seller]
    buyers: list[Buyer]
    moderator: Moderator
    watcher: ClawlistClient
    watcher_id: str
    watcher_password: str
    watcher_token: str
    admin_email: str
    admin_password: str
    rooms: dict[str, str]

    @property
    def traders(self) -> list[Trader]:
        return [*self.sellers, *self.buyers]


async def build_market(base: str, first: Any, opts: Options) -> Market:
    master = random.Random(opts.seed)
    view = MarketView()
    pace = Pace(seconds=opts.pace)
    admin = await _admin(base, first.admin_email, first.admin_password)
    token = first.registration_token
    watcher_password = "watch-" + secrets.token_hex(6)
    watcher = await _agent(base, "watcher", token, watcher_password)
    watcher_id = str(watcher.user_id)
    rooms: dict[str, str] = {}
    for name in ["market", *CATALOGUE, "house-rules", "help"]:
        rooms[name] = await watcher.join(f"#{name}:{SERVER_NAME}")
    static = await admin.request(
        "POST", f"/api/v1/admin/agents/{quote(watcher_id, safe='')}/tokens", json={"label": "demo watcher"}
    )

    n_sellers = max(1, opts.agents // 2)
    n_buyers = max(1, opts.agents - n_sellers)
    seller_handles, buyer_handles = _handles(n_sellers, n_buyers)
    categories = sorted(CATALOGUE)
    primary = [categories[i % len(categories)] for i in range(n_sellers)]
    sold_here = sorted(set(primary))

    sellers: list[Seller] = []
    for i, handle in enumerate(seller_handles):
        rng = random.Random(master.randrange(2**32))
        client = await _agent(base, handle, token)
        for room in ("market", *CATALOGUE):  # restocking may pick any category
            await client.join(rooms[room])
        stock = [make_item(rng, primary[i]) for _ in range(3)] + [make_item(rng)]
        sellers.append(Seller(client, view, rng, pace, rooms, stock))

    buyers: list[Buyer] = []
    for i, handle in enumerate(buyer_handles):
        rng = random.Random(master.randrange(2**32))
        client = await _agent(base, handle, token)
        await client.join(rooms["market"])
        interests = sorted({sold_here[i % len(sold_here)], rng.choice(sold_here)})
        budget = rng.randrange(BUDGETS[0] // 100, BUDGETS[1] // 100 + 1, 100) * 100
        buyers.append(Buyer(client, view, rng, pace, rooms, budget, interests))

    moderator = Moderator(admin, view, random.Random(master.randrange(2**32)), pace, buyers, TOP_UP)
    for buyer in buyers:
        await moderator.mint(buyer.user_id, buyer.balance, f"demo-start-{buyer.name}")
    return Market(
        base,
        view,
        sellers,
        buyers,
        moderator,
        watcher,
        watcher_id,
        watcher_password,
        str(static["access_token"]),
        first.admin_email,
        first.admin_password,
        rooms,
    )


def banner(market: Market, opts: Options) -> list[str]:
    base = market.base
    n_s, n_b = len(market.sellers), len(market.buyers)
    watched = ", ".join(f"#{name}" for name in ["market", *CATALOGUE])
    return [
        f"clawlist demo: {n_s} sellers and {n_b} buyers trading on a temporary database (seed {opts.seed})",
        f"  server        {base}   (API docs {base}/docs)",
        f"  watch rooms   any Matrix client: homeserver {base}",
        f"                log in as {market.watcher_id}, password {market.watcher_password}",
        f"                (joined {watched})",
        f"  listings      curl -H 'Authorization: Bearer {market.watcher_token}' {base}/api/v1/listings",
        f"  stats         {base}/api/v1/stats   leaderboard {base}/api/v1/market/leaderboard",
        f"  moderator     {market.admin_email} / {market.admin_password} (decides the disputes)",
        "  "
        + ("Ctrl-C stops." if opts.seconds is None else f"Runs {opts.seconds:g} s (Ctrl-C stops sooner)."),
    ]


# -- showing it --------------------------------------------------------------------------------------


async def refresh_snapshot(client: ClawlistClient, snap: Snapshot) -> None:
    with contextlib.suppress(httpx.HTTPError, ApiError):
        page = await client.request("GET", "/api/v1/listings", params={"sort": "newest", "limit": 8})
        snap.listings = list(page.get("listings", []))
        leaders = await client.request("GET", "/api/v1/market/leaderboard", params={"limit": 6})
        snap.leaders = list(leaders.get("agents", []))
        snap.stats = await client.request("GET", "/api/v1/stats")


#: Below this terminal width the panel stacks its parts in one compact column.
WIDE = 118


def render(market: Market, snap: Snapshot, opts: Options, width: int = 160) -> RenderableType:
    view = market.view
    wide = width >= WIDE
    elapsed = time.monotonic() - view.started
    title = f"clawlist demo · {len(market.traders)} agents · {elapsed:.0f} s · {market.base}"
    if view.draining:
        title += " · finishing open deals"

    columns = (
        ("ref", "title", "price", "left", "seller", "category") if wide else ("title", "price", "seller")
    )
    listings = Table(title="Active listings (latest)", expand=True, title_justify="left")
    for column in columns:
        listings.add_column(
            column, no_wrap=column != "title", justify="right" if column == "price" else "left"
        )
    for item in snap.listings[: 8 if wide else 5]:
        cells = {
            "ref": short(str(item["listing_id"])),
            "title": str(item.get("title", "")),
            "price": credits_text(int(item.get("price", 0))),
            "left": str(item.get("available", "")),
            "seller": display_name(str(item.get("seller", ""))),
            "category": f"#{item.get('category', '')}",
        }
        listings.add_row(*(cells[c] for c in columns))

    counts = view.by_state()
    money = [("volume", credits_text(view.volume)), ("fees", credits_text(view.fees))]
    money.append(("feedback", str(view.feedback)))
    deals: RenderableType
    if wide:
        table = Table(title="Deals", expand=True, title_justify="left")
        table.add_column("state")
        table.add_column("count", justify="right")
        for state in STATE_ORDER:
            table.add_row(state, str(counts.get(state, 0)))
        for name, value in money:
            table.add_row(name, value, style="bold" if name == "volume" else None)
        deals = table
    else:
        line = " · ".join(f"{state} {counts.get(state, 0)}" for state in STATE_ORDER)
        deals = Text(f"Deals: {line}\n" + " · ".join(f"{name} {value}" for name, value in money))

    leaders = Table(title="Top agents by reputation", expand=True, title_justify="left")
    for column in ("agent", "score", "trust", "deals", "positive"):
        leaders.add_column(column, justify="left" if column == "agent" else "right", no_wrap=True)
    for agent in snap.leaders[: 6 if wide else 3]:
        pct = agent.get("positive_pct_12m")
        leaders.add_row(
            display_name(str(agent.get("user_id", ""))) + (" ✓" if agent.get("trusted") else ""),
            f"{int(agent.get('score', 0)):+d}",
            f"{float(agent.get('trust', 0)):.2f}",
            str(agent.get("completed_deals", 0)),
            "-" if pct is None else f"{pct:.0f}%",
        )

    lines = list(view.ticker)[-(len(view.ticker) if wide else 6) :]
    ticker = Panel(Text("\n".join(lines) or "waiting for the first trade..."), title="Ticker")
    watch = f"watch: Matrix client on {market.base} as {market.watcher_id} / {market.watcher_password}"
    stop = "Ctrl-C stops" if opts.seconds is None else f"stops after {opts.seconds:g} s (Ctrl-C sooner)"
    body: RenderableType
    if wide:
        grid = Table.grid(expand=True, padding=(0, 1))
        grid.add_column(ratio=3)
        grid.add_column(ratio=2)
        grid.add_row(listings, deals)
        grid.add_row(ticker, leaders)
        body = grid
    else:
        body = Group(Text(watch, overflow="fold"), deals, listings, leaders, ticker)
    subtitle = f"{watch} · {stop}" if wide else stop
    return Panel(body, title=title, title_align="left", subtitle=subtitle, subtitle_align="left")


def progress_line(market: Market) -> str:
    view = market.view
    counts = view.by_state()
    states = " ".join(f"{state} {counts.get(state, 0)}" for state in STATE_ORDER)
    return (
        f"[{time.monotonic() - view.started:5.0f}s] listings {view.listings_posted} · deals: {states} · "
        f"volume {credits_text(view.volume)} · feedback {view.feedback} · "
        f"disputes {view.disputes_opened} opened, {view.disputes_resolved} resolved"
    )


# -- running it --------------------------------------------------------------------------------------


def _settled(market: Market) -> bool:
    """Nothing left to do: no negotiation or deal under way, every agent has read and acted."""
    return (
        not any(b.trades for b in market.buyers)
        and market.view.open_deals() == 0
        and not any(t.busy for t in market.traders)
    )


async def _server_summary(market: Market, opts: Options, stopped_by: str) -> Summary:
    """The figures, from the server: every deal (the admin sees all), the disputes, the feedback."""
    admin = market.moderator.client
    view = market.view
    deals: dict[str, int] = {}
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if before:
            params["before"] = before
        page = await admin.request("GET", "/api/v1/deals", params=params)
        for deal in page.get("deals", []):
            deals[str(deal["state"])] = deals.get(str(deal["state"]), 0) + 1
        before = page.get("next_before")
        if not before:
            break
    opened = resolved = 0
    cursor: str | None = None
    while True:
        params = {"state": "all", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = await admin.request("GET", "/api/v1/moderation/disputes", params=params)
        for dispute in page.get("disputes", []):
            opened += 1
            resolved += dispute.get("state") == "resolved"
        cursor = page.get("next_cursor")
        if not cursor:
            break
    feedback = 0
    for trader in market.traders:
        got = await admin.request(
            "GET", f"/api/v1/agents/{quote(trader.user_id, safe='')}/feedback", params={"limit": 1000}
        )
        feedback += len(got.get("feedback", []))
    return Summary(
        seconds=time.monotonic() - view.started,
        agents=len(market.traders),
        deals=deals,
        disputes_opened=opened,
        disputes_resolved=resolved,
        feedback=feedback,
        volume=view.volume,
        fees=view.fees,
        listings=view.listings_posted,
        commands=view.commands,
        refused=view.refused,
        errors=view.errors,
        stopped_by=stopped_by,
    )


async def run_market(market: Market, opts: Options, console: Console, stop: asyncio.Event) -> str:
    """Trade until `stop` or `--seconds` (then let open deals finish); returns what stopped it."""
    view = market.view
    live_panel = console.is_terminal and not opts.plain
    snap = Snapshot()
    for trader in market.traders:
        await trader.start()
    market.moderator.start()
    view.started = time.monotonic()
    deadline = None if opts.seconds is None else view.started + opts.seconds
    interval = 5.0 if opts.seconds is None else min(5.0, max(1.0, opts.seconds / 5))
    stopped_by = "Ctrl-C"
    live = Live(console=console, refresh_per_second=4, transient=False) if live_panel else None
    last_print = time.monotonic()
    quiet_since: float | None = None
    last_line = ""
    with live if live is not None else contextlib.nullcontext():
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline and not view.draining:
                view.draining = True
                view.log("time is up: no new listings or offers, finishing open deals")
                deadline = now + DRAIN_SECONDS
            elif view.draining and deadline is not None:
                # settled for a whole second: the other party has read the last events too
                quiet_since = (quiet_since or now) if _settled(market) else None
                if now >= deadline or (quiet_since is not None and now - quiet_since >= 1.0):
                    stopped_by = "--seconds"
                    break
            if live is not None:
                await refresh_snapshot(market.watcher, snap)
                live.update(render(market, snap, opts, console.width))
            elif now - last_print >= interval:
                last_print = now
                last_line = progress_line(market)
                print(last_line, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PANEL_REFRESH if live is not None else 0.25)
    if live is None and progress_line(market) != last_line:
        print(progress_line(market), flush=True)
    return stopped_by


async def run_demo(opts: Options, console: Console) -> Summary:
    if not 2 <= opts.agents <= 60:
        raise DemoError("--agents must be from 2 to 60")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-demo-"))
    try:
        async with embedded_server(tmp, opts.port) as (base, first):
            console.print(f"starting {opts.agents} agents on {base} ...", highlight=False)
            market = await build_market(base, first, opts)
            for line in banner(market, opts):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
            try:
                stopped_by = await run_market(market, opts, console, stop)
            finally:
                await asyncio.gather(*(trader.stop() for trader in market.traders))
                summary = await _server_summary(market, opts, "")
                await market.moderator.stop()
                await market.watcher.close()
            summary.stopped_by = stopped_by
            return summary
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        shutil.rmtree(tmp, ignore_errors=True)


def demo(
    agents: Annotated[
        int, typer.Option("--agents", "-n", help="Simulated agents (half sell, half buy).")
    ] = 8,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice the agents make.")] = 1,
    pace: Annotated[
        float, typer.Option(min=0.05, help="Seconds an agent takes to act (each wait is 0.5-1.5 times it).")
    ] = 1.0,
    plain: Annotated[
        bool, typer.Option("--plain", help="Plain progress lines instead of the live panel.")
    ] = False,
) -> None:
    """A live market: a server on a temporary database and simulated agents trading with slash
    commands (list, search, negotiate in DMs, fund, deliver, confirm, sometimes dispute, rate)."""
    console = Console()
    opts = Options(agents=agents, seconds=seconds, port=port, seed=seed, pace=pace, plain=plain)
    try:
        summary = asyncio.run(run_demo(opts, console))
    except DemoError as exc:
        Console(stderr=True).print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except (ApiError, httpx.HTTPError) as exc:
        Console(stderr=True).print(f"[red]error[/red] the demo's server answered: {escape(str(exc))}")
        raise typer.Exit(1) from None
    for line in summary.lines():
        console.print(line, highlight=False, markup=False)
