"""The simulated agents of `clawlist demo`: rule-based sellers and buyers with inventories, budgets
and reservation prices, and a moderator who decides disputes. No model is needed.

The traders act only by typing slash commands into rooms (`/sell`, `/search`, `/offer`, `/counter`,
`/accept`, `/reject`, `/fund`, `/delivered`, `/confirm`, `/dispute`, `/feedback`, `/balance`) and
reading what comes back through /sync: the server's `m.notice` replies (their `clawlist.result`) and
the events of the negotiation in their DMs (`clawlist.offer`, `clawlist.counter`, `clawlist.deal`,
`clawlist.decision`), the way a language model behind a Matrix client would. Besides sending text
they only do what any chat client does: join rooms, accept DM invites, open a DM, read a listing.
The moderator is the server's admin (a human) and uses the REST API: the dispute queue and its
resolution, and minting credits for buyers who run dry.

Every random choice comes from one generator per agent, seeded from the demo's seed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from clawlist.client import ApiError, ClawlistClient

OFFER = "clawlist.offer"
COUNTER = "clawlist.counter"
REJECT = "clawlist.reject"
WITHDRAW = "clawlist.withdraw"
DEAL = "clawlist.deal"
DECISION = "clawlist.decision"
#: The room events a trader's rules react to (everything else it reads only for command replies).
WATCHED = frozenset({OFFER, COUNTER, REJECT, WITHDRAW, DEAL, DECISION})

#: Final deal states, and the order states move in (the panel never moves a deal backwards).
FINAL = frozenset({"completed", "resolved", "cancelled"})
STATE_ORDER = ("agreed", "funded", "delivered", "disputed", "completed", "resolved", "cancelled")
_RANK = {
    "agreed": 0,
    "funded": 1,
    "delivered": 2,
    "disputed": 3,
    "completed": 4,
    "resolved": 4,
    "cancelled": 4,
}

TICKER_LINES = 14
SYNC_WAIT_MS = 10_000
REPLY_TIMEOUT = 20.0
#: Counter-offers each side makes in one negotiation before it gives up.
MAX_ROUNDS = 2
#: Replies kept for commands whose send has not returned yet (they can arrive first through sync).
EARLY_REPLIES = 2000

# (title, description, base price in credits) per category room
CATALOGUE: dict[str, list[tuple[str, str, int]]] = {
    "electronics": [
        ("Mechanical keyboard", "Hot-swap switches, PBT keycaps, USB-C", 80),
        ("USB-C dock", "Two 4K outputs, 100 W passthrough, gigabit ethernet", 120),
        ("Noise-cancelling headphones", "Over-ear, 30 h battery, carrying case", 150),
        ("Raspberry Pi 5 kit", "8 GB, case, fan, 64 GB card, power supply", 95),
        ("27-inch 4K monitor", "IPS, USB-C 65 W, height-adjustable stand", 260),
        ("Used RTX 3060 GPU", "12 GB, never mined on, original box", 220),
    ],
    "furniture": [
        ("Oak writing desk", "Solid oak, 140 x 70 cm, two drawers", 180),
        ("Ergonomic office chair", "Mesh back, lumbar support, 4D armrests", 210),
        ("Walnut bookshelf", "Five shelves, 180 cm tall", 70),
        ("Standing desk frame", "Dual motor, memory presets, up to 125 kg", 240),
        ("Reading armchair", "Velvet, deep seat, solid legs", 130),
    ],
    "services": [
        ("Logo design", "Three concepts, two revisions, SVG and PNG", 60),
        ("Code review, one hour", "Python or TypeScript, written notes", 45),
        ("Translation EN-DE, 1k words", "Technical or marketing text, 48 h", 55),
        ("Data cleaning job", "CSV or Parquet, up to a million rows", 90),
        ("Landing page copy", "Headline, sections and a call to action", 70),
    ],
    "skills": [
        ("SKILL: pdf-summarizer", "Summarises PDFs into bullet points with page refs", 25),
        ("SKILL: calendar-sync", "Two-way sync between CalDAV and Google Calendar", 30),
        ("SKILL: web-scraper", "Polite crawler with robots.txt and rate limits", 40),
        ("SKILL: invoice-parser", "Extracts totals, VAT and line items from invoices", 35),
        ("Prompt pack: support bot", "Forty tested prompts for a helpdesk agent", 20),
    ],
}
CONDITIONS = ("new", "like_new", "good", "fair")
PLACES = ("Berlin", "Lisbon", "Toronto", "Osaka", "Nairobi", "Austin", "Remote")
SELLER_NAMES = ("ada", "chen", "emil", "gus", "ivo", "kai", "mara", "odo", "quinn", "sol", "uma", "wen")
BUYER_NAMES = (
    "bruno",
    "dara",
    "farah",
    "hana",
    "juno",
    "lena",
    "nico",
    "pia",
    "rosa",
    "tariq",
    "vera",
    "yuki",
)
DELIVERY_NOTES = ("shipped with tracking", "sent by courier", "handed over, files attached", "delivered")
DISPUTE_REASONS = (
    "the item arrived damaged",
    "not as described in the listing",
    "the delivery never arrived",
)
PRAISE = ("smooth trade", "fast and friendly", "as described", "paid promptly", "would trade again")


def credits_text(minor: int) -> str:
    """An amount as an agent types it: 1250 -> '12.50', 1200 -> '12'."""
    whole, cents = divmod(minor, 100)
    return f"{whole}" if cents == 0 else f"{whole}.{cents:02d}"


def whole_credits(minor: float) -> int:
    """Round to whole credits (in minor units), at least 1 credit."""
    return max(100, round(minor / 100) * 100)


def short(ref: str) -> str:
    """The reference the server prints for an id: its first 8 characters, without the `$`."""
    return ref.removeprefix("$")[:8]


def display_name(user_id: str) -> str:
    return user_id.removeprefix("@").split(":", 1)[0]


# -- what everyone can see: the demo's view of the market -------------------------------------------


@dataclass
class DealView:
    deal_id: str
    buyer: str
    seller: str
    amount: int
    state: str
    title: str
    fee: int = 0
    to_seller: int = 0  # what reached the seller's side (fee included) once the deal ended


@dataclass
class MarketView:
    """What the agents saw happen, for the live panel and the summary. Both parties of a deal see
    each of its events: updates are idempotent and never move a deal backwards."""

    deals: dict[str, DealView] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    ticker: deque[str] = field(default_factory=lambda: deque(maxlen=TICKER_LINES))
    started: float = field(default_factory=time.monotonic)
    draining: bool = False
    listings_posted: int = 0
    offers: int = 0
    counters: int = 0
    rejected: int = 0
    feedback: int = 0
    disputes_opened: int = 0
    disputes_resolved: int = 0
    commands: int = 0
    refused: int = 0
    minted: int = 0
    errors: int = 0
    deliveries: int = 0
    decided: set[str] = field(default_factory=set)

    def log(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.ticker.append(f"{elapsed:6.1f}s  {text}")

    def on_deal(self, content: dict[str, Any]) -> bool:
        """A `clawlist.deal` event; True when it moved the deal on (the first party to see it)."""
        deal_id, state = str(content.get("deal_id")), str(content.get("state"))
        if state not in _RANK:
            return False
        deal = self.deals.get(deal_id)
        if deal is None:
            deal = DealView(
                deal_id,
                str(content.get("buyer")),
                str(content.get("seller")),
                int(content.get("amount") or 0),
                state,
                self.titles.get(str(content.get("listing_id")), "an item"),
            )
            self.deals[deal_id] = deal
        elif deal.state == state or deal.state in FINAL or _RANK[state] < _RANK[deal.state]:
            return False
        deal.state = state
        if state == "completed":
            deal.fee = int(content.get("fee") or 0)
            deal.to_seller = deal.amount
        return True

    def on_decision(self, content: dict[str, Any]) -> bool:
        deal_id = str(content.get("deal_id"))
        if deal_id in self.decided:
            return False
        self.decided.add(deal_id)
        self.disputes_resolved += 1
        deal = self.deals.get(deal_id)
        if deal is not None:
            deal.state = "resolved"
            deal.fee = int(content.get("fee") or 0)
            deal.to_seller = int(content.get("seller_amount") or 0) + deal.fee
        return True

    def by_state(self) -> Counter[str]:
        return Counter(d.state for d in self.deals.values())

    @property
    def volume(self) -> int:
        """Credits that reached sellers' side of ended deals, fee included (as GET /api/v1/stats)."""
        return sum(d.to_seller for d in self.deals.values() if d.state in ("completed", "resolved"))

    @property
    def fees(self) -> int:
        return sum(d.fee for d in self.deals.values() if d.state in ("completed", "resolved"))

    def open_deals(self) -> int:
        return sum(1 for d in self.deals.values() if d.state not in FINAL)


@dataclass(frozen=True)
class Pace:
    """How fast the agents act: each waits `seconds` (times 0.5-1.5) before an action."""

    seconds: float = 1.0
    #: One delivered deal in this many is disputed by its buyer (the 2nd, then every `dispute_every`).
    dispute_every: int = 6


@dataclass
class Reply:
    ok: bool
    result: dict[str, Any]
    body: str


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait for them, a few seconds at most. (Python 3.11's `wait_for` can swallow
    a cancellation that lands as its inner wait completes: the loops also check a stop flag, and a
    task that still runs is cancelled again rather than waited for forever.)"""
    for _attempt in range(3):
        pending = [t for t in tasks if not t.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=2)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning at exit


# -- a trader: the chat-client part ------------------------------------------------------------------


class Trader:
    """A logged-in agent that types commands and reads its sync stream. Subclasses hold the rules:
    `handle` reacts to negotiation and deal events, `idle` runs when nothing happened for a while."""

    role = "trader"

    def __init__(
        self, client: ClawlistClient, view: MarketView, rng: random.Random, pace: Pace, rooms: dict[str, str]
    ) -> None:
        assert client.user_id is not None
        self.client = client
        self.user_id: str = client.user_id
        self.name = display_name(self.user_id)
        self.view = view
        self.rng = rng
        self.pace = pace
        self.rooms = rooms  # alias localpart (market, electronics, ...) -> room id
        self.inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._since: str | None = None
        self._seen: set[str] = set()
        self._joined: set[str] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._early: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._acting = False
        self._stopping = False
        #: offer id -> (listing id, quantity), for every offer and counter seen in my DMs
        self.offer_listing: dict[str, tuple[str, int]] = {}

    # life cycle
    async def start(self) -> None:
        first = await self.client.sync(timeout_ms=0, limit=1)
        self._since = str(first["next_batch"])
        self._joined.update(first.get("rooms", {}))
        self._tasks = [
            asyncio.create_task(self._sync_forever(), name=f"{self.name}-sync"),
            asyncio.create_task(self._brain(), name=f"{self.name}-brain"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        await stop_tasks(self._tasks)
        await self.client.close()

    async def think(self) -> None:
        await asyncio.sleep(self.pace.seconds * self.rng.uniform(0.5, 1.5))

    # reading
    async def _sync_forever(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                page = await self.client.sync(self._since, timeout_ms=SYNC_WAIT_MS)
            except (httpx.HTTPError, ApiError):
                failures += 1
                await asyncio.sleep(min(5.0, 0.2 * failures))
                continue
            failures = 0
            self._since = str(page["next_batch"])
            for room_id in page.get("invites", []):
                if room_id not in self._joined:
                    await self._join_invited(str(room_id))
            for room_id, room in page.get("rooms", {}).items():
                for event in room.get("timeline", []):
                    self._receive(str(room_id), event)

    async def _join_invited(self, room_id: str) -> None:
        """Accept a DM invitation, then read what was said there before (like a client's backfill)."""
        try:
            await self.client.join(room_id)
            self._joined.add(room_id)
            page = await self.client.history(room_id, limit=50)
        except (httpx.HTTPError, ApiError) as exc:
            self.view.log(f"{self.name} could not join a DM: {exc}")
            return
        for event in reversed(page.get("chunk", [])):
            self._receive(room_id, event)

    def _receive(self, room_id: str, event: dict[str, Any]) -> None:
        event_id = str(event.get("event_id"))
        if event_id in self._seen or event.get("type") != "m.room.message":
            return
        self._seen.add(event_id)
        content = event.get("content") or {}
        if not isinstance(content, dict):
            return
        result = content.get("clawlist.result")
        if content.get("msgtype") == "m.notice" and isinstance(result, dict):
            target = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
            if isinstance(target, str):
                waiting = self._pending.pop(target, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(event)
                else:
                    self._early[target] = event
                    while len(self._early) > EARLY_REPLIES:
                        self._early.popitem(last=False)
            return
        if content.get("msgtype") in WATCHED:
            self.inbox.put_nowait((room_id, event))

    # acting
    async def say(self, room: str, text: str) -> Reply:
        """Type `text` in `room` and wait for the server's reply to it."""
        self.view.commands += 1
        event_id = await self.client.send(room, text)
        reply = self._early.pop(event_id, None)
        if reply is None:
            waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[event_id] = waiting
            try:
                reply = await asyncio.wait_for(waiting, REPLY_TIMEOUT)
            except TimeoutError:
                self._pending.pop(event_id, None)
                self.view.refused += 1
                return Reply(False, {"ok": False, "errcode": "CL_DEMO_NO_REPLY"}, "no reply")
        content = reply.get("content") or {}
        result = dict(content.get("clawlist.result") or {})
        ok = bool(result.get("ok"))
        if not ok:
            self.view.refused += 1
            command = text.split(maxsplit=1)[0]
            self.view.log(
                f"server refused {self.name}'s {command}: {result.get('error') or result.get('errcode')}"
            )
        return Reply(ok, result, str(content.get("body", "")))

    @property
    def busy(self) -> bool:
        """Acting, or with events still to read."""
        return self._acting or not self.inbox.empty()

    async def _brain(self) -> None:
        last_idle = 0.0
        while not self._stopping:
            try:
                if not self.inbox.empty() or time.monotonic() - last_idle < self.pace.seconds:
                    try:
                        room_id, event = await asyncio.wait_for(self.inbox.get(), self.pace.seconds)
                    except TimeoutError:
                        continue
                    self._acting = True
                    await self.handle(room_id, event)
                else:
                    last_idle = time.monotonic()
                    self._acting = True
                    await self.idle()
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ApiError) as exc:
                self.view.errors += 1
                self.view.log(f"{self.name}: {exc}")
                await asyncio.sleep(self.pace.seconds)
            except Exception as exc:  # a bug in the rules must not stop the whole market
                self.view.errors += 1
                self.view.log(f"{self.name} error: {exc!r}")
                await asyncio.sleep(self.pace.seconds)
            finally:
                self._acting = False

    async def handle(self, room_id: str, event: dict[str, Any]) -> None:
        content = event["content"]
        msgtype = content.get("msgtype")
        if msgtype in (OFFER, COUNTER):
            self._note_offer(event)
            if event.get("sender") != self.user_id:
                await self.on_offer(room_id, event)
        elif msgtype in (REJECT, WITHDRAW) and event.get("sender") != self.user_id:
            await self.on_closed(str(content.get("offer_id")), msgtype)
        elif msgtype == DEAL:
            moved = self.view.on_deal(content)
            if moved:
                self._log_deal(content)
            await self.on_deal(room_id, content)
        elif msgtype == DECISION:
            if self.view.on_decision(content):
                deal = self.view.deals.get(str(content.get("deal_id")))
                self.view.log(
                    f"moderator decided deal {short(str(content.get('deal_id')))}: {content.get('outcome')}"
                    + (f" ({deal.title})" if deal else "")
                )
            await self.on_decision(room_id, content)

    def _note_offer(self, event: dict[str, Any]) -> None:
        content = event["content"]
        if content.get("msgtype") == OFFER:
            listing = str(content.get("listing_id"))
            quantity = int(content.get("quantity") or 1)
        else:
            listing, quantity = self.offer_listing.get(str(content.get("offer_id")), ("", 1))
            quantity = int(content.get("quantity") or quantity)
        self.offer_listing[str(event["event_id"])] = (listing, quantity)

    def _log_deal(self, content: dict[str, Any]) -> None:
        deal = self.view.deals[str(content["deal_id"])]
        buyer, seller = display_name(deal.buyer), display_name(deal.seller)
        amount = credits_text(deal.amount)
        what = {
            "agreed": f"deal agreed: {buyer} buys {deal.title} from {seller} for {amount}",
            "funded": f"{buyer} funded {amount} into escrow for {deal.title}",
            "delivered": f"{seller} delivered {deal.title} to {buyer}",
            "completed": f"deal completed: {seller} paid {credits_text(deal.amount - deal.fee)} "
            f"(fee {credits_text(deal.fee)}) for {deal.title}",
            "disputed": f"{buyer} disputed the deal for {deal.title}",
            "cancelled": f"deal for {deal.title} cancelled",
        }.get(deal.state)
        if deal.state == "disputed":
            self.view.disputes_opened += 1
        if what:
            self.view.log(what)

    async def leave_feedback(self, room_id: str, deal_id: str, rating: int, comment: str) -> None:
        await self.think()
        sign = {1: "+1", 0: "0", -1: "-1"}[rating]
        reply = await self.say(room_id, f"/feedback {short(deal_id)} {sign} {comment}")
        if reply.ok:
            self.view.feedback += 1
            other = display_name(str(reply.result.get("ratee", "")))
            self.view.log(f"{self.name} rated {other} {sign}: {comment}")

    # the rules (subclasses)
    async def idle(self) -> None:
        return None

    async def on_offer(self, room_id: str, event: dict[str, Any]) -> None:
        return None

    async def on_closed(self, offer_id: str, msgtype: str) -> None:
        return None

    async def on_deal(self, room_id: str, content: dict[str, Any]) -> None:
        return None

    async def on_decision(self, room_id: str, content: dict[str, Any]) -> None:
        return None


# -- sellers -----------------------------------------------------------------------------------------


@dataclass
class Item:
    category: str
    title: str
    description: str
    price: int  # asking price per unit, minor units
    reservation: int  # the least the seller takes per unit
    quantity: int
    condition: str
    location: str


@dataclass
class Listed:
    item: Item
    left: int
    posted: float = field(default_factory=time.monotonic)
    open_deals: int = 0


def make_item(rng: random.Random, category: str | None = None) -> Item:
    category = category or rng.choice(sorted(CATALOGUE))
    title, description, base = rng.choice(CATALOGUE[category])
    price = whole_credits(base * 100 * rng.uniform(0.9, 1.3))
    reservation = whole_credits(price * rng.uniform(0.75, 0.92))
    quantity = 1 if category == "furniture" else rng.choice((1, 1, 2, 3))
    return Item(
        category,
        title,
        description,
        price,
        min(reservation, price),
        quantity,
        "not_applicable" if category in ("services", "skills") else rng.choice(CONDITIONS),
        rng.choice(PLACES),
    )


class Seller(Trader):
    """Lists items (a few at a time), accepts offers at or above its reservation price, counters
    lower ones (twice at most, then rejects), marks funded deals delivered, rates its buyers."""

    role = "seller"
    max_listed = 3

    def __init__(
        self,
        client: ClawlistClient,
        view: MarketView,
        rng: random.Random,
        pace: Pace,
        rooms: dict[str, str],
        stock: list[Item],
    ) -> None:
        super().__init__(client, view, rng, pace, rooms)
        self.stock = stock
        self.listed: dict[str, Listed] = {}
        self.rounds: Counter[tuple[str, str]] = Counter()

    async def idle(self) -> None:
        if self.view.draining:
            return
        await self._take_down_stale()
        if sum(1 for entry in self.listed.values() if entry.left > 0) >= self.max_listed:
            return
        if not self.stock:
            self.stock.append(make_item(self.rng))  # restock: the market keeps going
        item = self.stock.pop(0)
        await self.think()
        in_market = self.rng.random() < 0.3
        room = self.rooms["market" if in_market else item.category]
        text = f"/sell {credits_text(item.price)} {item.title} | {item.description} #{item.category}"
        if item.quantity > 1:
            text += f" qty={item.quantity}"
        text += f" cond={item.condition} loc={item.location}"
        reply = await self.say(room, text)
        if not reply.ok:
            self.view.log(f"{self.name}'s /sell refused: {reply.result.get('error')}")
            return
        listing_id = str(reply.result["listing_id"])
        self.listed[listing_id] = Listed(item, item.quantity)
        self.view.titles[listing_id] = item.title
        self.view.listings_posted += 1
        where = "#market" if in_market else f"#{item.category}"
        units = f"{item.quantity} × " if item.quantity > 1 else ""
        self.view.log(f"{self.name} listed {units}{item.title} at {credits_text(item.price)} in {where}")

    async def _take_down_stale(self) -> None:
        """A listing nobody bought for a long while: withdraw it, list it again 10% cheaper later."""
        limit = max(60.0, 60 * self.pace.seconds)
        for listing_id, entry in list(self.listed.items()):
            if entry.left <= 0 or entry.open_deals or time.monotonic() - entry.posted < limit:
                continue
            await self.think()
            reply = await self.say(self.rooms["market"], f"/withdraw {short(listing_id)}")
            del self.listed[listing_id]
            if reply.ok:
                item = entry.item
                item.price = max(item.reservation, whole_credits(item.price * 0.9))
                item.quantity = entry.left
                self.stock.insert(0, item)
                self.view.log(f"{self.name} took down {item.title}, to list it again cheaper")
            return

    async def on_offer(self, room_id: str, event: dict[str, Any]) -> None:
        content = event["content"]
        offer_id = str(event["event_id"])
        listing_id, quantity = self.offer_listing.get(offer_id, ("", 1))
        entry = self.listed.get(listing_id)
        if entry is None:
            return
        buyer = str(event.get("sender"))
        amount = int(content.get("amount") or 0)
        floor, ask = entry.item.reservation * quantity, entry.item.price * quantity
        key = (listing_id, buyer)
        await self.think()
        if amount >= floor:
            reply = await self.say(room_id, f"/accept {short(offer_id)}")
            if reply.ok:
                return
            await self.say(room_id, f"/reject {short(offer_id)} sorry, no longer available")
            return
        if self.rounds[key] < MAX_ROUNDS:
            self.rounds[key] += 1
            counter = max(floor, whole_credits((amount + ask) / 2))
            reply = await self.say(room_id, f"/counter {short(offer_id)} {credits_text(counter)}")
            if reply.ok:
                self.view.counters += 1
                self.view.log(
                    f"{self.name} countered {display_name(buyer)}'s {credits_text(amount)} "
                    f"with {credits_text(counter)} for {entry.item.title}"
                )
            else:  # e.g. the last unit went to another buyer meanwhile: say so
                await self.say(room_id, f"/reject {short(offer_id)} sorry, no longer available")
            return
        await self.say(room_id, f"/reject {short(offer_id)} below what I can take")
        self.view.rejected += 1
        self.view.log(f"{self.name} rejected {display_name(buyer)}'s {credits_text(amount)}")

    async def on_deal(self, room_id: str, content: dict[str, Any]) -> None:
        if content.get("seller") != self.user_id:
            return
        deal_id = str(content["deal_id"])
        entry = self.listed.get(str(content.get("listing_id")))
        action = content.get("action")
        if entry is not None and action == "agree":
            entry.left -= int(content.get("quantity") or 1)
            entry.open_deals += 1
        elif entry is not None and action in ("cancel", "expire"):
            entry.left += int(content.get("quantity") or 1)
        if entry is not None and content.get("state") in ("completed", "resolved", "cancelled"):
            entry.open_deals = max(0, entry.open_deals - 1)
        if action == "fund":
            await self.think()
            await self.say(room_id, f"/delivered {short(deal_id)} {self.rng.choice(DELIVERY_NOTES)}")
        elif action in ("confirm", "auto_confirm"):
            await self.leave_feedback(room_id, deal_id, 1, f"{self.rng.choice(PRAISE)}, thanks")

    async def on_decision(self, room_id: str, content: dict[str, Any]) -> None:
        deal = self.view.deals.get(str(content.get("deal_id")))
        if deal is None or deal.seller != self.user_id:
            return
        outcome = content.get("outcome")
        rating, comment = (0, "disagree with the dispute") if outcome == "refund" else (1, "settled fairly")
        await self.leave_feedback(room_id, deal.deal_id, rating, comment)


# -- buyers ------------------------------------------------------------------------------------------


@dataclass
class Trade:
    listing_id: str
    seller: str
    room_id: str
    title: str
    valuation: int  # the most this buyer pays for the quantity it wants
    last_offer: int
    quantity: int = 1
    offer_id: str | None = None
    deal_id: str | None = None
    rounds: int = 0
    updated: float = field(default_factory=time.monotonic)


class Buyer(Trader):
    """Searches its categories, offers below the asking price in the seller's DM, accepts counters
    within its valuation and budget (counters twice at most, then rejects), funds, confirms (one
    delivered deal in `dispute_every` is disputed instead), rates its sellers."""

    role = "buyer"
    max_trades = 2

    def __init__(
        self,
        client: ClawlistClient,
        view: MarketView,
        rng: random.Random,
        pace: Pace,
        rooms: dict[str, str],
        balance: int,
        interests: list[str],
    ) -> None:
        super().__init__(client, view, rng, pace, rooms)
        self.balance = balance
        self.interests = interests
        self.trades: dict[str, Trade] = {}  # listing id -> trade
        self.tried: dict[str, float] = {}  # listing id -> when this buyer last looked at it
        self.balance_stale = False

    def _trade_of_offer(self, offer_id: str) -> Trade | None:
        listing_id, _ = self.offer_listing.get(offer_id, ("", 1))
        return self.trades.get(listing_id)

    def _committed(self) -> int:
        return sum(t.last_offer for t in self.trades.values() if t.deal_id is None)

    async def idle(self) -> None:
        await self._drop_stale()
        if self.view.draining or len(self.trades) >= self.max_trades:
            return
        await self.think()
        if self.balance_stale:
            reply = await self.say(self.rooms["market"], "/balance")
            if reply.ok:
                self.balance = int(reply.result.get("balance", self.balance))
                self.balance_stale = False
        budget = self.balance - self._committed()
        if budget < 1000:
            return
        category = self.rng.choice(self.interests)
        reply = await self.say(self.rooms["market"], f"/search #{category} max={credits_text(budget)}")
        if not reply.ok:
            return
        again = time.monotonic() - max(30.0, 30 * self.pace.seconds)  # prices drop: look again later
        ids = [str(i) for i in reply.result.get("listing_ids", [])]
        candidates = [i for i in ids if self.tried.get(i, again) <= again]
        for listing_id in candidates[:5]:
            self.tried[listing_id] = time.monotonic()
            listing = await self.client.request("GET", f"/api/v1/listings/{quote(listing_id, safe='')}")
            if await self._make_offer(listing, budget):
                return

    async def _make_offer(self, listing: dict[str, Any], budget: int) -> bool:
        seller = str(listing["seller"])
        price = int(listing["price"])
        if seller == self.user_id or listing.get("state") != "active" or int(listing.get("available", 0)) < 1:
            return False
        if any(t.seller == seller for t in self.trades.values()):
            return False  # one negotiation per seller at a time: the DM stays readable
        valuation = min(budget, whole_credits(price * self.rng.uniform(0.85, 1.15)))
        offer = min(valuation, whole_credits(price * self.rng.uniform(0.65, 0.88)))
        if offer > budget or valuation < price * 0.7:
            return False
        listing_id = str(listing["listing_id"])
        title = str(listing.get("title", "an item"))
        self.view.titles.setdefault(listing_id, title)
        room_id = await self.client.open_dm(seller)
        self._joined.add(room_id)
        await self.think()
        reply = await self.say(room_id, f"/offer {short(listing_id)} {credits_text(offer)}")
        if not reply.ok:
            return False
        trade = Trade(listing_id, seller, room_id, title, valuation, offer)
        trade.offer_id = str(reply.result.get("offer_id"))
        self.offer_listing[trade.offer_id] = (listing_id, 1)
        self.trades[listing_id] = trade
        self.view.offers += 1
        self.view.log(
            f"{self.name} offered {credits_text(offer)} for {title} "
            f"(asking {credits_text(price)}) to {display_name(seller)}"
        )
        return True

    async def _drop_stale(self) -> None:
        """Give up on a negotiation nobody answered for a long while."""
        limit = max(30.0, 40 * self.pace.seconds)
        for listing_id, trade in list(self.trades.items()):
            if trade.deal_id is None and time.monotonic() - trade.updated > limit:
                if trade.offer_id:
                    await self.say(trade.room_id, f"/withdraw {short(trade.offer_id)}")
                del self.trades[listing_id]

    async def on_offer(self, room_id: str, event: dict[str, Any]) -> None:
        content = event["content"]
        if content.get("msgtype") != COUNTER:
            return
        offer_id = str(event["event_id"])
        trade = self._trade_of_offer(offer_id)
        if trade is None or trade.deal_id is not None:
            return
        trade.updated = time.monotonic()
        trade.offer_id = offer_id
        amount = int(content.get("amount") or 0)
        limit = min(trade.valuation, self.balance - self._committed() + trade.last_offer)
        await self.think()
        if amount <= limit:
            await self.say(room_id, f"/accept {short(offer_id)}")
            return
        if trade.rounds < MAX_ROUNDS:
            trade.rounds += 1
            mine = min(limit, whole_credits((trade.last_offer + amount) / 2))
            if mine > trade.last_offer:
                reply = await self.say(room_id, f"/counter {short(offer_id)} {credits_text(mine)}")
                if reply.ok:
                    trade.last_offer = mine
                    trade.offer_id = str(reply.result.get("offer_id"))
                    self.view.counters += 1
                    self.view.log(
                        f"{self.name} countered {credits_text(amount)} with {credits_text(mine)} "
                        f"for {trade.title}"
                    )
                    return
        await self.say(room_id, f"/reject {short(offer_id)} too expensive for me")
        self.view.rejected += 1
        self.view.log(f"{self.name} walked away from {trade.title} at {credits_text(amount)}")
        self.trades.pop(trade.listing_id, None)

    async def on_closed(self, offer_id: str, msgtype: str) -> None:
        trade = self._trade_of_offer(offer_id)
        if trade is not None and trade.deal_id is None:
            if msgtype == REJECT:
                self.view.rejected += 1
            self.trades.pop(trade.listing_id, None)

    async def on_deal(self, room_id: str, content: dict[str, Any]) -> None:
        if content.get("buyer") != self.user_id:
            return
        deal_id = str(content["deal_id"])
        trade = self.trades.get(str(content.get("listing_id")))
        if trade is not None:
            trade.deal_id = deal_id
            trade.updated = time.monotonic()
        action = content.get("action")
        if action == "agree":
            await self.think()
            reply = await self.say(room_id, f"/fund {short(deal_id)}")
            if reply.ok:
                self.balance = int(reply.result.get("balance", self.balance))
            else:
                await self.say(room_id, f"/cancel {short(deal_id)}")
        elif action == "deliver":
            await self.think()
            nth = self.view.deliveries
            self.view.deliveries += 1
            if nth % self.pace.dispute_every == 1:
                await self.say(room_id, f"/dispute {short(deal_id)} {self.rng.choice(DISPUTE_REASONS)}")
            else:
                await self.say(room_id, f"/confirm {short(deal_id)}")
        elif action in ("confirm", "auto_confirm"):
            self._end(content)
            await self.leave_feedback(room_id, deal_id, 1, self.rng.choice(PRAISE))
        elif action in ("cancel", "expire"):
            self._end(content)
            self.balance_stale = True

    def _end(self, content: dict[str, Any]) -> None:
        self.trades.pop(str(content.get("listing_id")), None)

    async def on_decision(self, room_id: str, content: dict[str, Any]) -> None:
        deal = self.view.deals.get(str(content.get("deal_id")))
        if deal is None or deal.buyer != self.user_id:
            return
        for listing_id, trade in list(self.trades.items()):
            if trade.deal_id == deal.deal_id:
                del self.trades[listing_id]
        self.balance_stale = True
        outcome = content.get("outcome")
        rating, comment = {
            "refund": (-1, "had to dispute, refunded"),
            "split": (0, "partly resolved by the moderator"),
        }.get(str(outcome), (0, "resolved by the moderator"))
        await self.leave_feedback(room_id, deal.deal_id, rating, comment)


# -- the moderator -----------------------------------------------------------------------------------


class Moderator:
    """The server's admin: decides every open dispute after reading its transcript (refund, split or
    release, by its seeded judgement), and mints credits for buyers who run low."""

    def __init__(
        self,
        client: ClawlistClient,
        view: MarketView,
        rng: random.Random,
        pace: Pace,
        buyers: list[Buyer],
        top_up: int,
    ) -> None:
        self.client = client
        self.view = view
        self.rng = rng
        self.pace = pace
        self.buyers = buyers
        self.top_up = top_up
        self._task: asyncio.Task[None] | None = None
        self._minted_rounds = 0
        self._outcomes: list[str] = []  # each outcome in turn, in a seeded order
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="moderator")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await stop_tasks([self._task])
        await self.client.close()

    async def _run(self) -> None:
        last_top_up = time.monotonic()
        while not self._stopping:
            await asyncio.sleep(max(0.5, self.pace.seconds))
            try:
                await self.decide_all()
                if time.monotonic() - last_top_up > max(30.0, 30 * self.pace.seconds):
                    last_top_up = time.monotonic()
                    await self.top_up_buyers()
            except (httpx.HTTPError, ApiError) as exc:
                self.view.errors += 1
                self.view.log(f"moderator: {exc}")

    async def decide_all(self) -> None:
        queue = await self.client.request("GET", "/api/v1/moderation/disputes", params={"state": "open"})
        for dispute in queue.get("disputes", []):
            deal = dispute["deal"]
            deal_id = str(dispute["deal_id"])
            transcript = await self.client.request(
                "GET", f"/api/v1/moderation/disputes/{quote(deal_id, safe='')}/transcript"
            )
            events = len(transcript.get("events", [])) if isinstance(transcript, dict) else 0
            if not self._outcomes:
                self._outcomes = ["split", "refund", "release"]
                self.rng.shuffle(self._outcomes)
            outcome = self._outcomes.pop()
            amount = int(deal["amount"])
            body: dict[str, Any] = {
                "outcome": outcome,
                "decision": f"Read the {events} events of the DM. Reason given: {dispute.get('reason')}.",
            }
            if outcome == "split":
                if amount < 2:
                    body["outcome"] = "refund"
                else:
                    body["buyer_amount"] = amount // 2
            await self.client.request(
                "POST", f"/api/v1/moderation/disputes/{quote(deal_id, safe='')}/resolve", json=body
            )

    async def top_up_buyers(self) -> None:
        for buyer in self.buyers:
            if buyer.balance < self.top_up // 4:
                await self.mint(buyer.user_id, self.top_up, f"top-up-{buyer.name}-{self._minted_rounds}")
                buyer.balance_stale = True
                self.view.log(f"admin minted {credits_text(self.top_up)} credits to {buyer.name}")
        self._minted_rounds += 1

    async def mint(self, user_id: str, amount: int, idem_key: str) -> None:
        await self.client.request(
            "POST",
            "/api/v1/admin/credits/mint",
            json={"user_id": user_id, "amount": amount, "idem_key": idem_key, "memo": "clawlist demo"},
        )
        self.view.minted += amount
