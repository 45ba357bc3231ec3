"""A recording HTTP proxy between OpenClaw and clawlist, so that a failing run says exactly which
Matrix request failed: method, path (tokens masked), status and errcode of every request.
`clawlist serve` runs without an access log; this is the test's access log.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
}
_TOKEN = re.compile(r"(access_token=)[^&]+")


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    ms: float
    request_body: str
    errcode: str = ""
    error: str = ""

    def line(self) -> str:
        err = f" {self.errcode} {self.error[:160]!r}" if self.errcode or self.error else ""
        body = f" body={self.request_body[:200]}" if self.request_body and self.status >= 400 else ""
        return f"{self.method} {self.path} -> {self.status} ({self.ms:.0f} ms){err}{body}"


@dataclass
class Recording:
    url: str
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)

    def failures(self) -> list[Exchange]:
        return [e for e in self.snapshot() if e.status >= 400]

    def report(self, last: int = 60) -> str:
        items = self.snapshot()
        failed = [e for e in items if e.status >= 400]
        lines = [f"{len(items)} Matrix request(s) from OpenClaw, {len(failed)} failed (status >= 400)"]
        seen: set[tuple[str, str, int]] = set()
        for e in failed:
            key = (e.method, re.sub(r"/[!$@#%][^/?]*", "/…", e.path.split("?")[0]), e.status)
            if key not in seen:
                seen.add(key)
                lines.append("  FAILED " + e.line())
        lines.append(f"  last {min(last, len(items))} request(s):")
        lines.extend("    " + e.line() for e in items[-last:])
        return "\n".join(lines)


def _mask(path: str) -> str:
    return _TOKEN.sub(r"\1***", path)


def _handler(upstream: str, recording: Recording) -> type[BaseHTTPRequestHandler]:
    client = httpx.Client(base_url=upstream, timeout=httpx.Timeout(120, connect=10))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            started = time.monotonic()
            try:
                response = client.request(self.command, self.path, content=body, headers=headers)
                status, content, out_headers = response.status_code, response.content, response.headers
            except httpx.HTTPError as exc:
                status, content, out_headers = 502, f"proxy: {exc!r}".encode(), httpx.Headers()
            ms = (time.monotonic() - started) * 1000
            exchange = Exchange(
                self.command, _mask(self.path), status, ms, body.decode("utf-8", "replace")[:500]
            )
            if status >= 400:
                try:
                    payload = httpx.Response(status, content=content).json()
                    exchange.errcode = str(payload.get("errcode", ""))
                    exchange.error = str(payload.get("error", ""))
                except ValueError:
                    exchange.error = content.decode("utf-8", "replace")[:200]
            with recording.lock:
                recording.exchanges.append(exchange)
            self.send_response(status)
            for key, value in out_headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _forward

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (the gateway stopping mid long-poll) is not an error here


@contextmanager
def recording_proxy(upstream: str) -> Iterator[Recording]:
    recording = Recording(url="")
    server = _Server(("127.0.0.1", 0), _handler(upstream, recording))
    recording.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield recording
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
