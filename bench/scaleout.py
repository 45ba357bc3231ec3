"""Scale-out benchmark (issue 3): the fan-out workload over two `clawlist serve` processes that
share PostgreSQL and Redis (or NATS).

One sender posts through process A; the subscribers are spread evenly over A and B, so half of
every message's deliveries cross the bus (a wake-up) and are read from PostgreSQL by B. Prints
the same figures as bench/fanout.py, per server process.

    .venv/bin/python -m bench.scaleout [--subscribers 1000] [--messages 600] [--rate 60]
        [--bus redis://127.0.0.1:6379/0 | nats://127.0.0.1:4222]
        [--database postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
from pathlib import Path

from bench.common import free_port, start_server
from bench.fanout import add_workload_arguments, run


async def drop_schema(database: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workload_arguments(parser)
    parser.add_argument("--bus", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--database", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    schema = "bench_" + secrets.token_hex(5)
    env = {
        "CLAWLIST_DATABASE_URL": args.database,
        "CLAWLIST_DATABASE_SCHEMA": schema,
        "CLAWLIST_BUS_URL": args.bus,
        # a large queue: this bench measures throughput, so slow clients are kept, not dropped
        "CLAWLIST_GATEWAY_OUTBOUND_QUEUE": "20000",
    }
    tmp = Path(tempfile.mkdtemp(prefix="clawlist-scaleout-"))
    procs = []
    try:
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):  # one after the other: the first applies the migrations
            procs.append(start_server(tmp / f"server-{i}", port, env))
        print(f"two processes on PostgreSQL (schema {schema}) and {args.bus}")
        run(args, [f"http://127.0.0.1:{p}" for p in ports], [p.pid for p in procs])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        asyncio.run(drop_schema(args.database, schema))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
