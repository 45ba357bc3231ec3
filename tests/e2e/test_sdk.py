"""The Python SDK (`clawlist.client`) against real server processes: the resuming, deduplicating
event iterator (across a SIGKILL and restart), idempotent retried sends, token refresh, and
`clawlist listen`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from clawlist.client import ClawlistClient, Gateway, generate_key
from tests.e2e.server import CLAWLIST, Server, cli, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ENV = {"CLAWLIST_REGISTRATION": "open", "CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "2000"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(Path(tmp_path_factory.mktemp("sdk")), ENV) as srv:
        yield srv


@contextlib.asynccontextmanager
async def agent(url: str, handle: str) -> AsyncIterator[ClawlistClient]:
    key = generate_key()
    async with ClawlistClient(url) as client:
        await client.login(await client.register(handle, key), key)
        yield client


async def collect(stream: Gateway, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The next `count` m.room.message events, within `timeout` seconds."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            event = await anext(stream)
            if event["type"] == "m.room.message":
                got.append(event)
    return got


async def test_events_arrive_in_order_once(server: Server) -> None:
    async with agent(server.url, "sdk-alice") as alice, agent(server.url, "sdk-bob") as bob:
        room = await alice.create_room("sdk", public=True)
        await bob.join(room)
        async with bob.events(rooms=[room]) as stream:
            assert stream.position is None or stream.position >= 0
            sent = [await alice.send(room, f"m{i}") for i in range(10)]
            got = await collect(stream, 10)
            assert [e["event_id"] for e in got] == sent
            assert [e["content"]["body"] for e in got] == [f"m{i}" for i in range(10)]
            assert stream.position == got[-1]["position"]
            # over the gateway too: the ack carries the event id, the stream shows it once
            event_id = await stream.send(room, {"msgtype": "m.text", "body": "via gateway"})
            assert [e["event_id"] for e in await collect(stream, 1)] == [event_id]
        # resuming from a saved position gives what came after it, nothing before
        later = [await alice.send(room, f"later{i}") for i in range(3)]
        async with bob.events(rooms=[room], since=got[-1]["position"]) as again:
            assert [e["event_id"] for e in await collect(again, 4)] == [event_id, *later]
        # helpers: react, redact, receipts, typing, presence, DMs, history pages
        await bob.react(room, sent[0], "👍")
        await alice.redact(room, sent[1], reason="oops")
        await bob.receipt(room, sent[2])
        await alice.typing(room, True, timeout_ms=5000)
        await alice.set_presence("online", "trading")
        assert (await bob.presence(alice.user_id or ""))["presence"] in ("online", "unavailable")
        dm = await alice.open_dm(bob.user_id or "")
        assert dm == await bob.open_dm(alice.user_id or "")
        pages = [page async for page in bob.history_pages(room, limit=5)]
        assert sum(len(p) for p in pages) >= 15 and len(pages) >= 3
        synced = await bob.sync(limit=5)
        assert room in synced["rooms"] and synced["next_batch"].startswith("s")


async def test_send_with_a_txn_id_is_idempotent(server: Server) -> None:
    async with agent(server.url, "sdk-txn") as alice:
        room = await alice.create_room("txn")
        first = await alice.send(room, "once", txn_id="retry-me")
        # the answer was "lost": the retry with the same txn id stores nothing new
        assert await alice.send(room, "once", txn_id="retry-me") == first
        bodies = [e for e in (await alice.history(room, limit=50))["chunk"] if e["type"] == "m.room.message"]
        assert [e["event_id"] for e in bodies] == [first]
        # a refresh keeps the session, so the txn id still maps to the same event
        await alice.refresh()
        assert await alice.send(room, "once", txn_id="retry-me") == first


async def test_events_resume_across_sigkill_and_restart(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_server(tmp_path, ENV))
        async with agent(first.url, "kill-alice") as alice, agent(first.url, "kill-bob") as bob:
            room = await alice.create_room("kill", public=True)
            await bob.join(room)
            stream = bob.events(rooms=[room], max_backoff=0.5)
            try:
                await stream.connected()  # it starts from "now": what is sent later
                before = [await alice.send(room, f"before{i}") for i in range(5)]
                got = await collect(stream, 5)
                pending = asyncio.ensure_future(collect(stream, 10, timeout=40))
                await asyncio.sleep(0.2)
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait(5)
                await asyncio.to_thread(
                    lambda: stack.enter_context(running_server(tmp_path, ENV, port=first.port))
                )
                after = [await alice.send(room, f"after{i}") for i in range(10)]
                got += await pending
            finally:
                await stream.aclose()
            ids = [e["event_id"] for e in got]
            assert ids == before + after and len(set(ids)) == len(ids)
            positions = [e["position"] for e in got]
            assert positions == sorted(positions)
            assert stream.reconnects >= 1 and stream.last_close[0] in (None, 1006, 1011, 1012, 1001)


async def test_token_refresh_for_rest_and_gateway(tmp_path: Path) -> None:
    env = {**ENV, "CLAWLIST_ACCESS_TOKEN_TTL_SECONDS": "10"}
    with running_server(tmp_path, env) as srv:
        async with agent(srv.url, "ttl-alice") as alice, agent(srv.url, "ttl-bob") as bob:
            room = await alice.create_room("ttl", public=True)
            await bob.join(room)
            async with bob.events(rooms=[room]) as stream:
                await alice.send(room, "fresh")
                (seen,) = await collect(stream, 1)
            stale_alice, stale_bob = alice.access_token, bob.access_token
            await asyncio.sleep(10.5)
            # the gateway refuses the expired token (4011): the stream refreshes and reconnects
            async with bob.events(rooms=[room], since=seen["position"]) as stream:
                # REST: 401 on the expired token, refresh, retry
                sent = await alice.send(room, "after expiry")
                assert [e["event_id"] for e in await collect(stream, 1)] == [sent]
                assert stream.last_close[0] == 4011  # refused at the handshake, then refreshed
            assert alice.access_token != stale_alice and bob.access_token != stale_bob


def _lines(pipe: IO[str]) -> queue.Queue[str]:
    """Lines read from a pipe by a background thread, to wait for with a timeout."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in pipe], daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} within {timeout} s; got {seen}")


def test_cli_listen_prints_new_messages(server: Server, tmp_path: Path) -> None:
    env = {**server.env, "CLAWLIST_SERVER": server.url, "CLAWLIST_CONFIG_DIR": str(tmp_path / "cfg")}
    cli(["agent", "create", "listen-alice"], env=env, cwd=tmp_path)
    cli(["agent", "create", "listen-bob"], env=env, cwd=tmp_path)
    room = cli(
        ["room", "create", "radio", "--public", "--alias", "radio", "--as", "listen-alice"],
        env=env,
        cwd=tmp_path,
    ).stdout.strip()
    cli(["room", "join", room, "--as", "listen-bob"], env=env, cwd=tmp_path)
    for as_json in (True, False):
        args = ["listen", "#radio:e2e.local", "--as", "listen-bob", *(["--json"] if as_json else [])]
        proc = subprocess.Popen(
            [*CLAWLIST, *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = _lines(proc.stdout), _lines(proc.stderr)
            _wait_line(err, "listening to " + room)
            text = f"on the air {as_json}"
            sent = cli(["send", room, text, "--as", "listen-alice"], env=env, cwd=tmp_path).stdout.strip()
            line = _wait_line(out, text)
            if as_json:
                event = json.loads(line)
                assert event["event_id"] == sent and event["content"]["body"] == text
            else:
                assert "@listen-alice:e2e.local" in line
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
            assert "resume with --since" in _wait_line(err, "stopped at position")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
