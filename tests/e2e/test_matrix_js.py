"""matrix-js-sdk (from npm, run with the machine's Node) against a real `clawlist serve` process.

The bot (tests/e2e/js/bot.mjs) logs in with a password, reaches PREPARED, joins the DM a native-API
agent invited it to, receives that agent's message and answers it; the native agent reads the answer
through the REST API. `npm ci` installs the locked dependencies into tests/e2e/js/node_modules once.
Without node or npm the test is skipped, except under CI=true where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI
from tests.e2e.server import Server, running_server
from tests.helpers import register, send

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

JS_DIR = Path(__file__).parent / "js"
PASSWORD = "js sdk password 123"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{tool} is not installed, and CI=true requires it")
    pytest.skip(f"{tool} is not installed (needed for the matrix-js-sdk test)")


def _installed() -> bool:
    """node_modules matches package-lock.json (npm ci writes its own copy of the lock)."""
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    sdk = JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json"
    return (
        marker.is_file()
        and sdk.is_file()
        and marker.stat().st_mtime >= (JS_DIR / "package-lock.json").stat().st_mtime
    )


@pytest.fixture(scope="module")
def node() -> str:
    node = _require("node")
    npm = _require("npm")
    major = int(
        subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
        .stdout[1:]
        .split(".")[0]
    )
    if major < 20:
        message = f"node {major} is too old for matrix-js-sdk (need 20+)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    if not _installed():
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise AssertionError(f"npm ci failed:\n{result.stdout}\n{result.stderr}")
    return node


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(Path(tmp_path_factory.mktemp("js")), {"CLAWLIST_REGISTRATION": "open"}) as srv:
        yield srv


async def _reports(stream: asyncio.StreamReader, into: asyncio.Queue[dict[str, Any]], log: list[str]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        log.append(text)
        if text.startswith("@@ "):
            await into.put(json.loads(text[3:]))


async def _next(
    queue: asyncio.Queue[dict[str, Any]], kind: str, log: list[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            report = await asyncio.wait_for(queue.get(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(
                f"no '{kind}' from the js bot; its output:\n" + "\n".join(log[-80:])
            ) from None
        if report["event"] == "error":
            raise AssertionError(f"js bot failed: {report['message']}\n" + "\n".join(log[-80:]))
        if report["event"] == kind:
            return report


async def test_js_sdk_bot_answers_a_native_agent(node: str, server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        native = await register(http, "js-native", None)
        bot = await register(http, "js-bot", None, password=PASSWORD)
        r = await http.post("/api/v1/dms", headers=native.headers, json={"user_id": bot.user_id})
        assert r.status_code in (200, 201), r.text
        room_id = r.json()["room_id"]

        env = {
            **os.environ,
            "HS_URL": server.url,
            "MX_USER": bot.user_id,
            "MX_PASSWORD": PASSWORD,
            "PEER": native.user_id,
            "TIMEOUT_MS": "90000",
        }
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "bot.mjs"),
            cwd=JS_DIR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        log: list[str] = []
        assert process.stdout is not None
        reader = asyncio.create_task(_reports(process.stdout, queue, log))
        try:
            logged_in = await _next(queue, "logged_in", log)
            assert logged_in["user_id"] == bot.user_id
            prepared = await _next(queue, "prepared", log, timeout=60)
            assert {"room_id": room_id, "membership": "invite"} in prepared["rooms"] or any(
                r["room_id"] == room_id for r in prepared["rooms"]
            ), prepared
            joined = await _next(queue, "joined", log)
            assert joined["room_id"] == room_id
            assert joined["dm_inviter"] == native.user_id  # js-sdk sees the invite as a DM

            sent_id = await send(http, native, room_id, "hello from the native API")
            received = await _next(queue, "received", log)
            assert received == {
                "event": "received",
                "room_id": room_id,
                "event_id": sent_id,
                "body": "hello from the native API",
            }
            answer = await _next(queue, "sent", log)
            assert answer["event_id"].startswith("$")
            assert await asyncio.wait_for(process.wait(), 30) == 0, "\n".join(log[-80:])

            # the native agent reads the bot's answer from the room's history
            r = await http.get(f"/api/v1/rooms/{room_id}/messages", headers=native.headers)
            assert r.status_code == 200, r.text
            replies = [e for e in r.json()["chunk"] if e["event_id"] == answer["event_id"]]
            assert len(replies) == 1
            assert replies[0]["sender"] == bot.user_id
            assert replies[0]["content"]["body"] == "echo: hello from the native API"
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.wait_for(reader, 10)
