"""clawlist against the reference homeserver (Synapse) on one matrix-nio workload (issue 4).

20 users register and all join 5 rooms; every user runs a /sync loop; each user sends 200
messages one after another, as fast as acknowledgements allow, spread over the rooms. Each
message carries its send time; every member of the room records send-to-delivery latency.
Printed for both servers: send throughput, p50/p99 latency over all deliveries, completeness
(every member got every message), peak server RSS and server CPU seconds; then the ratios.

Synapse runs from its own virtualenv (bench only, never CI), on SQLite with rate limits raised:

    python3 -m venv .venv-synapse && .venv-synapse/bin/pip install matrix-synapse
    .venv/bin/python -m bench.matrix_vs_synapse [--users 20] [--rooms 5] [--messages 200]
        [--only clawlist|synapse] [--synapse-python .venv-synapse/bin/python]

Target: clawlist >= 20x Synapse's throughput, <= 1/10 of its p99, less memory, nothing missing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_seconds, free_port, pct, rss_mb, start_server

SERVER_NAME = "bench.local"
PASSWORD = "bench-password-123"  # a throwaway account on a throwaway server


@dataclass
class Figures:
    name: str
    sent: int = 0
    send_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    expected_deliveries: int = 0
    missing: int = 0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0


class PeakRss:
    """Samples a process's RSS every 100 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self._stop.wait(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- servers


def start_clawlist(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        "CLAWLIST_SERVER_NAME": SERVER_NAME,
        "CLAWLIST_SEND_RATE_PER_SECOND": "100000",
        "CLAWLIST_SEND_RATE_BURST": "100000",
    }
    proc = start_server(tmp / "clawlist", port, env)
    return f"http://127.0.0.1:{port}", proc


SYNAPSE_OVERRIDES = """
enable_registration: true
enable_registration_without_verification: true
suppress_key_server_warning: true
trusted_key_servers: []
report_stats: false
presence:
  enabled: true
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_joins_per_room: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
rc_presence:
  per_user: {per_second: 100000, burst_count: 100000}
"""


def start_synapse(tmp: Path, python: str) -> tuple[str, subprocess.Popen[bytes]]:
    python = str(Path(python).absolute())  # the server runs in its own directory
    port = free_port()
    data = tmp / "synapse"
    data.mkdir(parents=True)
    config = data / "homeserver.yaml"
    subprocess.run(
        [
            python,
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            SERVER_NAME,
            "--config-path",
            str(config),
            "--data-directory",
            str(data),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        cwd=data,
        capture_output=True,
    )
    text = config.read_text().replace("port: 8008", f"port: {port}")
    text = text.replace("bind_addresses: ['::1', '127.0.0.1']", "bind_addresses: ['127.0.0.1']")
    config.write_text(text + SYNAPSE_OVERRIDES)
    log = (data / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [python, "-m", "synapse.app.homeserver", "--config-path", str(config)],
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"synapse exited; see {data / 'stderr.log'}")
        try:
            if httpx.get(f"{base}/_matrix/client/versions", timeout=1).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("synapse did not start")


# -- the workload


_DEFAULTS_BELOW: dict[int, bool] = {}


def _has_defaults(schema: Any) -> bool:
    """Whether any `default` appears in this (sub)schema; memoised, the schemas are module constants."""
    key = id(schema)
    found = _DEFAULTS_BELOW.get(key)
    if found is None:
        if isinstance(schema, dict):
            found = "default" in schema or any(_has_defaults(v) for v in schema.values())
        elif isinstance(schema, list):
            found = any(_has_defaults(v) for v in schema)
        else:
            found = False
        _DEFAULTS_BELOW[key] = found
    return found


def fill_defaults(instance: Any, schema: Any) -> None:
    """What nio's validator does besides validating: fill in the schema's defaults (nio's event
    parsers rely on them, e.g. `m.federate`). Walks properties, patternProperties,
    additionalProperties, items and the *Of combinators."""
    if not isinstance(schema, dict) or not _has_defaults(schema):
        return
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            fill_defaults(instance, sub)
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            if isinstance(sub, dict) and "default" in sub:
                instance.setdefault(name, sub["default"])
            if name in instance:
                fill_defaults(instance[name], sub)
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties")
        for name, value in instance.items():
            if name in properties:
                continue
            for sub in patterns.values():  # nio's patterns are catch-alls (room ids, user ids)
                fill_defaults(value, sub)
            if isinstance(extra, dict):
                fill_defaults(value, extra)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"])


def skip_nio_schema_validation() -> None:
    """matrix-nio checks every response and event against a JSON schema with `jsonschema`, which
    costs more CPU than everything else the client does: with it, the one client process saturates
    a core and measures itself, not the server. Only the defaults are filled in instead. The same
    client runs against both servers."""
    import nio.events.misc
    import nio.responses

    nio.responses.validate_json = fill_defaults
    nio.events.misc.validate_json = fill_defaults


async def setup(name: str, base: str, args: argparse.Namespace) -> tuple[list[dict[str, str]], list[str]]:
    """Register the users, create the rooms, join everybody: returns credentials and room ids."""
    from nio import AsyncClient, AsyncClientConfig

    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
    clients: list[Any] = []
    credentials: list[dict[str, str]] = []
    for i in range(args.users):
        client = AsyncClient(base, f"bench{i:02d}", config=config)
        reply = await client.register(f"bench{i:02d}", PASSWORD)
        if not getattr(reply, "access_token", None):
            raise SystemExit(f"{name}: registering bench{i:02d} failed: {reply}")
        clients.append(client)
        credentials.append(
            {
                "user_id": reply.user_id,
                "device_id": reply.device_id,
                "token": reply.access_token,
                "index": str(i),
            }
        )
    rooms = []
    for r in range(args.rooms):
        reply = await clients[0].room_create(name=f"bench room {r}", preset=_public())
        if not getattr(reply, "room_id", None):
            raise SystemExit(f"{name}: room_create failed: {reply}")
        rooms.append(reply.room_id)
    for client in clients[1:]:
        for room in rooms:
            reply = await client.join(room)
            if not getattr(reply, "room_id", None):
                raise SystemExit(f"{name}: join failed: {reply}")
    for client in clients:
        await client.close()
    return credentials, rooms


def client_process(
    base: str,
    users: list[dict[str, str]],
    rooms: list[str],
    args: argparse.Namespace,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """One load-generator process: its users' /sync loops and senders."""
    out.put(asyncio.run(_client_main(base, users, rooms, args, ready, go)))


async def _client_main(
    base: str, users: list[dict[str, str]], rooms: list[str], args: argparse.Namespace, ready: Any, go: Any
) -> dict[str, Any]:
    from nio import AsyncClient, AsyncClientConfig, RoomMessageText, SyncResponse

    if not args.validate:
        skip_nio_schema_validation()
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
    clients: list[Any] = []
    latencies: list[float] = []
    received: list[dict[str, list[str]]] = []
    for user in users:
        client = AsyncClient(base, user["user_id"], device_id=user["device_id"], config=config)
        client.restore_login(user["user_id"], user["device_id"], user["token"])
        first = await client.sync(timeout=0, full_state=True)
        if not isinstance(first, SyncResponse):
            raise SystemExit(f"first sync failed: {first}")
        got: dict[str, list[str]] = {room: [] for room in rooms}
        received.append(got)

        def on_message(room: Any, event: Any, got: dict[str, list[str]] = got) -> None:
            sent_at_us = event.source.get("content", {}).get("sent_at_us")
            if not isinstance(sent_at_us, int):
                return
            latencies.append(time.time() - sent_at_us / 1e6)
            got.setdefault(room.room_id, []).append(event.event_id)

        client.add_event_callback(on_message, RoomMessageText)
        clients.append(client)
    stop = asyncio.Event()

    async def sync_loop(client: Any) -> None:
        while not stop.is_set():
            await client.sync(timeout=30_000)

    async def sender(index: int, client: Any) -> list[tuple[str, str]]:
        sent: list[tuple[str, str]] = []
        for m in range(args.messages):
            room = rooms[(index + m) % len(rooms)]
            # canonical JSON (room versions >= 6) has no floats: microseconds as an integer
            stamp = time.time_ns() // 1000
            content = {"msgtype": "m.text", "body": f"bench {index} {m}", "sent_at_us": stamp}
            reply = await client.room_send(room, "m.room.message", content)
            event_id = getattr(reply, "event_id", None)
            if event_id is None:
                raise SystemExit(f"send failed: {reply}")
            sent.append((room, event_id))
        return sent

    loops = [asyncio.create_task(sync_loop(c)) for c in clients]
    ready.put(len(clients))
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    started = time.time()
    batches = await asyncio.gather(*(sender(int(u["index"]), c) for u, c in zip(users, clients, strict=True)))
    finished = time.time()
    everyone = args.users * args.messages  # every user is in every room: each receives every message
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline and any(sum(map(len, got.values())) < everyone for got in received):
        await asyncio.sleep(0.2)
    stop.set()
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    for client in clients:
        await client.close()
    return {
        "sent": [item for batch in batches for item in batch],
        "started": started,
        "finished": finished,
        "latencies": latencies,
        "received": received,
    }


def workload(name: str, base: str, pid: int, args: argparse.Namespace) -> Figures:
    credentials, rooms = asyncio.run(setup(name, base, args))
    context = mp.get_context("spawn")
    ready, go, out = context.Queue(), context.Event(), context.Queue()
    groups = [credentials[i :: args.client_procs] for i in range(args.client_procs)]
    procs = [
        context.Process(target=client_process, args=(base, group, rooms, args, ready, go, out))
        for group in groups
        if group
    ]
    for proc in procs:
        proc.start()
    waiting = len(credentials)
    while waiting:
        waiting -= ready.get(timeout=300)
    cpu0 = cpu_seconds(pid)
    rss = PeakRss(pid)
    go.set()
    results = [out.get(timeout=600 + args.drain_seconds) for _ in procs]
    for proc in procs:
        proc.join(30)
    figures = Figures(name)
    figures.cpu_s = cpu_seconds(pid) - cpu0
    figures.peak_rss_mb = rss.stop()
    sent = [item for r in results for item in r["sent"]]
    figures.sent = len(sent)
    figures.send_seconds = max(r["finished"] for r in results) - min(r["started"] for r in results)
    figures.latencies = [lat for r in results for lat in r["latencies"]]
    received = [{room: set(ids) for room, ids in got.items()} for r in results for got in r["received"]]
    figures.expected_deliveries = len(sent) * len(received)
    figures.missing = sum(
        1 for got in received for room, event_id in sent if event_id not in got.get(room, ())
    )
    return figures


def _public() -> Any:
    from nio.api import RoomPreset

    return RoomPreset.public_chat


def report(f: Figures) -> None:
    complete = "complete" if f.missing == 0 else f"{f.missing:,} MISSING"
    print(f"{f.name}:")
    print(f"  sends: {f.sent:,} in {f.send_seconds:.1f} s = {f.throughput:,.0f} messages/s")
    if f.latencies:
        print(
            f"  send -> delivery: p50 {pct(f.latencies, 50) * 1000:.0f} ms, "
            f"p99 {pct(f.latencies, 99) * 1000:.0f} ms over {len(f.latencies):,} deliveries ({complete})"
        )
    print(f"  server: peak RSS {f.peak_rss_mb:.0f} MB, CPU {f.cpu_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="per user")
    parser.add_argument("--only", choices=["clawlist", "synapse"])
    parser.add_argument("--synapse-python", default=".venv-synapse/bin/python")
    parser.add_argument("--drain-seconds", type=float, default=60.0)
    parser.add_argument("--client-procs", type=int, default=1, help="load-generator processes")
    parser.add_argument(
        "--validate", action="store_true", help="keep matrix-nio's JSON-schema checks (slower client)"
    )
    args = parser.parse_args()
    results: dict[str, Figures] = {}
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-vs-synapse-"))
    try:
        for name in ("clawlist", "synapse"):
            if args.only not in (None, name):
                continue
            if name == "synapse" and not Path(args.synapse_python).exists():
                print(f"synapse skipped: no {args.synapse_python} (see the docstring)", file=sys.stderr)
                continue
            base, proc = (
                start_clawlist(tmp) if name == "clawlist" else start_synapse(tmp, args.synapse_python)
            )
            try:
                print(f"running the workload against {name} ...", file=sys.stderr, flush=True)
                results[name] = workload(name, base, proc.pid, args)
            finally:
                proc.terminate()
                proc.wait(30)
            report(results[name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if len(results) == 2:
        c, s = results["clawlist"], results["synapse"]
        print("ratios (clawlist vs synapse):")
        print(f"  throughput: {c.throughput / s.throughput:.1f}x")
        if c.latencies and s.latencies:
            print(f"  p99 latency: {pct(c.latencies, 99) / pct(s.latencies, 99):.3f} of synapse's")
        print(f"  peak RSS: {c.peak_rss_mb / s.peak_rss_mb:.2f} of synapse's")
        print(f"  CPU: {c.cpu_s / s.cpu_s:.2f} of synapse's")


if __name__ == "__main__":
    main()
