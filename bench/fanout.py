"""Fan-out benchmark (issue 3): one sender, one room, N WebSocket subscribers on one process.

Starts a real `clawlist serve` (SQLite), registers N subscriber agents (default 1,000) who join
one room and connect to the gateway (spread over client processes), then one agent sends M
messages at a steady rate through the REST API. Each message carries its send time; every
subscriber records send-to-receive latency. Prints deliveries/s, p50/p99 latency, completeness,
and the server's CPU and RSS.

Target (2 cores, SQLite): >= 50,000 deliveries/s, p99 <= 250 ms.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--messages 600] [--rate 60] [--client-procs 1]

The subscribers are lean raw-socket clients (bench/lean_subscriber.py) so that, on a 2-core
machine, the load generator leaves the server a core. bench/scaleout.py runs the same workload
over two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_seconds, free_port, join_all, pct, register_agents, rss_mb, start_server


def subscriber_process(
    urls: list[str], tokens: list[str], room: str, expected: int, ready: Any, out: Any
) -> None:
    import uvloop

    from bench.lean_subscriber import LeanSubscriber, connect

    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        subscribers: list[LeanSubscriber] = []
        for start in range(0, len(tokens), 50):  # connect in waves, not all at once
            wave = tokens[start : start + 50]
            subscribers += await asyncio.gather(
                *(connect(urls[(start + i) % len(urls)], t, expected, latencies) for i, t in enumerate(wave))
            )
        ready.put(len(subscribers))
        last, idle = -1, 0
        while idle < 15 and not all(s.done.done() for s in subscribers):  # stop after 15 s of silence
            await asyncio.sleep(1)
            total = sum(s.received for s in subscribers)
            idle = idle + 1 if total == last else 0
            last = total
        for s in subscribers:
            s.close()
        return latencies, sum(s.received for s in subscribers), max(s.last_at for s in subscribers)

    out.put(uvloop.run(main()))


async def send_messages(base: str, token: str, room: str, n: int, rate: float) -> None:
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as c:
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"txn_id": f"fan{i}", "body": f"fan-out {i}", "sent_at": time.time()}
            r = await c.post(f"/api/v1/rooms/{room}/messages", json=body)
            r.raise_for_status()


def run(args: argparse.Namespace, servers: list[str], pids: list[int]) -> None:
    base = servers[0]
    agents = asyncio.run(register_agents(base, "sub", args.subscribers))
    sender = asyncio.run(register_agents(base, "sender", 1))[0]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {sender['token']}"}) as c:
        room = c.post("/api/v1/rooms", json={"name": "fanout", "visibility": "public"}).json()["room_id"]
    asyncio.run(join_all(base, agents, room))
    urls = [s.replace("http://", "ws://") + "/api/v1/gateway" for s in servers]
    ready, out = mp.Queue(), mp.Queue()
    chunks = [agents[i :: args.client_procs] for i in range(args.client_procs)]
    procs = [
        mp.Process(
            target=subscriber_process, args=(urls, [a["token"] for a in ch], room, args.messages, ready, out)
        )
        for ch in chunks
    ]
    for p in procs:
        p.start()
    connected = 0
    while connected < len(agents):
        connected += ready.get(timeout=300)
    rss_connected = [rss_mb(pid) for pid in pids]
    cpu0 = [cpu_seconds(pid) for pid in pids]
    t0 = time.time()
    asyncio.run(send_messages(base, sender["token"], room, args.messages, args.rate))
    latencies: list[float] = []
    delivered = 0
    last_at = t0
    for _ in procs:
        lat, count, last = out.get(timeout=300)
        latencies.extend(lat)
        delivered += count
        last_at = max(last_at, last)
    elapsed = last_at - t0  # from the first send to the last delivery
    for p in procs:
        p.join()
    cpu = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
    expected = args.subscribers * args.messages
    print(
        f"clawlist fanout: {args.subscribers} subscribers on {len(servers)} server process(es), "
        f"{args.messages} messages at {args.rate}/s, {args.client_procs} client process(es)"
    )
    print(
        f"deliveries: {delivered:,} of {expected:,} ({'complete' if delivered == expected else 'INCOMPLETE'})"
    )
    print(
        f"throughput: {delivered / elapsed:,.0f} deliveries/s over {elapsed:.1f} s "
        f"(offered: {args.subscribers * args.rate:,.0f}/s)"
    )
    if latencies:
        p50, p99 = pct(latencies, 50) * 1000, pct(latencies, 99) * 1000
        worst = max(latencies) * 1000
        print(f"latency (send -> receive): p50 {p50:.0f} ms   p99 {p99:.0f} ms   max {worst:.0f} ms")
    for i, pid in enumerate(pids):
        print(
            f"server {i}: CPU {cpu[i]:.1f} s ({cpu[i] / elapsed * 100:.0f}% of a core), "
            f"RSS {rss_connected[i]:.0f} MB with all connected, {rss_mb(pid):.0f} MB at the end"
        )


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rate", type=float, default=60.0, help="messages per second")
    parser.add_argument("--client-procs", type=int, default=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workload_arguments(parser)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-fanout-"))
    port = free_port()
    # a large queue: this bench measures throughput, so slow clients are kept, not dropped
    proc = start_server(tmp, port, {"CLAWLIST_GATEWAY_OUTBOUND_QUEUE": "20000"})
    try:
        run(args, [f"http://127.0.0.1:{port}"], [proc.pid])
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
