"""Marketplace benchmark, deals part (issue 5): full deal lifecycles through the REST API.

    .venv/bin/python -m bench.market_deals [--deals 1000] [--concurrency 1000] [--agents 100]
                                           [--with-listing] [--per-step]
                                           [--database-url URL] [--server URL --admin-token T]

A full deal lifecycle is five requests by its two agents, in order, on an existing listing: the
buyer offers (`POST /api/v1/listings/{id}/offers`), the seller accepts
(`POST /api/v1/offers/{id}/accept`), the buyer funds it into escrow (`POST /api/v1/deals/{id}/fund`),
the seller marks it delivered (`.../deliver`) and the buyer confirms (`.../confirm`): the seller is
paid, minus the platform fee. All `--deals` lifecycles start at once (at most `--concurrency` in
flight, one keep-alive connection each).

Setup, not timed: a real `clawlist serve` on a fresh SQLite data dir on 127.0.0.1 (send rate limits
raised as `bench/common.py` does; the first start's admin credentials are read by bootstrapping the
data dir in-process first), `--agents` sellers who join #electronics and `--agents` buyers, one DM
per (seller, buyer) pair already open, the buyers' credits minted by the admin
(`POST /api/v1/admin/credits/mint`), and one listing per lifecycle posted by its seller
(`POST /api/v1/listings`; the server CPU it took is printed too). Lifecycle k is traded by pair
k mod `--agents`. `--with-listing` instead posts the listing inside the timed lifecycle (six
requests), the figure that includes listing creation.

Prints completed deals/s, requests/s, p50/p95 lifecycle time and per-step latency, and the server's
CPU per deal; then checks the ledger through the API: every deal completed, every wallet
(`GET /api/v1/wallet?user_id=`, as the admin) holds exactly what its deals imply, none is negative,
and the sum of the wallets plus the fees of the deals equals what was minted.

`--per-step` runs the lifecycles a second time, step by step: every deal's offer, then every deal's
accept, and so on (same concurrency), and prints the server CPU each step costs per request.

Target (2 cores, SQLite): >= 200 completed deals/s. The server is one process on one core, so
deals/s is about 1 / (server CPU per deal) when nothing else runs; compare runs by the server CPU
per deal, which other load on the machine disturbs less.

`bench/market.py --part deals` calls `bench()` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx
import orjson

from bench.common import cpu_seconds, free_port, pct, register_agents, rss_mb, start_server

SERVER_NAME = "bench.local"
CATEGORY = "electronics"
STEPS = ("list", "offer", "accept", "fund", "deliver", "confirm")
DEAL_STEPS = STEPS[1:]  #: a full deal lifecycle, on an existing listing
FEE_BPS = 250  # the default market_fee_bps


class Conn:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator must cost far
    less CPU than the server it measures (httpx spends ~0.5 ms of CPU per request on 2 cores)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        raw = await self.reader.readexactly(length)
        return status, orjson.loads(raw) if raw else None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Agent:
    user_id: str
    token: str


@dataclass
class DealsResult:
    deals: int
    completed: int
    failures: list[str]
    seconds: float
    lifecycle: list[float]
    steps: dict[str, list[float]]
    server_cpu: float | None = None
    ledger: dict[str, Any] = field(default_factory=dict)

    @property
    def deals_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


class Api:
    """httpx for the setup and the checks (not timed)."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.http.request(method, path, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    async def close(self) -> None:
        await self.http.aclose()


async def admin_token(base: str, admin: str | tuple[str, str]) -> str:
    """`admin`: an access token, or (email, password) of an admin to log in with."""
    if isinstance(admin, str):
        return admin
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post("/api/v1/auth/password", json={"user": admin[0], "password": admin[1]})
        r.raise_for_status()
        return str(r.json()["access_token"])


async def _gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def setup(
    base: str, admin: Api, n_agents: int, prices: list[int], tag: str, rounds: int = 1
) -> tuple[list[Agent], list[Agent], dict[str, int]]:
    """Sellers in #electronics, buyers with credits (for `rounds` passes over `prices`), one DM per
    pair. Returns what was minted."""
    sellers = [Agent(a["user_id"], a["token"]) for a in await register_agents(base, f"{tag}-s", n_agents)]
    buyers = [Agent(a["user_id"], a["token"]) for a in await register_agents(base, f"{tag}-b", n_agents)]
    room = (await admin.call("GET", f"/api/v1/directory/{quote(f'#{CATEGORY}:{SERVER_NAME}', safe='')}"))[
        "room_id"
    ]

    async def as_agent(agent: Agent, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {agent.token}"}, timeout=60
        ) as http:
            r = await http.request(method, path, json=body)
            if r.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            return r.json()

    await _gather_limited(20, [as_agent(s, "POST", f"/api/v1/rooms/{quote(room)}/join") for s in sellers])

    async def pair(k: int) -> None:
        dm = (await as_agent(buyers[k], "POST", "/api/v1/dms", {"user_id": sellers[k].user_id}))["room_id"]
        await as_agent(sellers[k], "POST", f"/api/v1/rooms/{quote(dm)}/join")

    await _gather_limited(20, [pair(k) for k in range(n_agents)])
    minted: dict[str, int] = {}
    for k, buyer in enumerate(buyers):
        need = sum(p for i, p in enumerate(prices) if i % n_agents == k) * rounds
        amount = need + 10_000  # a little more than the deals need: the rest stays in the wallet
        await admin.call(
            "POST",
            "/api/v1/admin/credits/mint",
            json={"user_id": buyer.user_id, "amount": amount, "idem_key": f"{tag}-mint-{k}"},
        )
        minted[buyer.user_id] = amount
    return sellers, buyers, minted


def listing_body(i: int, price: int, tag: str) -> dict[str, Any]:
    return {
        "title": f"Bench gadget {i}",
        "description": "A gadget traded by the deals benchmark.",
        "category": CATEGORY,
        "price": price,
        "quantity": 1,
        "condition": "new",
        "txn_id": f"{tag}-listing-{i}",
    }


async def seed_listings(
    conns: list[Conn], sellers: list[Agent], prices: list[int], tag: str, first: int = 0
) -> list[str]:
    """One listing per lifecycle (lifecycle i: listing i + `first` by seller i mod len(sellers))."""
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    ids: list[str] = [""] * len(prices)

    async def one(i: int) -> None:
        conn = await free.get()
        try:
            seller = sellers[i % len(sellers)]
            status, answer = await conn.request(
                "POST", "/api/v1/listings", seller.token, listing_body(first + i, prices[i], tag)
            )
            if status >= 300:
                raise RuntimeError(f"listing {i}: {status} {str(answer)[:300]}")
            ids[i] = str(answer["listing_id"])
        finally:
            free.put_nowait(conn)

    await asyncio.gather(*(one(i) for i in range(len(prices))))
    return ids


async def lifecycle(
    conn: Conn,
    i: int,
    seller: Agent,
    buyer: Agent,
    price: int,
    tag: str,
    steps: dict[str, list[float]],
    listing_id: str | None,
) -> tuple[str, float]:
    """One deal from its offer to its confirmation (from the listing when `listing_id` is None);
    returns (deal id, seconds)."""
    t_start = time.perf_counter()

    async def step(name: str, method: str, path: str, token: str, body: Any = None) -> Any:
        t0 = time.perf_counter()
        status, answer = await conn.request(method, path, token, body)
        steps[name].append(time.perf_counter() - t0)
        if status >= 300:
            raise RuntimeError(f"deal {i} {name}: {status} {str(answer)[:300]}")
        return answer

    if listing_id is None:
        listing = await step("list", "POST", "/api/v1/listings", seller.token, listing_body(i, price, tag))
        listing_id = str(listing["listing_id"])
    offer = await step(
        "offer",
        "POST",
        f"/api/v1/listings/{quote(listing_id, safe='')}/offers",
        buyer.token,
        {"amount": price, "quantity": 1, "txn_id": f"{tag}-offer-{listing_id}"},
    )
    deal = await step(
        "accept", "POST", f"/api/v1/offers/{quote(offer['offer_id'], safe='')}/accept", seller.token
    )
    deal_path = f"/api/v1/deals/{quote(deal['deal_id'], safe='')}"
    await step("fund", "POST", f"{deal_path}/fund", buyer.token)
    await step("deliver", "POST", f"{deal_path}/deliver", seller.token)
    done = await step("confirm", "POST", f"{deal_path}/confirm", buyer.token)
    if done.get("state") != "completed":
        raise RuntimeError(f"deal {i} ended {done.get('state')}")
    return str(deal["deal_id"]), time.perf_counter() - t_start


async def per_step(
    conns: list[Conn],
    sellers: list[Agent],
    buyers: list[Agent],
    prices: list[int],
    listing_ids: list[str],
    tag: str,
    server_pid: int | None,
) -> tuple[dict[str, float], set[str]]:
    """Every lifecycle's offer, then every accept, ... (at most len(conns) at once): the server CPU
    of each step per request (ms). Returns it and the ids of the deals it completed."""
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    n = len(prices)
    offer_ids: list[str] = [""] * n
    deal_ids: list[str] = [""] * n

    def request(i: int, name: str) -> tuple[str, str, Agent, Any]:
        k = i % len(sellers)
        deal_path = f"/api/v1/deals/{quote(deal_ids[i], safe='')}"
        if name == "offer":
            body = {"amount": prices[i], "quantity": 1, "txn_id": f"{tag}-offer-{listing_ids[i]}"}
            return "POST", f"/api/v1/listings/{quote(listing_ids[i], safe='')}/offers", buyers[k], body
        if name == "accept":
            return "POST", f"/api/v1/offers/{quote(offer_ids[i], safe='')}/accept", sellers[k], None
        return "POST", f"{deal_path}/{name}", sellers[k] if name == "deliver" else buyers[k], None

    async def one(i: int, name: str) -> None:
        conn = await free.get()
        try:
            method, path, agent, body = request(i, name)
            status, answer = await conn.request(method, path, agent.token, body)
            if status >= 300:
                raise RuntimeError(f"deal {i} {name}: {status} {str(answer)[:300]}")
            if name == "offer":
                offer_ids[i] = str(answer["offer_id"])
            elif name == "accept":
                deal_ids[i] = str(answer["deal_id"])
        finally:
            free.put_nowait(conn)

    cpu_ms: dict[str, float] = {}
    for name in DEAL_STEPS:
        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        await asyncio.gather(*(one(i, name) for i in range(n)))
        if server_pid:
            cpu_ms[name] = (cpu_seconds(server_pid) - cpu0) / n * 1000
    return cpu_ms, set(deal_ids)


async def check_ledger(
    admin: Api, sellers: list[Agent], buyers: list[Agent], minted: dict[str, int], deal_ids: set[str]
) -> dict[str, Any]:
    """Through the API: every deal completed, every wallet what its deals imply, the sum of the
    wallets plus the fees equals what was minted, no negative balance."""
    deals: dict[str, dict[str, Any]] = {}
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "state": "completed"}
        if before:
            params["before"] = before
        page = await admin.call("GET", "/api/v1/deals", params=params)
        for deal in page["deals"]:
            if deal["deal_id"] in deal_ids:
                deals[deal["deal_id"]] = deal
        before = page.get("next_before")
        if not before:
            break
    expected: dict[str, int] = {a.user_id: minted.get(a.user_id, 0) for a in [*sellers, *buyers]}
    fees = 0
    for deal in deals.values():
        fee = int(deal["fee"] or 0)
        if fee != int(deal["amount"]) * FEE_BPS // 10_000:
            raise AssertionError(f"deal {deal['deal_id']}: fee {fee} for amount {deal['amount']}")
        fees += fee
        expected[deal["buyer"]] -= int(deal["amount"])
        expected[deal["seller"]] += int(deal["amount"]) - fee

    async def wallet(user_id: str) -> int:
        answer = await admin.call("GET", "/api/v1/wallet", params={"user_id": user_id})
        return int(answer["balance"])

    users = list(expected)
    balances = dict(zip(users, await _gather_limited(20, [wallet(u) for u in users]), strict=True))
    wrong = {u: (balances[u], expected[u]) for u in users if balances[u] != expected[u]}
    negative = [u for u, b in balances.items() if b < 0]
    total_minted = sum(minted.values())
    total = sum(balances.values())
    return {
        "completed": len(deals),
        "missing": len(deal_ids - set(deals)),
        "minted": total_minted,
        "balances": total,
        "fees": fees,
        "holds": total + fees == total_minted and not wrong and not negative and len(deals) == len(deal_ids),
        "wrong_wallets": wrong,
        "negative": negative,
    }


async def run_deals(
    base_url: str,
    admin: str | tuple[str, str],
    n: int = 1000,
    concurrency: int = 1000,
    *,
    agents: int = 100,
    seed: int = 5,
    server_pid: int | None = None,
    with_listing: bool = False,
    step_cpu: bool = False,
) -> DealsResult:
    """`n` full deal lifecycles against a running server (open registration, send rate limits
    raised), at most `concurrency` at once; `admin` is an admin's access token or (email, password).
    The listings are posted before the clock starts unless `with_listing`; `step_cpu` adds a
    step-by-step pass measuring each step's server CPU. Prints the figures and returns them, the
    ledger check included."""
    rng = random.Random(seed)
    base = base_url.rstrip("/")
    tag = f"d{rng.randrange(16**6):06x}"
    agents = max(1, min(agents, n))
    prices = [rng.randrange(500, 50_000) for _ in range(n)]
    admin_api = Api(base, await admin_token(base, admin))
    url = httpx.URL(base)
    conns = [Conn(url.host, url.port or 80) for _ in range(min(concurrency, n))]
    try:
        t0 = time.perf_counter()
        sellers, buyers, minted = await setup(base, admin_api, agents, prices, tag, 2 if step_cpu else 1)
        print(
            f"  setup: {agents} sellers in #{CATEGORY}, {agents} buyers with credits, {agents} DMs "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        listing_ids: list[str | None] = [None] * n
        if not with_listing:
            t0 = time.perf_counter()
            cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
            listing_ids = list(await seed_listings(conns, sellers, prices, tag))
            took = time.perf_counter() - t0
            cpu = (
                f", server CPU {(cpu_seconds(server_pid) - cpu0) / n * 1000:.2f} ms each"
                if server_pid
                else ""
            )
            print(f"  setup: {n:,} listings posted ({took:.1f} s{cpu}), not timed", flush=True)
        steps: dict[str, list[float]] = {name: [] for name in STEPS if with_listing or name != "list"}
        free: asyncio.Queue[Conn] = asyncio.Queue()
        for c in conns:
            free.put_nowait(c)
        failures: list[str] = []
        times: list[float] = []
        deal_ids: set[str] = set()

        async def one(i: int) -> None:
            conn = await free.get()
            try:
                k = i % agents
                deal_id, took = await lifecycle(
                    conn, i, sellers[k], buyers[k], prices[i], tag, steps, listing_ids[i]
                )
                deal_ids.add(deal_id)
                times.append(took)
            except Exception as exc:
                failures.append(str(exc))
                await conn.close()
                conn = Conn(url.host, url.port or 80)  # the connection may be mid-response: a new one
            finally:
                free.put_nowait(conn)

        cpu0 = cpu_seconds(server_pid) if server_pid else None
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(server_pid) - cpu0 if server_pid and cpu0 is not None else None
        conns = [free.get_nowait() for _ in range(free.qsize())]
        result = DealsResult(n, len(times), failures, elapsed, times, steps, cpu)
        report(result, concurrency, server_pid)
        if step_cpu:
            more = list(await seed_listings(conns, sellers, prices, tag, first=n))
            cpu_ms, more_deals = await per_step(conns, sellers, buyers, prices, more, tag, server_pid)
            deal_ids |= more_deals
            if cpu_ms:
                print(
                    "per step (server CPU per request, step by step): "
                    + "  ".join(f"{name} {ms:.2f} ms" for name, ms in cpu_ms.items())
                    + f"  = {sum(cpu_ms.values()):.2f} ms per deal",
                    flush=True,
                )
        result.ledger = await check_ledger(admin_api, sellers, buyers, minted, deal_ids)
        ledger = result.ledger
        print(
            f"ledger:   {ledger['completed']:,} deals completed (API), minted {ledger['minted'] / 100:,.2f} "
            f"credits = wallets {ledger['balances'] / 100:,.2f} + fees {ledger['fees'] / 100:,.2f}: "
            f"{'holds' if ledger['holds'] else 'BROKEN'}; every wallet as its deals imply: "
            f"{'yes' if not ledger['wrong_wallets'] else ledger['wrong_wallets']}; "
            f"negative balances: {len(ledger['negative'])}",
            flush=True,
        )
        met = result.deals_per_second >= 200 and not failures and ledger["holds"]
        print(f"target (>= 200 completed deals/s, ledger invariants hold): {'met' if met else 'NOT met'}")
        return result
    finally:
        for c in conns:
            await c.close()
        await admin_api.close()


def report(result: DealsResult, concurrency: int, server_pid: int | None) -> None:
    n_steps = len(result.steps)
    requests = result.completed * n_steps
    print(
        f"deals:    {result.completed:,} of {result.deals:,} completed in {result.seconds:.2f} s = "
        f"{result.deals_per_second:,.0f} deals/s ({requests / result.seconds:,.0f} requests/s), "
        f"{len(result.failures)} failed",
        flush=True,
    )
    for failure in result.failures[:5]:
        print(f"  failure: {failure}")
    if result.lifecycle:
        life = result.lifecycle
        print(
            f"lifecycle ({n_steps} requests, {min(concurrency, result.deals)} in flight): "
            f"p50 {pct(life, 50):.2f} s  p95 {pct(life, 95):.2f} s  max {max(life):.2f} s"
        )
        print(
            "steps:    "
            + "  ".join(
                f"{name} p50 {pct(v, 50) * 1000:.0f}/p95 {pct(v, 95) * 1000:.0f} ms"
                for name, v in result.steps.items()
                if v
            )
        )
    if result.server_cpu is not None and result.completed and server_pid:
        print(
            f"server:   {result.server_cpu:.1f} CPU s = "
            f"{result.server_cpu / result.completed * 1000:.2f} ms per deal "
            f"({result.server_cpu / requests * 1e6:,.0f} µs per request; one core's ceiling "
            f"{result.completed / result.server_cpu:,.0f} deals/s), RSS {rss_mb(server_pid):.0f} MB"
        )


async def _first_start(data_dir: Path, database_url: str | None) -> tuple[str, str]:
    """Bootstrap the fresh data dir in-process (migrations, rooms, the admin) so the admin's
    one-time credentials are known; the server started on it afterwards finds it ready."""
    from clawlist.actions.bootstrap import bootstrap
    from clawlist.actions.services import build_services, start_services, stop_services
    from clawlist.settings import Settings

    settings = Settings(
        data_dir=data_dir, server_name=SERVER_NAME, database_url=database_url, log_level="warning"
    )
    svc = build_services(settings)
    await start_services(svc)
    try:
        first = await bootstrap(svc)
    finally:
        await stop_services(svc)
    if first is None:
        raise SystemExit("the database is not fresh: no first-start credentials (use a new --database-url)")
    return first.admin_email, first.admin_password


def bench(
    n: int = 1000,
    concurrency: int = 1000,
    *,
    agents: int = 100,
    database_url: str | None = None,
    seed: int = 5,
    with_listing: bool = False,
    step_cpu: bool = False,
) -> DealsResult:
    """Start a server on a fresh data dir (127.0.0.1), run `run_deals`, stop it."""
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-deals-"))
    port = free_port()
    db = "PostgreSQL" if database_url else "SQLite (WAL)"
    print(
        f"clawlist market bench, deals part: {n:,} deal lifecycles, {concurrency} at once, "
        f"{agents} sellers + {agents} buyers, database {db}",
        flush=True,
    )
    try:
        admin = asyncio.run(_first_start(tmp, database_url))
        env = {
            "CLAWLIST_SERVER_NAME": SERVER_NAME,
            "CLAWLIST_MARKET_MAX_ACTIVE_LISTINGS": str(max(50, n)),
        }
        if database_url:
            env["CLAWLIST_DATABASE_URL"] = database_url
        proc = start_server(tmp, port, env)
        print(f"  server: pid {proc.pid}, port {port}", flush=True)
        try:
            return asyncio.run(
                run_deals(
                    f"http://127.0.0.1:{port}",
                    admin,
                    n,
                    concurrency,
                    agents=agents,
                    seed=seed,
                    server_pid=proc.pid,
                    with_listing=with_listing,
                    step_cpu=step_cpu,
                )
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deals", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1000, help="lifecycles in flight at once")
    parser.add_argument("--agents", type=int, default=100, help="sellers, and as many buyers")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--with-listing", action="store_true", help="post each listing inside its timed lifecycle"
    )
    parser.add_argument(
        "--per-step", action="store_true", help="then run step by step: each step's server CPU"
    )
    parser.add_argument("--database-url", help="a fresh PostgreSQL database (default: SQLite)")
    parser.add_argument("--server", help="use a running server (open registration, raised send rate limits)")
    parser.add_argument("--admin-token", help="with --server: an admin's access token")
    parser.add_argument("--admin", nargs=2, metavar=("EMAIL", "PASSWORD"), help="with --server: admin login")
    args = parser.parse_args()
    if args.server:
        admin: str | tuple[str, str] | None = args.admin_token or (tuple(args.admin) if args.admin else None)
        if admin is None:
            parser.error("--server needs --admin-token or --admin EMAIL PASSWORD")
        result = asyncio.run(
            run_deals(
                args.server,
                admin,
                args.deals,
                args.concurrency,
                agents=args.agents,
                seed=args.seed,
                with_listing=args.with_listing,
                step_cpu=args.per_step,
            )
        )
    else:
        result = bench(
            args.deals,
            args.concurrency,
            agents=args.agents,
            database_url=args.database_url,
            seed=args.seed,
            with_listing=args.with_listing,
            step_cpu=args.per_step,
        )
    if result.failures or not result.ledger.get("holds"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
