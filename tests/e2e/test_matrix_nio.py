"""matrix-nio, unmodified, against a real `clawlist serve` process on 127.0.0.1.

Registration with a token (nio's three-step user-interactive flow), password login, a DM created with
`is_direct`, invite and join, messages both ways received by `sync_forever`, typing, receipts,
`/messages` pagination, redaction, `m.direct` account data, and media upload and download.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    DirectRoomsErrorResponse,
    DirectRoomsResponse,
    DownloadResponse,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MessageDirection,
    ReceiptEvent,
    RedactionEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomMessageImage,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomRedactResponse,
    RoomSendResponse,
    SyncResponse,
    ThumbnailResponse,
    TypingNoticeEvent,
    UploadResponse,
    WhoamiResponse,
)

from tests.conftest import PG_URL, _drop_schema, require_postgres
from tests.e2e.server import Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVER_NAME = "e2e.local"
PASSWORD = "correct horse battery staple"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + secrets.token_bytes(2000)
WAIT = 15.0  # seconds any single expected event may take


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend for the whole module (each test uses its own users and rooms)."""
    env = {"CLAWLIST_REGISTRATION": "token"}
    schema = None
    if request.param == "postgres":
        require_postgres()
        schema = "e2e_nio_" + secrets.token_hex(4)
        env |= {"CLAWLIST_DATABASE_URL": PG_URL, "CLAWLIST_DATABASE_SCHEMA": schema}
    try:
        with running_server(Path(tmp_path_factory.mktemp(f"nio-{request.param}")), env) as srv:
            yield srv
    finally:
        if schema is not None:
            asyncio.run(_drop_schema(schema))


def _client(server: Server, user: str = "") -> AsyncClient:
    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=30)
    return AsyncClient(server.url, user, config=config)


async def _registered(server: Server, handle: str) -> AsyncClient:
    """A new user registered with nio's registration-token flow, then logged in with its password."""
    client = _client(server)
    resp = await client.register_with_token(handle, PASSWORD, server.registration_token(), "nio")
    await client.close()
    assert isinstance(resp, RegisterResponse), resp
    assert resp.user_id == f"@{handle}:{SERVER_NAME}"
    client = _client(server, resp.user_id)
    login = await client.login(PASSWORD, device_name="e2e")
    assert isinstance(login, LoginResponse), login
    return client


class Inbox:
    """Collects what a syncing client's callbacks see, and waits for a matching item."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.changed = asyncio.Condition()

    async def put(self, item: Any) -> None:
        async with self.changed:
            self.items.append(item)
            self.changed.notify_all()

    async def wait_for(self, match: Any, timeout: float = WAIT, start: int = 0) -> Any:
        """The first item from index `start` on for which `match` is true."""

        async def find() -> Any:
            async with self.changed:
                while True:
                    for item in self.items[start:]:
                        if match(item):
                            return item
                    await self.changed.wait()

        return await asyncio.wait_for(find(), timeout)


def _listen(client: AsyncClient) -> Inbox:
    inbox = Inbox()

    async def on_event(room: Any, event: Any) -> None:
        await inbox.put(("event", room.room_id, event))

    async def on_ephemeral(room: Any, event: Any) -> None:
        await inbox.put(("ephemeral", room.room_id, event))

    client.add_event_callback(
        on_event, (RoomMessageText, RoomMessageImage, RedactionEvent, InviteMemberEvent)
    )
    client.add_ephemeral_callback(on_ephemeral, (TypingNoticeEvent, ReceiptEvent))
    return inbox


async def _syncing(client: AsyncClient) -> asyncio.Task[None]:
    task = asyncio.create_task(client.sync_forever(timeout=5000, full_state=True))
    return task


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close(*clients: AsyncClient) -> None:
    for client in clients:
        await client.close()


@pytest.fixture
async def pair(server: Server) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    suffix = secrets.token_hex(3)
    alice = await _registered(server, f"nio-alice-{suffix}")
    bob = await _registered(server, f"nio-bob-{suffix}")
    try:
        yield alice, bob
    finally:
        await _close(alice, bob)


async def test_register_with_token_login_whoami(server: Server) -> None:
    handle = f"nio-reg-{secrets.token_hex(3)}"
    # a wrong token is refused, and the handle stays free
    client = _client(server)
    resp = await client.register_with_token(handle, PASSWORD, "clw_reg_not_a_real_token", "nio")
    assert not isinstance(resp, RegisterResponse)
    await client.close()

    client = await _registered(server, handle)
    who = await client.whoami()
    assert isinstance(who, WhoamiResponse), who
    assert who.user_id == f"@{handle}:{SERVER_NAME}"
    assert who.device_id == client.device_id
    await client.close()

    # logging in with the bare localpart works too; a wrong password does not
    client = _client(server, handle)
    assert isinstance(await client.login(PASSWORD), LoginResponse)
    assert client.user_id == f"@{handle}:{SERVER_NAME}"
    await client.close()
    client = _client(server, handle)
    assert not isinstance(await client.login("wrong password!!"), LoginResponse)
    await client.close()


async def test_direct_chat(pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = pair
    alice_inbox, bob_inbox = _listen(alice), _listen(bob)
    syncs: list[asyncio.Task[None]] = []
    try:
        # bob is syncing before the invite, so the invite arrives by sync
        syncs.append(await _syncing(bob))
        await asyncio.wait_for(bob.synced.wait(), WAIT)

        created = await alice.room_create(
            is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat
        )
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        assert room_id.startswith("!") and room_id.endswith(f":{SERVER_NAME}")

        # bob sees the invite, with is_direct on his own member event
        _, _, invite = await bob_inbox.wait_for(
            lambda i: (
                i[0] == "event"
                and i[1] == room_id
                and isinstance(i[2], InviteMemberEvent)
                and i[2].state_key == bob.user_id
            )
        )
        assert invite.membership == "invite"
        assert invite.content.get("is_direct") is True
        assert room_id in bob.invited_rooms

        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        assert joined.room_id == room_id
        # joining again is fine
        assert isinstance(await bob.join(room_id), JoinResponse)

        # m.direct account data: absent first, then what each side stored
        missing = await alice.list_direct_rooms()
        assert isinstance(missing, DirectRoomsErrorResponse)
        assert missing.status_code == "M_NOT_FOUND"
        for me, other in ((alice, bob), (bob, alice)):
            path = Api._build_path(["user", me.user_id, "account_data", "m.direct"])
            response = await me.send(
                "PUT",
                path,
                Api.to_json({other.user_id: [room_id]}),
                headers={"Authorization": f"Bearer {me.access_token}"},
            )
            assert response.status == 200, await response.text()
            direct = await me.list_direct_rooms()
            assert isinstance(direct, DirectRoomsResponse), direct
            assert direct.rooms == {other.user_id: [room_id]}
        # alice (not syncing yet) gets her m.direct in the global account data of a sync
        synced = await alice.sync(timeout=0, full_state=True)
        assert isinstance(synced, SyncResponse), synced
        directs = [e for e in synced.account_data_events if getattr(e, "type", None) == "m.direct"]
        assert [e.content for e in directs] == [{bob.user_id: [room_id]}]

        syncs.append(await _syncing(alice))
        await asyncio.wait_for(alice.synced.wait(), WAIT)

        # a message each way, each received by the other's sync_forever
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"})
        assert isinstance(sent, RoomSendResponse), sent
        _, _, got = await bob_inbox.wait_for(
            lambda i: i[0] == "event" and isinstance(i[2], RoomMessageText) and i[2].event_id == sent.event_id
        )
        assert (got.sender, got.body) == (alice.user_id, "hello bob")
        reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"})
        assert isinstance(reply, RoomSendResponse), reply
        _, _, got = await alice_inbox.wait_for(
            lambda i: (
                i[0] == "event" and isinstance(i[2], RoomMessageText) and i[2].event_id == reply.event_id
            )
        )
        assert (got.sender, got.body) == (bob.user_id, "hi alice")
        # the room is a two-member DM on both sides
        assert alice.rooms[room_id].member_count == 2
        assert bob.rooms[room_id].member_count == 2

        # typing: on, then off
        assert (
            await alice.room_typing(room_id, True, timeout=20_000)
        ).__class__.__name__ == "RoomTypingResponse"
        await bob_inbox.wait_for(
            lambda i: (
                i[0] == "ephemeral"
                and i[1] == room_id
                and isinstance(i[2], TypingNoticeEvent)
                and alice.user_id in i[2].users
            )
        )
        await alice.room_typing(room_id, False)
        count = len(bob_inbox.items)
        await bob_inbox.wait_for(
            lambda i: (
                i[0] == "ephemeral"
                and isinstance(i[2], TypingNoticeEvent)
                and alice.user_id not in i[2].users
            ),
            start=count,
        )

        # receipts: bob reads alice's message; alice sees the receipt
        marked = await bob.update_receipt_marker(room_id, sent.event_id)
        assert marked.__class__.__name__ == "UpdateReceiptMarkerResponse", marked
        await alice_inbox.wait_for(
            lambda i: (
                i[0] == "ephemeral"
                and isinstance(i[2], ReceiptEvent)
                and any(
                    r.event_id == sent.event_id and r.user_id == bob.user_id and r.receipt_type == "m.read"
                    for r in i[2].receipts
                )
            )
        )
        markers = await alice.room_read_markers(room_id, reply.event_id, reply.event_id)
        assert markers.__class__.__name__ == "RoomReadMarkersResponse", markers

        # redaction: bob sees it, and the event is redacted when fetched
        redacted = await alice.room_redact(room_id, sent.event_id, reason="typo")
        assert isinstance(redacted, RoomRedactResponse), redacted
        _, _, redaction = await bob_inbox.wait_for(
            lambda i: i[0] == "event" and isinstance(i[2], RedactionEvent) and i[2].redacts == sent.event_id
        )
        assert redaction.reason == "typo"
        fetched = await bob.room_get_event(room_id, sent.event_id)
        assert isinstance(fetched, RoomGetEventResponse), fetched
        assert "body" not in fetched.event.source.get("content", {})
        assert fetched.event.source.get("unsigned", {}).get("redacted_because", {}).get("event_id") == (
            redacted.event_id
        )
    finally:
        await _stop(*syncs)


async def test_messages_pagination(pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = pair
    created = await alice.room_create(preset=RoomPreset.public_chat, name="paging")
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    assert isinstance(await bob.join(room_id), JoinResponse)
    bodies = [f"page {i}" for i in range(25)]
    for body in bodies:
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        assert isinstance(sent, RoomSendResponse), sent

    synced = await bob.sync(timeout=0, full_state=True)
    assert isinstance(synced, SyncResponse), synced
    timeline = synced.rooms.join[room_id].timeline

    # backwards from the sync token, 10 at a time, until the start of the room
    seen: list[str] = []
    token: str | None = bob.next_batch
    pages = 0
    while token is not None and pages < 20:
        page = await bob.room_messages(room_id, start=token, limit=10, direction=MessageDirection.back)
        assert isinstance(page, RoomMessagesResponse), page
        pages += 1
        assert len(page.chunk) <= 10
        seen.extend(e.body for e in page.chunk if isinstance(e, RoomMessageText))
        if not page.chunk or page.end is None or page.end == token:
            break
        token = page.end
    assert list(reversed(seen)) == bodies
    assert pages >= 3

    # from the timeline's prev_batch, with a filter on the event type
    if timeline.limited and timeline.prev_batch:
        page = await bob.room_messages(
            room_id, start=timeline.prev_batch, limit=5, message_filter={"types": ["m.room.message"]}
        )
        assert isinstance(page, RoomMessagesResponse), page
        assert all(e.source["type"] == "m.room.message" for e in page.chunk)

    # forwards from the beginning of the room, messages only, 10 at a time
    forward_seen: list[str] = []
    token = None
    for _ in range(10):
        page = await bob.room_messages(
            room_id,
            start=token,
            limit=10,
            direction=MessageDirection.front,
            message_filter={"types": ["m.room.message"]},
        )
        assert isinstance(page, RoomMessagesResponse), page
        forward_seen.extend(e.body for e in page.chunk if isinstance(e, RoomMessageText))
        if not page.chunk or page.end is None:
            break
        token = page.end
    assert forward_seen == bodies


async def test_media_upload_download(pair: tuple[AsyncClient, AsyncClient]) -> None:
    alice, bob = pair
    config = await alice.content_repository_config()
    assert config.__class__.__name__ == "ContentRepositoryConfigResponse", config
    assert config.upload_size and config.upload_size > len(PNG)

    uploaded, keys = await alice.upload(
        io.BytesIO(PNG), content_type="image/png", filename="pic.png", filesize=len(PNG)
    )
    assert keys is None
    assert isinstance(uploaded, UploadResponse), uploaded
    mxc = uploaded.content_uri
    assert mxc.startswith(f"mxc://{SERVER_NAME}/")

    downloaded = await bob.download(mxc)
    assert isinstance(downloaded, DownloadResponse), downloaded
    assert downloaded.body == PNG
    assert downloaded.content_type == "image/png"
    assert downloaded.filename == "pic.png"

    _, media_id = mxc[len("mxc://") :].split("/", 1)
    thumb = await bob.thumbnail(SERVER_NAME, media_id, 32, 32)
    assert isinstance(thumb, ThumbnailResponse), thumb
    assert thumb.body == PNG

    missing = await bob.download(f"mxc://{SERVER_NAME}/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert not isinstance(missing, DownloadResponse)

    # an HTML upload comes back as an attachment, never as HTML
    html = b"<html><script>alert(1)</script></html>"
    uploaded_html, _ = await alice.upload(io.BytesIO(html), content_type="text/html", filename="x.html")
    assert isinstance(uploaded_html, UploadResponse), uploaded_html
    got = await bob.download(uploaded_html.content_uri)
    assert isinstance(got, DownloadResponse), got
    assert got.body == html and got.content_type == "application/octet-stream"

    # an m.image event carrying the mxc reaches the other side, which downloads the file
    created = await alice.room_create(invite=[bob.user_id], is_direct=True)
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    assert isinstance(await bob.join(room_id), JoinResponse)
    content = {
        "msgtype": "m.image",
        "body": "pic.png",
        "url": mxc,
        "info": {"mimetype": "image/png", "size": len(PNG)},
    }
    sent = await alice.room_send(room_id, "m.room.message", content)
    assert isinstance(sent, RoomSendResponse), sent
    bob_inbox = _listen(bob)
    sync = await _syncing(bob)
    try:
        _, _, image = await bob_inbox.wait_for(
            lambda i: (
                i[0] == "event" and isinstance(i[2], RoomMessageImage) and i[2].event_id == sent.event_id
            )
        )
        again = await bob.download(image.url)
        assert isinstance(again, DownloadResponse) and again.body == PNG
    finally:
        await _stop(sync)
