"""Shared tools of the fault tests: server processes that can be killed and restarted on the same
port, private Redis/NATS servers, agents, bounded retries, history paging and gateway frames.

Everything is on 127.0.0.1, and every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import IN_CI, PG_URL, _drop_schema, free_port, require_postgres
from tests.helpers import Agent, login, new_keypair

CLAWLIST = [sys.executable, "-m", "clawlist"]
RETRY_STATUS = frozenset({500, 502, 503, 504})


class ServerProcess:
    """A `clawlist serve` process on a fixed port, which may be SIGKILLed and started again there."""

    def __init__(self, workdir: Path, env_extra: dict[str, str] | None = None, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/gateway"
        self.env = {
            **os.environ,
            "CLAWLIST_PORT": str(self.port),
            "CLAWLIST_DATA_DIR": str(workdir / "data"),
            "CLAWLIST_SERVER_NAME": "faults.local",
            "CLAWLIST_REGISTRATION": "open",
            # these tests send in bursts on purpose; the send rate limit has its own tests
            "CLAWLIST_SEND_RATE_PER_SECOND": "1000000",
            "CLAWLIST_SEND_RATE_BURST": "1000000",
            **(env_extra or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_path(self, start: int) -> Path:
        return self.workdir / f"server-{self.port}-{start}.log"

    def output(self) -> str:
        return "".join(
            self.log_path(i).read_text(errors="replace")
            for i in range(1, self.starts + 1)
            if self.log_path(i).exists()
        )

    async def start(self, timeout: float = 30) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with self.log_path(self.starts).open("wb") as log:
            self.process = subprocess.Popen(
                [*CLAWLIST, "serve"], cwd=self.workdir, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited early:\n{self.output()[-4000:]}")
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not become healthy:\n{self.output()[-4000:]}")
                await asyncio.sleep(0.05)

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@asynccontextmanager
async def serving(workdir: Path, env_extra: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(workdir, env_extra)
    try:
        await server.start()
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def pg_schema_env() -> AsyncIterator[dict[str, str]]:
    """The environment of a server on a fresh PostgreSQL schema, dropped afterwards."""
    require_postgres()
    schema = "faults_" + secrets.token_hex(5)
    try:
        yield {"CLAWLIST_DATABASE_URL": PG_URL, "CLAWLIST_DATABASE_SCHEMA": schema}
    finally:
        await _drop_schema(schema)


# -- private bus servers ---------------------------------------------------------------------------


def bus_binary(kind: str) -> str:
    name = "redis-server" if kind == "redis" else "nats-server"
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/usr/local/bin")
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed, and CI=true requires it")
    pytest.skip(f"{name} is not installed")


class PrivateBus:
    """A Redis or NATS server of this test alone, on a free port (never the shared 6379/4222)."""

    def __init__(self, kind: str, data: Path) -> None:
        self.kind = kind
        self.binary = bus_binary(kind)
        self.port = free_port()
        self.data = data
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0" if kind == "redis" else f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if self.kind == "redis":
            cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "no", "--dir", str(self.data)]
        else:
            cmd = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.data)]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.data
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{self.kind} server did not start on port {self.port}") from None
                time.sleep(0.02)

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


# -- agents and REST -------------------------------------------------------------------------------


async def new_agent(url: str, handle: str) -> Agent:
    key, public = new_keypair()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.post("/api/v1/agents", json={"handle": handle, "public_key": public})
        assert r.status_code == 201, r.text
        agent = Agent(r.json()["user_id"], key, public)
        await login(client, agent)
    return agent


async def rest(url: str, agent: Agent, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=url, headers=agent.headers, timeout=10) as client:
        r = await client.request(method, "/api/v1" + path, json=body)
        assert r.status_code < 300, r.text
        return r.json()


async def public_room(url: str, owner: Agent, *members: Agent) -> str:
    room = (await rest(url, owner, "POST", "/rooms", {"name": "f", "visibility": "public"}))["room_id"]
    for m in members:
        await rest(url, m, "POST", f"/rooms/{room}/join")
    return str(room)


async def send_until_acked(
    client: httpx.AsyncClient, agent: Agent, room: str, txn_id: str, body: str, deadline: float
) -> str:
    """POST one message, retrying the same txn_id on connection errors and 5xx (small backoff)."""
    delay = 0.02
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = await client.post(
                f"/api/v1/rooms/{room}/messages",
                headers=agent.headers,
                json={"txn_id": txn_id, "body": body},
            )
        except httpx.TransportError as exc:
            last = exc
        else:
            if r.status_code == 200:
                return str(r.json()["event_id"])
            if r.status_code not in RETRY_STATUS:
                raise AssertionError(f"send {txn_id} refused: {r.status_code} {r.text}")
            last = r.status_code
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.3)
    raise AssertionError(f"send {txn_id} was never acknowledged (last failure: {last!r})")


async def room_history(url: str, agent: Agent, room: str, max_pages: int = 50) -> list[dict[str, Any]]:
    """The whole timeline of `room`, oldest first, paged forwards with `from`/`end`."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"dir": "f", "limit": 1000}
    async with httpx.AsyncClient(base_url=url, headers=agent.headers, timeout=30) as client:
        for _ in range(max_pages):
            r = await client.get(f"/api/v1/rooms/{room}/messages", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            out.extend(page["chunk"])
            if "end" not in page:
                return out
            params["from"] = page["end"]
    raise AssertionError(f"history of {room} did not end within {max_pages} pages")


# -- the gateway -----------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def frame(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def until(ws: ClientConnection, op: str, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        f = await frame(ws, max(0.01, deadline - time.monotonic()))
        if f["op"] == op:
            return f


async def open_gateway(
    ws_url: str, agent: Agent, resume: int | None = None, **kwargs: Any
) -> tuple[ClientConnection, dict[str, Any] | None]:
    """An identified connection and its `ready` frame (None when resuming)."""
    ws = await asyncio.wait_for(connect(ws_url, additional_headers=agent.headers, **kwargs), 10)
    hello = await frame(ws)
    assert hello["op"] == "hello" and hello["d"]["identified"] is True, hello
    if resume is None:
        await ws.send(dumps({"op": "identify", "d": {}}))
        ready = await until(ws, "ready")
        assert ready["d"]["user_id"] == agent.user_id
        return ws, ready
    await ws.send(dumps({"op": "resume", "d": {"position": resume}}))
    return ws, None


def handshake(port: int, token: str | None = None, timeout: float = 5) -> socket.socket:
    """A raw TCP socket that has done the WebSocket upgrade (and nothing else)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        (
            f"GET /api/v1/gateway HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"connection closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def client_frame(payload: bytes, opcode: int = 0x1, *, announce: int | None = None) -> bytes:
    """A masked client frame; `announce` lies about the payload length."""
    length = len(payload) if announce is None else announce
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
