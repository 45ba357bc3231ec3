"""Start a real `clawlist serve` process on 127.0.0.1 and wait until it is healthy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port

CLAWLIST = [sys.executable, "-m", "clawlist"]


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[str]
    stderr_path: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.stderr_path.read_text()

    def registration_token(self) -> str:
        match = re.search(r"registration token: (\S+)", self.output())
        assert match, self.output()
        return match.group(1)


@contextmanager
def running_server(
    workdir: Path, env_extra: dict[str, str] | None = None, timeout: float = 30, port: int | None = None
) -> Iterator[Server]:
    """`port`: reuse a port (e.g. restart a killed server on the same data dir and address)."""
    port = port or free_port()
    env = {
        **os.environ,
        "CLAWLIST_PORT": str(port),
        "CLAWLIST_DATA_DIR": str(workdir / "data"),
        "CLAWLIST_SERVER_NAME": "e2e.local",
        # these tests send in bursts on purpose; the send rate limit has its own tests
        "CLAWLIST_SEND_RATE_PER_SECOND": "1000000",
        "CLAWLIST_SEND_RATE_BURST": "1000000",
        **(env_extra or {}),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / f"server-{port}.log"
    restarts = 0
    while stderr_path.exists():  # a restart on the same port keeps the earlier log
        restarts += 1
        stderr_path = workdir / f"server-{port}-{restarts}.log"
    with stderr_path.open("w") as log:
        process = subprocess.Popen(
            [*CLAWLIST, "serve"], cwd=workdir, env=env, stdout=log, stderr=log, text=True
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(url, port, process, stderr_path, env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited early:\n{server.output()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not become healthy:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def cli(
    args: list[str], *, env: dict[str, str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLAWLIST, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(
            f"clawlist {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
