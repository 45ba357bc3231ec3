"""A tiny OpenAI-compatible model server for the OpenClaw test: `POST /v1/chat/completions`
(streaming and not), `GET /v1/models`. Every answer is the fixed reply, followed by the first
`ping-<word>` tag found in the conversation, so a test can tell which message was answered.
It records each request's body for the test's diagnostics.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "pong from openclaw"
MODEL_ID = "mock-pong"
TAG = re.compile(r"ping-[A-Za-z0-9]+")


@dataclass
class MockModel:
    url: str  # the OpenAI base URL, ending in /v1
    requests: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{len(self.requests)} request(s) to the mock model"]
        for body in self.requests[-5:]:
            last = _last_user_text(body)
            lines.append(f"  stream={body.get('stream', False)} last user message: {last[:200]!r}")
        return "\n".join(lines)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def reply_for(body: dict[str, Any]) -> str:
    # OpenClaw wraps the inbound message in its own envelope and keeps the session's history in
    # the prompt: the newest tag is the last one in the conversation
    tags = TAG.findall(json.dumps(body.get("messages") or []))
    return f"{REPLY} ({tags[-1]})" if tags else REPLY


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(
                200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "me"}]}
            )
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        self.server.model.requests.append(body)
        text = reply_for(body)
        model = body.get("model") or MODEL_ID
        created = int(time.time())
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> None:
            payload = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""}, None)
        for piece in re.findall(r"\S+\s*", text):
            chunk({"content": piece}, None)
        chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(
                (
                    "data: "
                    + json.dumps(
                        {
                            "id": "chatcmpl-mock",
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                    + "\n\n"
                ).encode()
            )
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (the gateway stopping mid long-poll) is not an error here

    model: MockModel


@contextmanager
def running_mock_model() -> Iterator[MockModel]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.model = MockModel(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, name="mock-model", daemon=True)
    thread.start()
    try:
        yield server.model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
