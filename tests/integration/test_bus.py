"""The bus on real services: memory, Redis and NATS, several instances as several processes would.

Delivery and counter tests use the shared Redis (6379) and NATS (4222); they tag their payloads and
keys so that concurrent users of those servers cannot confuse them. Fault tests start a private
server on a free port, kill it with SIGKILL and start it again: they never touch the shared ones.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from clawlist.bus.base import EPHEMERAL, WAKEUP, Bus
from clawlist.bus.memory import MemoryBus
from clawlist.bus.nats import NatsBus
from clawlist.bus.redis import RedisBus
from tests.conftest import IN_CI, NATS_URL, REDIS_URL, free_port, require_nats, require_redis

pytestmark = pytest.mark.timeout(60)

NETWORKED = ["redis", "nats"]
ALL = ["memory", *NETWORKED]


def _open(kind: str, url: str) -> Bus:
    if kind == "redis":
        return RedisBus(url)
    if kind == "nats":
        return NatsBus(url)
    return MemoryBus()


def _shared_url(kind: str) -> str:
    if kind == "redis":
        require_redis()
        return REDIS_URL
    if kind == "nats":
        require_nats()
        return NATS_URL
    return "memory://"


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class Collector:
    """A handler that keeps the payloads carrying this test's tag (the shared servers are shared)."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.items: list[bytes] = []

    async def __call__(self, payload: bytes) -> None:
        if payload.startswith(self.tag):
            self.items.append(payload)


class Node:
    """One bus with a collector on each channel, like one server process."""

    def __init__(self, bus: Bus, tag: bytes) -> None:
        self.bus = bus
        self.wakeup = Collector(tag)
        self.ephemeral = Collector(tag)
        bus.subscribe(WAKEUP, self.wakeup)
        bus.subscribe(EPHEMERAL, self.ephemeral)


@pytest.fixture
def tag() -> bytes:
    return b"t" + secrets.token_hex(6).encode() + b":"


@pytest.fixture
async def nodes(request: pytest.FixtureRequest, tag: bytes) -> AsyncIterator[list[Node]]:
    """Two started buses on the same shared service (for memory: one bus, seen twice)."""
    kind = str(request.param)
    url = _shared_url(kind)
    if kind == "memory":
        one = Node(MemoryBus(), tag)
        pair = [one, one]
    else:
        pair = [Node(_open(kind, url), tag), Node(_open(kind, url), tag)]
    try:
        for node in pair:
            await node.bus.start()
        await wait_until(lambda: all(n.bus.connected for n in pair), 10, f"{kind} buses to connect")
        yield pair
    finally:
        for node in {id(n): n for n in pair}.values():
            await node.bus.stop()


# -- delivery ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", ALL, indirect=True)
async def test_every_instance_gets_every_message_in_order(nodes: list[Node], tag: bytes) -> None:
    a, b = nodes
    wakeups = [tag + b"w%d" % i for i in range(200)]
    ephemerals = [tag + b"e%d" % i for i in range(50)]
    for i, payload in enumerate(wakeups):
        await a.bus.publish(WAKEUP, payload)
        if i % 4 == 0:
            await b.bus.publish(EPHEMERAL, ephemerals[i // 4])

    def done() -> bool:
        return all(len(n.wakeup.items) >= 200 and len(n.ephemeral.items) >= 50 for n in nodes)

    await wait_until(done, 10, "every message on both instances")
    await asyncio.sleep(0.1)  # nothing extra arrives
    for node in nodes:  # the publisher's own handlers included
        assert node.wakeup.items == wakeups
        assert node.ephemeral.items == ephemerals


@pytest.mark.parametrize("nodes", ALL, indirect=True)
async def test_a_failing_handler_does_not_stop_the_bus(nodes: list[Node], tag: bytes) -> None:
    a, b = nodes
    calls: list[bytes] = []

    async def bad(payload: bytes) -> None:
        if payload.startswith(tag):
            calls.append(payload)
            raise RuntimeError("handler bug")

    # Registered after start() (the contract asks for before; the buses cope): probe until heard.
    b.bus.subscribe("extra", bad)
    late = Collector(tag)
    b.bus.subscribe("extra", late)
    deadline = time.monotonic() + 10
    while not late.items:
        assert time.monotonic() < deadline, "a channel registered after start() never subscribed"
        await a.bus.publish("extra", tag + b"probe")
        await asyncio.sleep(0.05)
    burst = [tag + b"x%d" % i for i in range(3)]
    for payload in burst:
        await a.bus.publish("extra", payload)
    await wait_until(lambda: late.items[-3:] == burst, 10, "the handler after the failing one")
    assert calls == late.items


# -- counters ---------------------------------------------------------------------------------------


async def _next_window(window_s: float, clock: Callable[[], float]) -> None:
    """Sleep until just after the start of the next window of `clock`."""
    now = clock()
    await asyncio.sleep(window_s - now % window_s + 0.02)


@pytest.mark.parametrize("nodes", NETWORKED, indirect=True)
async def test_counters_are_shared_within_a_window_and_reset_in_the_next(
    nodes: list[Node], tag: bytes
) -> None:
    a, b = nodes
    window = 0.5
    key = f"rate:{tag.decode()}@agent:test.local"
    await a.bus.incr(key + ":warm-up", window)  # the NATS bucket gets created outside the timing
    await _next_window(window, time.time)
    assert [await a.bus.incr(key, window), await b.bus.incr(key, window), await a.bus.incr(key, window)] == [
        1,
        2,
        3,
    ]
    assert await b.bus.incr(key + ":other", window) == 1
    await _next_window(window, time.time)
    assert await b.bus.incr(key, window) == 1
    assert await a.bus.incr(key, window) == 2


async def test_memory_counters_reset_in_the_next_window() -> None:
    bus = MemoryBus()
    window = 0.2
    await _next_window(window, time.monotonic)
    assert [await bus.incr("k", window) for _ in range(3)] == [1, 2, 3]
    await _next_window(window, time.monotonic)
    assert await bus.incr("k", window) == 1


@pytest.mark.parametrize("kind", NETWORKED)
async def test_concurrent_increments_are_not_lost(kind: str, tag: bytes) -> None:
    url = _shared_url(kind)
    buses = [_open(kind, url) for _ in range(3)]
    try:
        for bus in buses:
            await bus.start()
        await wait_until(lambda: all(b.connected for b in buses), 10, "buses to connect")
        key = f"race:{tag.decode()}"
        window = 30.0
        await buses[0].incr(key + ":warm-up", window)
        values = await asyncio.gather(*(buses[i % 3].incr(key, window) for i in range(60)))
        assert sorted(values) == list(range(1, 61))
    finally:
        for bus in buses:
            await bus.stop()


# -- faults: a private server, started late, killed, restarted --------------------------------------


def _server_binary(kind: str) -> str:
    name = "redis-server" if kind == "redis" else "nats-server"
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/usr/local/bin")
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed, and CI=true requires it")
    pytest.skip(f"{name} is not installed")


def _start_server(kind: str, binary: str, port: int, data: Path) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    if kind == "redis":
        cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(data)]
    else:
        cmd = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(data)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=data)


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


async def _publishes_never_raise(bus: Bus, tag: bytes, count: int = 20) -> None:
    started = time.monotonic()
    for i in range(count):
        await bus.publish(WAKEUP, tag + b"lost%d" % i)
    assert time.monotonic() - started < 3, "publishing to a dead service must not hang"


async def _delivery_works(a: Node, b: Node, tag: bytes, label: str, timeout: float) -> None:
    """Probe until B hears A (bounded by `timeout`), then check a burst arrives whole and in order."""
    deadline = time.monotonic() + timeout
    probe = tag + label.encode() + b"-probe"
    while not any(p.startswith(probe) for p in b.wakeup.items):
        assert time.monotonic() < deadline, f"no delivery within {timeout} s ({label})"
        await a.bus.publish(WAKEUP, probe)
        await asyncio.sleep(0.1)
    burst = [tag + label.encode() + b"-%d" % i for i in range(50)]
    for payload in burst:
        await a.bus.publish(WAKEUP, payload)
    for node in (a, b):
        await wait_until(lambda n=node: n.wakeup.items[-50:] == burst, 5, f"the burst ({label})")


@pytest.mark.parametrize("kind", NETWORKED)
async def test_the_bus_survives_its_service_dying(kind: str, tag: bytes, tmp_path: Path) -> None:
    binary = _server_binary(kind)
    port = free_port()
    url = f"{kind}://127.0.0.1:{port}"
    a, b = Node(_open(kind, url), tag), Node(_open(kind, url), tag)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # The service is not running yet: start() returns, nothing raises, counting is local.
        await asyncio.wait_for(a.bus.start(), 2)
        await asyncio.wait_for(b.bus.start(), 2)
        await asyncio.sleep(0.3)
        assert not a.bus.connected and not b.bus.connected
        await _publishes_never_raise(a.bus, tag)
        assert [await a.bus.incr("down", 60), await a.bus.incr("down", 60)] == [1, 2]
        assert await b.bus.incr("down", 60) == 1  # not shared: each process counts alone

        # The service comes up: both buses connect by themselves.
        proc = _start_server(kind, binary, port, tmp_path / "data")
        await wait_until(lambda: a.bus.connected and b.bus.connected, 10, "connection after start")
        await _delivery_works(a, b, tag, "first", 10)
        window = 30.0
        assert await a.bus.incr(f"up:{tag.decode()}", window) == 1
        assert await b.bus.incr(f"up:{tag.decode()}", window) == 2

        # SIGKILL mid-stream: publishing keeps working (dropping), the buses notice.
        stream = asyncio.create_task(_publishes_never_raise(a.bus, tag, 200))
        _kill(proc)
        proc = None
        await asyncio.wait_for(stream, 10)
        await wait_until(lambda: not a.bus.connected and not b.bus.connected, 10, "noticing the death")
        await _publishes_never_raise(b.bus, tag)
        assert await a.bus.incr(f"dead:{tag.decode()}", window) == 1

        # The service is back on the same port: delivery resumes by itself within a bounded time.
        proc = _start_server(kind, binary, port, tmp_path / "data")
        await wait_until(lambda: a.bus.connected and b.bus.connected, 10, "reconnection")
        await _delivery_works(a, b, tag, "again", 10)
        await _delivery_works(b, a, tag, "back", 10)
        key = f"again:{tag.decode()}"
        assert [await a.bus.incr(key, window), await b.bus.incr(key, window)] == [1, 2]
    finally:
        try:
            await asyncio.wait_for(a.bus.stop(), 5)
            await asyncio.wait_for(b.bus.stop(), 5)
        finally:
            _kill(proc)


@pytest.mark.parametrize("kind", NETWORKED)
async def test_stop_is_prompt_while_the_service_is_down(kind: str) -> None:
    bus = _open(kind, f"{kind}://127.0.0.1:{free_port()}")
    bus.subscribe(WAKEUP, Collector(b"x"))
    await bus.start()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await asyncio.wait_for(bus.stop(), 5)
    assert time.monotonic() - started < 2
    assert not bus.connected
