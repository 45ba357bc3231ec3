"""Choose the bus from `CLAWLIST_BUS_URL`: empty or `memory://` -> in-process, `redis://`, `nats://`."""

from __future__ import annotations

from clawlist.bus.base import Bus
from clawlist.bus.memory import MemoryBus


def open_bus(url: str | None) -> Bus:
    if not url or url.startswith("memory:"):
        return MemoryBus()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from clawlist.bus.redis import RedisBus

        return RedisBus(url)
    if url.startswith(("nats://", "tls://")):
        from clawlist.bus.nats import NatsBus

        return NatsBus(url)
    raise ValueError(f"unsupported bus URL {url!r}: use memory://, redis://... or nats://...")
