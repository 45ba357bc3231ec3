"""Send/history benchmark (issue 2).

Starts a real `clawlist serve` on a fresh SQLite data dir (or the URL in --database-url), registers
50 agents, puts them in one room, and has them send 20,000 messages concurrently through the REST
API, each agent waiting for its acknowledgement before sending the next. Then pages the whole
history backwards. Prints messages/s and p50/p99 send latency, and pages/s.

Target on a 2-core machine with SQLite: >= 1,500 messages/s with p99 <= 100 ms.

    .venv/bin/python bench/send_history.py [--agents 50] [--messages 20000] [--client-procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import httpx
import orjson

from bench.common import cpu_seconds, free_port, pct, rss_mb, start_server


async def setup_agents(base: str, n: int) -> tuple[str, list[str]]:
    from clawlist.client import ClawlistClient, generate_key

    tokens = []
    room_id = ""
    for i in range(n):
        key = generate_key()
        async with ClawlistClient(base) as client:
            user_id = await client.register(f"bench-{i:03d}", key)
            await client.login(user_id, key)
            if i == 0:
                room_id = await client.create_room("bench", public=True)
            else:
                await client.join(room_id)
            assert client.access_token
            tokens.append(client.access_token)
    return room_id, tokens


class RawHTTP:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, so the load generator costs far less
    CPU than the server it measures (httpx spends ~0.5 ms of CPU per request on this machine)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Bearer {token}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {self.auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
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

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def send_worker(
    base: str, room_id: str, token: str, count: int, tag: str, latencies: list[float]
) -> None:
    url = httpx.URL(base)
    client = RawHTTP(url.host, url.port or 80, token)
    path = f"/api/v1/rooms/{quote(room_id, safe='!:@')}/messages"
    try:
        for i in range(count):
            body = orjson.dumps({"txn_id": f"{tag}-{i}", "body": f"message {i} from {tag}"})
            t0 = time.perf_counter()
            status, answer = await client.post(path, body)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"send failed: {status} {answer[:200]!r}")
    finally:
        await client.close()


def client_process(base: str, room_id: str, tokens: list[str], per_agent: int, offset: int, out: Any) -> None:
    async def main() -> list[float]:
        latencies: list[float] = []
        await asyncio.gather(
            *(
                send_worker(base, room_id, t, per_agent, f"a{offset + i}", latencies)
                for i, t in enumerate(tokens)
            )
        )
        return latencies

    out.put(asyncio.run(main()))


async def page_history(base: str, room_id: str, token: str, page: int) -> tuple[int, int, float]:
    headers = {"Authorization": f"Bearer {token}"}
    events = pages = 0
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        params: dict[str, Any] = {"dir": "b", "limit": page}
        while True:
            r = await client.get(f"/api/v1/rooms/{room_id}/messages", params=params)
            r.raise_for_status()
            body = r.json()
            events += len(body["chunk"])
            pages += 1
            if "end" not in body:
                break
            params["from"] = body["end"]
    return events, pages, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--client-procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--page", type=int, default=100, help="history page size")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--server", default=None, help="use a running server instead of starting one")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="clawlist-bench-"))
    port = free_port()
    proc = None
    if args.server:
        base = args.server.rstrip("/")
    else:
        proc = start_server(
            tmp, port, {"CLAWLIST_DATABASE_URL": args.database_url} if args.database_url else None
        )
        base = f"http://127.0.0.1:{port}"
    try:
        room_id, tokens = asyncio.run(setup_agents(base, args.agents))
        per_agent = args.messages // args.agents
        total = per_agent * args.agents
        print(
            f"clawlist send_history: {args.agents} agents, {total} messages, "
            f"{args.client_procs} client process(es), database {args.database_url or 'SQLite (WAL)'}"
        )
        queue: Any = mp.Queue()
        chunks = [tokens[i :: args.client_procs] for i in range(args.client_procs)]
        procs = []
        cpu0 = cpu_seconds(proc.pid) if proc else 0.0
        t0 = time.perf_counter()
        for n, chunk in enumerate(chunks):
            p = mp.Process(target=client_process, args=(base, room_id, chunk, per_agent, n * 1000, queue))
            p.start()
            procs.append(p)
        latencies: list[float] = []
        for _ in procs:
            latencies.extend(queue.get())
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join()
        cpu_used = (cpu_seconds(proc.pid) - cpu0) if proc else 0.0
        assert len(latencies) == total
        rate = total / elapsed
        p50, p99 = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
        tail = "  ".join(f"p{q} {pct(latencies, q) * 1000:.0f}" for q in (90, 95, 99.9))
        print(f"latency tail (ms): {tail}  max {max(latencies) * 1000:.0f}")
        print(
            f"send:    {rate:,.0f} messages/s   p50 {p50:.1f} ms   p99 {p99:.1f} ms   "
            f"mean {statistics.mean(latencies) * 1000:.1f} ms   ({elapsed:.1f} s)"
        )
        if proc is not None:
            print(
                f"server:  {cpu_used:.1f} CPU s for the sends = {cpu_used / total * 1e6:.0f} µs per message "
                f"(one core's ceiling: {total / cpu_used:,.0f} messages/s), RSS {rss_mb(proc.pid):.0f} MB"
            )
        events, pages, took = asyncio.run(page_history(base, room_id, tokens[0], args.page))
        print(
            f"history: {events:,} events in {pages} pages of {args.page} in {took:.2f} s  "
            f"({events / took:,.0f} events/s, {pages / took:,.0f} pages/s)"
        )
        ok = rate >= 1500 and p99 <= 100
        print(f"target (>= 1,500 messages/s, p99 <= 100 ms): {'met' if ok else 'NOT met'}")
        if proc is not None and not args.database_url:
            sizes = {p.name: p.stat().st_size // 1024 for p in tmp.glob("clawlist.db*")}
            print("sqlite files (KiB): " + ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items())))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
