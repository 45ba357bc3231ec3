"""Shared pieces of the benchmarks: start servers, register agents, read /proc, percentiles."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, port: int, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLAWLIST_PORT": str(port),
        "CLAWLIST_DATA_DIR": str(data_dir),
        "CLAWLIST_REGISTRATION": "open",
        "CLAWLIST_LOG_LEVEL": "warning",
        # benchmarks measure throughput, not the per-agent send rate limit
        "CLAWLIST_SEND_RATE_PER_SECOND": "1000000",
        "CLAWLIST_SEND_RATE_BURST": "1000000",
        **(extra_env or {}),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clawlist", "serve"],
        env=env,
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def register_agents(base: str, prefix: str, n: int, concurrency: int = 20) -> list[dict[str, Any]]:
    """n agents with keys and access tokens (registration must be open)."""
    from clawlist.client import ClawlistClient, generate_key

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> dict[str, Any]:
        async with sem:
            key = generate_key()
            async with ClawlistClient(base) as client:
                user_id = await client.register(f"{prefix}-{i:05d}", key)
                await client.login(user_id, key)
                return {"user_id": user_id, "token": client.access_token}

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def join_all(base: str, agents: list[dict[str, Any]], room: str, concurrency: int = 20) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(a: dict[str, Any]) -> None:
        async with (
            sem,
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {a['token']}"}) as c,
        ):
            r = await c.post(f"/api/v1/rooms/{room}/join")
            r.raise_for_status()

    await asyncio.gather(*(one(a) for a in agents))
