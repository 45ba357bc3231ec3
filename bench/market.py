"""Marketplace benchmark (issue 5): listing search, and deal throughput.

    .venv/bin/python bench/market.py [--part search|deals|all] [--listings 100000] [--concurrency 200]

Search part (`run_search_bench`):

1. Seeds a fresh SQLite data dir (or --database-url) *in-process*, through the real actions: the
   system agent and the market rooms (`bootstrap`), `--sellers` agents (`register_agent`) who
   join the four category rooms, then `--listings` `clawlist.listing` messages sent with
   `actions.messages.send_event` — the same path as a REST or Matrix send (validation, event,
   projection, full-text index, one transaction each), `--seed-concurrency` at a time so the room
   writer batches them. Progress is printed. Then `--deals` completed deals are inserted straight
   into the `deals` table (a bench-only shortcut, so `sort=reputation` has something to order by;
   the deals part measures real deals).
2. Starts a real `clawlist serve` on that data dir (127.0.0.1), registers one searcher agent, and
   sends searches with mixed filters (words, category, price range, place, seller, state, every
   sort) through `GET /api/v1/listings` with a minimal keep-alive HTTP client (httpx would cost
   more CPU than the server on 2 cores):
   - serial: one search at a time, so the latency is the server's own time per search;
   - burst: `--rounds` bursts of `--concurrency` searches sent at the same moment; the latency
     includes waiting behind the other searches of the burst (one server process answers them
     one after another, so the last waits for ~200 searches);
   - steady: `--concurrency` searchers sending `--rate` searches per second in all for
     `--duration` seconds (latency counted from each search's arrival time).
   Prints p50/p95/max of each, searches/s, and the server's CPU time per search.

Target (2 cores, SQLite): search p95 <= 30 ms. `--data-dir DIR` keeps (or reuses) the seeded data.

Deals part: written by the deals work (1,000 concurrent full deal lifecycles, completed deals/s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx
import orjson

from bench.common import cpu_seconds, free_port, pct, register_agents, rss_mb, start_server

SERVER_NAME = "bench.local"
CATEGORIES = ("electronics", "furniture", "services", "skills")


def _words(text: str) -> list[str]:
    return text.split()


NOUNS = {
    "electronics": _words(
        "phone laptop headphones charger camera monitor keyboard tablet speaker drone router "
        "smartwatch console projector microphone printer"
    ),
    "furniture": _words(
        "chair desk table sofa lamp bookshelf bed wardrobe stool cabinet mirror dresser bench "
        "armchair rug shelf"
    ),
    "services": _words(
        "tutoring cleaning repair design translation writing editing moving photography consulting "
        "bookkeeping gardening delivery hosting auditing coaching"
    ),
    "skills": _words(
        "python rust negotiation summarising scraping forecasting pricing research planning testing "
        "labelling review transcription scheduling outreach analysis"
    ),
}
ADJECTIVES = _words(
    "vintage used new wireless portable oak steel compact premium budget refurbished handmade "
    "professional ergonomic rare quick reliable modern classic heavy light solid fast quiet"
)
FILLER = _words(
    "works perfectly great condition barely scratches included original box cable manual pickup "
    "shipping available weekdays weekends fast reply honest seller smoke free home spare parts tested "
    "warranty receipt battery screen color black white silver blue green red small large medium "
    "price negotiable bundle discount hours experience references remote onsite flexible certified"
)
PLACES = [
    ("Berlin", "DE", "Berlin"),
    ("Munich", "DE", "Bavaria"),
    ("Hamburg", "DE", "Hamburg"),
    ("Paris", "FR", "Ile-de-France"),
    ("Lyon", "FR", "Auvergne-Rhone-Alpes"),
    ("Madrid", "ES", "Madrid"),
    ("Barcelona", "ES", "Catalonia"),
    ("Rome", "IT", "Lazio"),
    ("Milan", "IT", "Lombardy"),
    ("Amsterdam", "NL", "North Holland"),
    ("Vienna", "AT", "Vienna"),
    ("Zurich", "CH", "Zurich"),
    ("London", "GB", "England"),
    ("Dublin", "IE", "Leinster"),
    ("Warsaw", "PL", "Masovia"),
    ("Prague", "CZ", "Prague"),
    ("Lisbon", "PT", "Lisbon"),
    ("Stockholm", "SE", "Stockholm"),
    ("Oslo", "NO", "Oslo"),
    ("Helsinki", "FI", "Uusimaa"),
    ("New York", "US", "New York"),
    ("San Francisco", "US", "California"),
    ("Austin", "US", "Texas"),
    ("Toronto", "CA", "Ontario"),
    ("Tokyo", "JP", "Tokyo"),
    ("Seoul", "KR", "Seoul"),
    ("Sydney", "AU", "New South Wales"),
    ("Online", None, None),
]


def make_listing(rng: random.Random) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    noun = rng.choice(NOUNS[category])
    title = f"{rng.choice(ADJECTIVES).capitalize()} {rng.choice(ADJECTIVES)} {noun}"
    words = rng.choices(FILLER + NOUNS[category], k=rng.randint(8, 30))
    place, country, region = rng.choice(PLACES)
    fields: dict[str, Any] = {
        "title": title,
        "description": " ".join(words).capitalize() + ".",
        "category": category,
        "price": int(rng.lognormvariate(8.5, 1.3)) + 1,
        "quantity": rng.choice((1, 1, 1, 2, 5)),
        "condition": rng.choice(("new", "like_new", "good", "fair", "not_applicable")),
        "location": place,
        "tags": rng.sample(NOUNS[category] + ADJECTIVES, k=rng.randint(0, 4)),
    }
    if country:
        fields["country"] = country
        fields["region"] = region
    return fields


# -- seeding (in-process, through the actions) -------------------------------------------------------


async def seed(
    settings: Any, *, sellers: int, n_listings: int, n_deals: int, concurrency: int, rng: random.Random
) -> list[str]:
    """Fill the database; returns the sellers' user ids."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from sqlalchemy import text

    from clawlist.actions import rooms
    from clawlist.actions.actor import Actor
    from clawlist.actions.bootstrap import bootstrap
    from clawlist.actions.market.listings import listing_rules
    from clawlist.actions.messages import send_event
    from clawlist.actions.services import build_services, start_services, stop_services
    from clawlist.actions.users import register_agent
    from clawlist.core import listings as rules
    from clawlist.storage.tables import deals

    svc = build_services(settings)
    await start_services(svc)
    try:
        await bootstrap(svc)
        t0 = time.perf_counter()
        user_ids: list[str] = []
        for i in range(sellers):
            public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            agent = await register_agent(
                svc, handle=f"seller-{i:05d}", public_key=base64.b64encode(public).decode(), skip_policy=True
            )
            user_ids.append(agent.user_id)
        actors = [Actor(principal_id=u, kind="agent", session_id="bench-seed") for u in user_ids]
        sem = asyncio.Semaphore(concurrency)

        async def joined(actor: Actor, room: str) -> None:
            async with sem:
                await rooms.join(svc, actor, f"#{room}:{settings.server_name}")

        await asyncio.gather(*(joined(a, c) for a in actors for c in CATEGORIES))
        print(f"  {sellers} sellers registered and joined in {time.perf_counter() - t0:.1f} s", flush=True)

        category_rooms = {
            c: await rooms.resolve_room(svc, f"#{c}:{settings.server_name}") for c in CATEGORIES
        }
        checker = listing_rules(settings)
        done = 0
        t0 = time.perf_counter()

        async def post(i: int, fields: dict[str, Any]) -> None:
            nonlocal done
            actor = actors[i % len(actors)]
            listing = rules.validate_listing(
                fields, checker, room_category=None, now_ms=int(time.time() * 1000)
            )
            content = {**fields, "msgtype": rules.LISTING_MSGTYPE, "body": rules.listing_body(listing)}
            async with sem:
                await send_event(
                    svc, actor, category_rooms[fields["category"]], "m.room.message", content, f"seed-{i}"
                )
            done += 1
            if done % 10_000 == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"  {done:,} listings ({rate:,.0f}/s)", flush=True)

        batch = 5_000
        for start in range(0, n_listings, batch):
            items = [(i, make_listing(rng)) for i in range(start, min(n_listings, start + batch))]
            await asyncio.gather(*(post(i, f) for i, f in items))
        elapsed = time.perf_counter() - t0
        print(f"  {n_listings:,} listings in {elapsed:.1f} s ({n_listings / elapsed:,.0f}/s)", flush=True)

        if n_deals:
            # bench-only shortcut: completed deals for `sort=reputation` (a few sellers with many)
            now = int(time.time() * 1000)
            weights = [1 / (k + 1) for k in range(len(user_ids))]
            rows = []
            for d in range(n_deals):
                seller = rng.choices(user_ids, weights=weights)[0]
                rows.append(
                    {
                        "deal_id": f"bench-deal-{d}",
                        "listing_id": f"$bench-{d}",
                        "offer_id": f"$bench-offer-{d}",
                        "room_id": "!bench:" + settings.server_name,
                        "buyer": rng.choice(user_ids),
                        "seller": seller,
                        "amount": 1000,
                        "quantity": 1,
                        "state": "completed",
                        "created_ts": now,
                        "updated_ts": now,
                        "ended_ts": now,
                    }
                )
            async with svc.db.write() as conn:
                await conn.execute(deals.insert(), rows)
            print(f"  {n_deals:,} completed deals inserted for the reputation sort", flush=True)
        if not svc.db.is_sqlite:
            # what autovacuum would do after a bulk load (the planner needs the statistics)
            async with svc.db.write() as conn:
                await conn.execute(text("ANALYZE"))
        return user_ids
    finally:
        await stop_services(svc)


# -- searching (over HTTP, against a real server process) ----------------------------------------------


class RawGet:
    """A minimal HTTP/1.1 keep-alive GET client on asyncio streams (far cheaper than httpx)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.auth = host, port, f"Bearer {token}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def get(self, path: str) -> tuple[int, bytes]:
        """One request; reconnects once if the server closed an idle keep-alive connection."""
        for attempt in (1, 2):
            if self.writer is None:
                await self.connect()
            assert self.reader is not None and self.writer is not None
            self.writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {self.auth}\r\n\r\n".encode()
            )
            status_line = await self.reader.readline()
            if not status_line:
                await self.close()
                self.writer = None
                if attempt == 2:
                    raise ConnectionError("the server closed the connection")
                continue
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            return status, await self.reader.readexactly(length)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def search_mix(rng: random.Random, sellers: list[str]) -> Callable[[], dict[str, Any]]:
    """Mixed searches: words (with and without filters), category + price, place, seller, every sort."""

    def words() -> str:
        category = rng.choice(CATEGORIES)
        picks = [rng.choice(NOUNS[category])]
        if rng.random() < 0.4:
            picks.insert(0, rng.choice(ADJECTIVES))
        return " ".join(picks)

    def price_range(params: dict[str, Any]) -> None:
        low = rng.choice((0, 500, 1000, 5000))
        params["min_price"] = low
        params["max_price"] = low + rng.choice((2000, 10000, 50000))

    def one() -> dict[str, Any]:
        kind = rng.random()
        params: dict[str, Any] = {}
        if kind < 0.40:  # words, maybe narrowed
            params["q"] = words()
            if rng.random() < 0.5:
                params["category"] = rng.choice(CATEGORIES)
            if rng.random() < 0.3:
                price_range(params)
            params["sort"] = rng.choice(("relevance", "relevance", "newest", "price_asc", "price_desc"))
        elif kind < 0.60:  # browse a category by price
            params["category"] = rng.choice(CATEGORIES)
            price_range(params)
            params["sort"] = rng.choice(("price_asc", "price_desc", "newest"))
        elif kind < 0.75:  # near a place
            params["location"] = rng.choice(PLACES)[0]
            if rng.random() < 0.5:
                params["q"] = words()
            else:
                params["category"] = rng.choice(CATEGORIES)
            params["sort"] = rng.choice(("newest", "price_asc"))
        elif kind < 0.85:  # one seller's listings
            params["seller"] = rng.choice(sellers)
            params["sort"] = "newest"
        elif kind < 0.95:  # best sellers first
            params["sort"] = "reputation"
            params["category"] = rng.choice(CATEGORIES)
        else:  # the front page
            params["sort"] = "newest"
        params["limit"] = 20
        return params

    return one


async def run_searches(
    base: str,
    token: str,
    make: Callable[[], dict[str, Any]],
    *,
    concurrency: int,
    rounds: int,
    serial: int,
    rate: float,
    duration: float,
) -> dict[str, Any]:
    url = httpx.URL(base)
    one = RawGet(url.host, url.port or 80, token)
    clients = [RawGet(url.host, url.port or 80, token) for _ in range(concurrency)]
    hits: list[int] = []

    async def timed(client: RawGet, params: dict[str, Any]) -> float:
        path = "/api/v1/listings?" + urlencode(params)
        t0 = time.perf_counter()
        status, body = await client.get(path)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"search failed: {status} {body[:300]!r} for {params}")
        hits.append(len(orjson.loads(body)["listings"]))
        return elapsed

    try:
        for _ in range(100):  # warm-up
            await timed(one, make())
        serial_lat = [await timed(one, make()) for _ in range(serial)]
        await asyncio.gather(*(c.connect() for c in clients))
        burst_lat: list[float] = []
        t0 = time.perf_counter()
        for _ in range(rounds):
            burst_lat += await asyncio.gather(*(timed(c, make()) for c in clients))
        burst_s = time.perf_counter() - t0
        # steady: searches arrive at `rate` per second from the `concurrency` searchers (each
        # waits for its answer before its next search); latency counts from the arrival time
        free: asyncio.Queue[RawGet] = asyncio.Queue()
        for c in clients:
            free.put_nowait(c)
        steady_lat: list[float] = []

        async def arrival(at: float) -> None:
            client = await free.get()
            try:
                path = "/api/v1/listings?" + urlencode(make())
                status, body = await client.get(path)
                if status != 200:
                    raise RuntimeError(f"search failed: {status} {body[:300]!r}")
                steady_lat.append(time.perf_counter() - at)
            finally:
                free.put_nowait(client)

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * duration)):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(arrival(at)))
        await asyncio.gather(*tasks)
    finally:
        for c in [one, *clients]:
            await c.close()
    return {"serial": serial_lat, "burst": burst_lat, "burst_s": burst_s, "steady": steady_lat, "hits": hits}


async def run_search_bench(args: argparse.Namespace) -> None:
    from clawlist.settings import Settings

    rng = random.Random(args.seed)
    tmp = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="clawlist-market-"))
    env = {
        "CLAWLIST_SERVER_NAME": SERVER_NAME,
        "CLAWLIST_MARKET_MAX_ACTIVE_LISTINGS": str(args.listings),
    }
    if args.database_url:
        env["CLAWLIST_DATABASE_URL"] = args.database_url
    tmp.mkdir(parents=True, exist_ok=True)
    marker = tmp / "seeded.json"
    db_name = "PostgreSQL" if args.database_url else "SQLite (WAL)"
    print(f"clawlist market bench, search part: {args.listings:,} listings, database {db_name}", flush=True)
    if marker.exists():
        sellers = orjson.loads(marker.read_bytes())["sellers"]
        print(f"  reusing the seeded data in {tmp}", flush=True)
    else:
        settings = Settings(
            data_dir=tmp,
            server_name=SERVER_NAME,
            database_url=args.database_url,
            market_max_active_listings=args.listings,
            send_rate_per_second=1_000_000,
            send_rate_burst=1_000_000,
            log_level="warning",
        )
        sellers = await seed(
            settings,
            sellers=args.sellers,
            n_listings=args.listings,
            n_deals=args.deals,
            concurrency=args.seed_concurrency,
            rng=rng,
        )
        marker.write_bytes(orjson.dumps({"sellers": sellers}))
    port = free_port()
    proc = start_server(tmp, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        searcher = (await register_agents(base, f"searcher{time.time_ns() % 10**9}", 1))[0]
        cpu0 = cpu_seconds(proc.pid)
        result = await run_searches(
            base,
            searcher["token"],
            search_mix(rng, sellers),
            concurrency=args.concurrency,
            rounds=args.rounds,
            serial=args.serial,
            rate=args.rate,
            duration=args.duration,
        )
        cpu = cpu_seconds(proc.pid) - cpu0
        serial, burst, steady = result["serial"], result["burst"], result["steady"]
        n = 100 + len(serial) + len(burst) + len(steady)

        def ms(values: list[float], p: float) -> float:
            return pct(values, p) * 1000

        print(
            f"serial:     {len(serial)} searches one at a time: "
            f"p50 {ms(serial, 50):.1f} ms  p95 {ms(serial, 95):.1f} ms  max {ms(serial, 100):.1f} ms"
        )
        print(
            f"burst:      {args.rounds} bursts of {args.concurrency} simultaneous searches: "
            f"p50 {ms(burst, 50):.1f} ms  p95 {ms(burst, 95):.1f} ms  max {ms(burst, 100):.1f} ms  "
            f"({len(burst) / result['burst_s']:,.0f} searches/s)"
        )
        print(
            f"steady:     {args.rate:g} searches/s for {args.duration:g} s, {args.concurrency} searchers: "
            f"p50 {ms(steady, 50):.1f} ms  p95 {ms(steady, 95):.1f} ms  max {ms(steady, 100):.1f} ms"
        )
        hits = result["hits"]
        print(
            f"server:     {cpu / n * 1e6:,.0f} µs CPU per search (HTTP included), "
            f"RSS {rss_mb(proc.pid):.0f} MB; "
            f"{sum(1 for h in hits if h) / len(hits):.0%} of searches found something"
        )
        for label, values in (("serial", serial), ("steady", steady), ("burst", burst)):
            verdict = "met" if ms(values, 95) <= 30 else "NOT met"
            print(f"target (search p95 <= 30 ms), {label}: {verdict}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if not args.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)


def run_deals_bench(args: argparse.Namespace) -> None:
    print("deals part: not written yet (1,000 concurrent deal lifecycles; the deals work adds it)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("search", "deals", "all"), default="all")
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--sellers", type=int, default=1_000)
    parser.add_argument("--deals", type=int, default=5_000, help="completed deals seeded for sort=reputation")
    parser.add_argument("--concurrency", type=int, default=200, help="simultaneous searches per burst")
    parser.add_argument("--rounds", type=int, default=5, help="bursts of --concurrency searches")
    parser.add_argument("--serial", type=int, default=500, help="searches one at a time")
    parser.add_argument("--rate", type=float, default=100, help="steady phase: searches per second")
    parser.add_argument("--duration", type=float, default=10, help="steady phase: seconds")
    parser.add_argument("--seed-concurrency", type=int, default=512)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data-dir", help="keep the seeded data here (reused when already seeded)")
    parser.add_argument("--database-url", help="e.g. postgresql+asyncpg://... (default: SQLite)")
    args = parser.parse_args()
    if args.part in ("search", "all"):
        asyncio.run(run_search_bench(args))
    if args.part in ("deals", "all"):
        run_deals_bench(args)


if __name__ == "__main__":
    main()
