"""mautrix-python, unmodified, against a real `clawlist serve` process on 127.0.0.1: a bot logs in
with a password, starts syncing, auto-joins the room a native-API agent invites it to, and replies
(with `m.in_reply_to`) to that agent's message; the native agent reads the reply over REST."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mautrix.client import Client, InternalEventType
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import (
    EventType,
    Membership,
    MessageEvent,
    MessageType,
    StateEvent,
    TextMessageEventContent,
)

from tests.e2e.server import Server, running_server
from tests.helpers import register, send

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PASSWORD = "mautrix password 123"
WAIT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(Path(tmp_path_factory.mktemp("mautrix")), {"CLAWLIST_REGISTRATION": "open"}) as srv:
        yield srv


async def _history(http: httpx.AsyncClient, headers: dict[str, str], room_id: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/v1/rooms/{room_id}/messages", headers=headers, params={"limit": 50})
    assert r.status_code == 200, r.text
    chunk: list[dict[str, Any]] = r.json()["chunk"]
    return chunk


async def test_mautrix_bot_auto_joins_and_replies(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        native = await register(http, "mx-native", None)
        bot_agent = await register(http, "mx-bot", None, password=PASSWORD)

        client = Client(base_url=server.url, state_store=MemoryStateStore())
        joined = asyncio.Event()
        replied: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        errors: list[BaseException] = []

        async def on_member(evt: StateEvent) -> None:
            if evt.state_key != client.mxid or evt.content.membership != Membership.INVITE:
                return
            try:
                await client.join_room(evt.room_id)
                joined.set()
            except Exception as exc:  # reported by the test, not lost in the syncer's logs
                errors.append(exc)
                joined.set()

        async def on_message(evt: MessageEvent) -> None:
            if evt.sender != native.user_id or replied.done():
                return
            try:
                content = TextMessageEventContent(msgtype=MessageType.TEXT, body=f"re: {evt.content.body}")
                content.set_reply(evt)
                event_id = await client.send_message(evt.room_id, content)
                replied.set_result(str(event_id))
            except Exception as exc:
                errors.append(exc)
                replied.set_exception(exc)

        client.add_event_handler(EventType.ROOM_MEMBER, on_member)
        client.add_event_handler(EventType.ROOM_MESSAGE, on_message)
        try:
            login = await client.login(identifier=bot_agent.user_id, password=PASSWORD, device_name="mautrix")
            assert login.user_id == bot_agent.user_id
            whoami = await client.whoami()
            assert whoami.user_id == bot_agent.user_id

            first_sync = asyncio.Event()

            async def on_sync(*_args: Any, **_kwargs: Any) -> None:
                first_sync.set()

            client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, on_sync)
            syncing = client.start(None)
            await asyncio.wait_for(first_sync.wait(), WAIT)

            # the invite comes while the bot is syncing; it joins by itself
            r = await http.post("/api/v1/rooms", headers=native.headers, json={"name": "mautrix"})
            assert r.status_code == 201, r.text
            room_id = r.json()["room_id"]
            r = await http.post(
                f"/api/v1/rooms/{room_id}/invite", headers=native.headers, json={"user_id": bot_agent.user_id}
            )
            assert r.status_code == 200, r.text
            await asyncio.wait_for(joined.wait(), WAIT)
            assert not errors, errors
            assert room_id in await client.get_joined_rooms()

            sent_id = await send(http, native, room_id, "ping from the native API")
            reply_id = await asyncio.wait_for(asyncio.shield(replied), WAIT)
            assert not errors, errors

            # the native agent sees the reply, pointing at its message
            deadline = time.monotonic() + WAIT
            while True:
                replies = [
                    e for e in await _history(http, native.headers, room_id) if e["event_id"] == reply_id
                ]
                if replies or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert len(replies) == 1
            reply = replies[0]
            assert reply["sender"] == bot_agent.user_id
            assert reply["content"]["body"].endswith("re: ping from the native API")
            assert reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent_id
            client.stop()
            await asyncio.wait_for(syncing, 10)
        finally:
            client.stop()
            await client.api.session.close()
