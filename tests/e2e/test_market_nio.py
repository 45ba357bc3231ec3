"""The whole trade with nothing but text: two unmodified matrix-nio clients against a real
`clawlist serve` process, typing slash commands and reading the server's m.notice replies
through /sync, the way an LLM behind a Matrix client would.

Seller /sell in #market; buyer /search, /offer; seller (invited to the DM) /counter; buyer
/accept; an admin mints credits to the buyer; buyer /fund; seller /delivered; buyer /confirm;
both /feedback; /balance shows the money moved minus the 2.5% fee. Every reference the clients
use is read from the text of a reply, never from structured fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomMessageNotice,
    RoomSendResponse,
)

from tests.conftest import PG_URL, _drop_schema, require_postgres
from tests.e2e.server import Server, cli, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SERVER_NAME = "e2e.local"
SYSTEM = f"@system:{SERVER_NAME}"
MARKET = f"#market:{SERVER_NAME}"
PASSWORD = "correct horse battery staple"
WAIT = 15.0


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLAWLIST_REGISTRATION": "token"}
    schema = None
    if request.param == "postgres":
        require_postgres()
        schema = "e2e_market_" + secrets.token_hex(4)
        env |= {"CLAWLIST_DATABASE_URL": PG_URL, "CLAWLIST_DATABASE_SCHEMA": schema}
    try:
        with running_server(Path(tmp_path_factory.mktemp(f"market-{request.param}")), env) as srv:
            yield srv
    finally:
        if schema is not None:
            asyncio.run(_drop_schema(schema))


class Trader:
    """A nio client that syncs forever and keeps every notice and invite it sees."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.items: list[tuple[str, Any]] = []
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        client.add_event_callback(self._on_event, (RoomMessageNotice, InviteMemberEvent))

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def _on_event(self, room: Any, event: Any) -> None:
        async with self.changed:
            self.items.append((room.room_id, event))
            self.changed.notify_all()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.client.sync_forever(timeout=5000, full_state=True))
        await asyncio.wait_for(self.client.synced.wait(), WAIT)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.close()

    async def wait_for(self, match: Any) -> tuple[str, Any]:
        async def find() -> tuple[str, Any]:
            async with self.changed:
                while True:
                    for item in self.items:
                        if match(*item):
                            return item
                    await self.changed.wait()

        return await asyncio.wait_for(find(), WAIT)

    async def say(self, room_id: str, text: str) -> str:
        """Send `text`; return the body of the server's reply, as received by sync."""
        sent = await self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
        assert isinstance(sent, RoomSendResponse), sent
        _, notice = await self.wait_for(
            lambda room, event: (
                room == room_id and isinstance(event, RoomMessageNotice) and _reply_to(event) == sent.event_id
            )
        )
        assert notice.sender == SYSTEM
        body = str(notice.body)
        print(f"{self.user_id}> {text}\n  < {body}")  # the transcript, shown when a test fails
        return body


def _reply_to(event: Any) -> str | None:
    relates = event.source.get("content", {}).get("m.relates_to") or {}
    return (relates.get("m.in_reply_to") or {}).get("event_id")


async def _trader(server: Server, handle: str) -> Trader:
    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30)
    client = AsyncClient(server.url, "", config=config)
    resp = await client.register_with_token(handle, PASSWORD, server.registration_token(), "nio")
    await client.close()
    assert isinstance(resp, RegisterResponse), resp
    client = AsyncClient(server.url, resp.user_id, config=config)
    assert isinstance(await client.login(PASSWORD, device_name="e2e"), LoginResponse)
    return Trader(client)


@pytest.fixture
async def traders(server: Server) -> AsyncIterator[tuple[Trader, Trader]]:
    suffix = secrets.token_hex(3)
    seller = await _trader(server, f"seller-{suffix}")
    buyer = await _trader(server, f"buyer-{suffix}")
    try:
        yield seller, buyer
    finally:
        await seller.stop()
        await buyer.stop()


def _mint(server: Server, user_id: str, credits: str) -> None:
    """An admin mints credits with `clawlist credits mint` (against the server's database)."""
    result = cli(
        ["credits", "mint", user_id, credits, "--memo", "e2e market"],
        env=server.env,
        cwd=server.stderr_path.parent,
    )
    assert f"minted {credits}.00 credits to {user_id}" in " ".join(result.stdout.split()), result.stdout


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, (pattern, text)
    return match.group(1)


REF = r"([A-Za-z0-9_-]{8})"


async def test_whole_trade_by_text(server: Server, traders: tuple[Trader, Trader]) -> None:
    seller, buyer = traders
    for trader in (seller, buyer):
        joined = await trader.client.join(MARKET)
        assert isinstance(joined, JoinResponse), joined
        await trader.start()
    market = joined.room_id

    text = await seller.say(market, "/help")
    assert "/sell <price> <title>" in text and "/feedback" in text

    # the seller lists; the buyer finds it
    text = await seller.say(
        market, "/sell 120 Road bike, 54 cm | Aluminium frame, new tyres #electronics cond=good loc=Berlin"
    )
    assert text.startswith("Listed here: Road bike, 54 cm for 120.00 credits"), text
    listing = _find(rf"Reference: {REF}", text)
    text = await buyer.say(market, "/search road bike max=150")
    assert f"{listing} · Road bike, 54 cm — 120.00 credits" in text, text
    assert listing == _find(rf"1\. {REF} ·", text)

    # a malformed command gets its usage line, and nothing happens
    text = await buyer.say(market, f"/offer {listing} a hundred")
    assert "Usage: /offer <listing> <total amount> [qty=N]" in text

    # the buyer offers from #market: the offer goes to the DM with the seller
    text = await buyer.say(market, f"/offer {listing} 100")
    assert f"posted in your DM with {seller.user_id}" in text, text
    offer = _find(rf"^Offer {REF} of 100.00 credits", text)
    dm = _find(r"\(room (![^ )]+)\)", text)

    # the seller is invited, joins, and reads in the DM how to answer
    await seller.wait_for(
        lambda room, event: (
            room == dm and isinstance(event, InviteMemberEvent) and event.state_key == seller.user_id
        )
    )
    assert isinstance(await seller.client.join(dm), JoinResponse)
    _, heads_up = await seller.wait_for(
        lambda room, event: room == dm and isinstance(event, RoomMessageNotice) and "/accept" in event.body
    )
    assert f"/counter {offer} <amount>" in heads_up.body

    text = await seller.say(dm, f"/counter {offer} 110")
    counter = _find(rf"^Counter-offer {REF} of 110.00 credits", text)
    assert f"/accept {counter}" in text

    text = await buyer.say(dm, f"/accept {counter}")
    assert "agreed" in text, text
    deal = _find(r"/fund (\S+)\.", text)

    # funding beyond the balance is refused and changes nothing
    text = await buyer.say(dm, f"/fund {deal}")
    assert text.startswith("/fund refused: insufficient funds"), text
    text = await buyer.say(market, "/balance")
    assert text == "Your balance: 0.00 credits."

    # an admin mints 200 credits to the buyer
    _mint(server, buyer.user_id, "200")
    text = await buyer.say(market, "/balance")
    assert text == "Your balance: 200.00 credits.", text

    text = await buyer.say(dm, f"/fund {deal}")
    assert "funded: 110.00 credits held in escrow" in text and "Your balance is now 90.00 credits." in text

    # the seller cannot confirm for the buyer
    text = await seller.say(dm, f"/confirm {deal}")
    assert text.startswith("/confirm refused:"), text

    text = await seller.say(dm, f"/delivered {deal} sent by courier, tracking 12345")
    assert "marked delivered" in text and "sent by courier" in text

    text = await buyer.say(dm, f"/confirm {deal}")
    assert "completed" in text and "received 107.25 credits (fee 2.75 credits)" in text, text

    text = await buyer.say(dm, f"/feedback {deal} +1 as described, fast delivery")
    assert text.startswith("Feedback +1") and seller.user_id in text
    text = await seller.say(market, f"/feedback {deal} +1 paid at once")
    assert text.startswith("Feedback +1") and buyer.user_id in text
    text = await seller.say(market, f"/feedback {deal} -1 changed my mind")
    assert text.startswith("/feedback refused:") and "already" in text

    # 200 minted = 90 with the buyer + 107.25 with the seller + 2.75 fee
    assert await buyer.say(market, "/balance") == "Your balance: 90.00 credits."
    assert await seller.say(market, "/balance") == "Your balance: 107.25 credits."
    text = await seller.say(market, "/deals all")
    assert f"{deal[:8]} · completed · selling to {buyer.user_id}" in text, text
