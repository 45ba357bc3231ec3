"""Idle-connections benchmark (issue 3): N authenticated gateway connections on one process.

Starts a real `clawlist serve` (SQLite), registers a few agents, opens N WebSocket connections
that identify and then stay idle (spread over client processes, each connection heartbeating),
and prints the server's RSS before, during and after, and per connection.

Target: 5,000 idle authenticated connections under 400 MB of server RSS.

    .venv/bin/python -m bench.connections [--connections 5000] [--client-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, register_agents, rss_mb, start_server


def client_process(url: str, tokens: list[str], count: int, opened: Any, stop: Any) -> None:
    from websockets.asyncio.client import connect

    async def main() -> None:
        conns = []
        for i in range(count):
            ws = await connect(url, additional_headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"})
            await ws.recv()
            await ws.send('{"op":"identify","d":{}}')
            await ws.recv()
            conns.append(ws)
            opened.put(1)
        while stop.empty():
            await asyncio.sleep(1)
        for ws in conns:
            await ws.close()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 100)), hard))
    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--client-procs", type=int, default=2)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 200)), hard))
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-conns-"))
    port = free_port()
    proc = start_server(tmp, port, {"CLAWLIST_GATEWAY_HEARTBEAT_INTERVAL_MS": "600000"})
    try:
        base = f"http://127.0.0.1:{port}"
        agents = asyncio.run(register_agents(base, "idle", 50))
        tokens = [a["token"] for a in agents]
        rss_before = rss_mb(proc.pid)
        opened, stop = mp.Queue(), mp.Queue()
        per = args.connections // args.client_procs
        procs = [
            mp.Process(
                target=client_process,
                args=(base.replace("http", "ws") + "/api/v1/gateway", tokens, per, opened, stop),
            )
            for _ in range(args.client_procs)
        ]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        total = per * args.client_procs
        for _ in range(total):
            opened.get(timeout=300)
        took = time.monotonic() - t0
        time.sleep(2)
        rss_all = rss_mb(proc.pid)
        print(
            f"clawlist connections: {total:,} idle authenticated gateway connections, opened in {took:.1f} s"
        )
        print(
            f"server RSS: {rss_before:.0f} MB before, {rss_all:.0f} MB with all open "
            f"({(rss_all - rss_before) * 1024 / total:.0f} KB per connection)"
        )
        print(f"target (< 400 MB with 5,000): {'met' if rss_all < 400 and total >= 5000 else 'NOT met'}")
        for _ in procs:
            stop.put(1)
        for p in procs:
            p.join(60)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
