"""An unmodified OpenClaw agent on clawlist (opt-in: `make test-openclaw`).

Installs Node and OpenClaw from npm into a cache (see install.py), starts a real `clawlist serve`,
a mock OpenAI-compatible model and `openclaw gateway run` with the `@openclaw/matrix` channel
pointed at clawlist; then a native-API agent talks to the OpenClaw agent in a DM and in
`#market`, and each message must be answered. A second gateway run logs in with a password.

Everything listens on 127.0.0.1. Without CLAWLIST_OPENCLAW=1 the tests skip; an unreachable npm
registry skips them too, except under CI=true where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import IN_CI, free_port
from tests.e2e.server import Server, cli, running_server
from tests.openclaw.install import (
    InstallError,
    OpenClaw,
    ensure_openclaw,
    install_matrix_plugin,
)
from tests.openclaw.mock_model import REPLY, MockModel, running_mock_model
from tests.openclaw.recording_proxy import Recording, recording_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

HERE = Path(__file__).resolve().parent
DOC = HERE.parent.parent / "docs" / "openclaw.md"
OPT_IN = os.environ.get("CLAWLIST_OPENCLAW", "") in ("1", "true", "yes")
SERVER_NAME = "e2e.local"
# the join bound includes the gateway's start (25-60 s here)
JOIN_TIMEOUT = float(os.environ.get("CLAWLIST_OPENCLAW_JOIN_TIMEOUT", "180"))
REPLY_TIMEOUT = float(os.environ.get("CLAWLIST_OPENCLAW_REPLY_TIMEOUT", "120"))
STARTED = time.monotonic()
PASSWORD = "openclaw-test-" + secrets.token_hex(8)


def say_to(config: pytest.Config) -> Any:
    """Progress lines shown as they happen, even though pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(message: str) -> None:
        line = f"[openclaw {time.monotonic() - STARTED:6.1f}s] {message}"
        if reporter is None or capture is None:
            print(line, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return say


def render(template: Any, values: dict[str, Any]) -> Any:
    """The template with every `"${NAME}"` string replaced by values[NAME] (keys too); a key
    whose value is None is dropped."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            key = render(key, values)
            rendered = render(value, values)
            if rendered is not None:
                out[key] = rendered
        return out
    if isinstance(template, list):
        return [render(item, values) for item in template]
    if isinstance(template, str) and template.startswith("${") and template.endswith("}"):
        return values[template[2:-1]]
    return template


@dataclass
class Native:
    """A native-API agent (REST /api/v1) that talks to the OpenClaw agent."""

    url: str
    user_id: str
    token: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def send(self, room: str, body: str) -> str:
        payload = {"txn_id": secrets.token_hex(8), "body": body, "msgtype": "m.text"}
        return str(
            self.call("POST", f"/api/v1/rooms/{quote(room, safe='')}/messages", json=payload)["event_id"]
        )

    def latest(self, room: str, limit: int = 50) -> list[dict[str, Any]]:
        page = self.call(
            "GET", f"/api/v1/rooms/{quote(room, safe='')}/messages", params={"dir": "b", "limit": limit}
        )
        return list(page["chunk"])

    def membership(self, room: str, user_id: str) -> str | None:
        for event in self.latest(room, 100):
            if event["type"] == "m.room.member" and event.get("state_key") == user_id:
                return str(event["content"].get("membership"))
        return None


def register_with_password(server: Server, handle: str, reg_token: str) -> Native:
    body = {"handle": handle, "password": PASSWORD, "registration_token": reg_token}
    created = httpx.post(f"{server.url}/api/v1/agents", json=body, timeout=30)
    assert created.status_code == 201, created.text
    user_id = created.json()["user_id"]
    login = httpx.post(
        f"{server.url}/api/v1/auth/password", json={"user": user_id, "password": PASSWORD}, timeout=30
    )
    assert login.status_code == 200, login.text
    return Native(server.url, user_id, login.json()["access_token"])


@dataclass
class Stack:
    server: Server
    model: MockModel
    proxy: Recording
    openclaw: OpenClaw
    workdir: Path
    home: Path
    state_dir: Path
    reg_token: str
    alice: Native
    market_room: str
    say: Any
    gateway: subprocess.Popen[bytes] | None = None
    gateway_log: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    last_seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def market_alias(self) -> str:
        return f"#market:{SERVER_NAME}"

    def diagnostics(self) -> str:
        parts = [self.proxy.report(), self.model.summary()]
        if self.last_seen:
            parts.append("the room's latest messages, as the native agent sees them:")
            parts.extend(
                f"  {e['sender']}: {str(e['content'].get('body'))[:200]!r}"
                for e in reversed(self.last_seen)
                if e["type"] == "m.room.message"
            )
        if self.gateway_log and self.gateway_log.exists():
            lines = self.gateway_log.read_text(errors="replace").splitlines()
            interesting = [ln for ln in lines if "matrix" in ln.lower() or "error" in ln.lower()]
            parts.append(f"OpenClaw gateway log {self.gateway_log} (matrix/error lines, last 60):")
            parts.extend("  " + ln[:400] for ln in interesting[-60:])
        for path in sorted(self.workdir.glob("openclaw-*.log")):
            parts.append(f"OpenClaw file log: {path}")
        server_lines = self.server.output().splitlines()
        parts.append(f"clawlist server log {self.server.stderr_path} (last 40 lines):")
        parts.extend("  " + ln[:400] for ln in server_lines[-40:])
        return "\n".join(parts)

    def start_gateway(self, matrix_auth: dict[str, Any], user_id: str, name: str) -> None:
        self.stop_gateway()
        template = json.loads((HERE / "openclaw.template.json").read_text())
        config = render(
            template,
            {
                "GATEWAY_PORT": free_port(),
                "MODEL_BASE_URL": self.model.url,
                "HOMESERVER": self.proxy.url,
                "USER_ID": user_id,
                "ACCESS_TOKEN": matrix_auth.get("accessToken"),
                "MARKET_ALIAS": self.market_alias,
                "LOG_FILE": str(self.workdir / f"openclaw-{name}.log"),
            },
        )
        if "password" in matrix_auth:
            config["channels"]["matrix"]["password"] = matrix_auth["password"]
            config["channels"]["matrix"]["deviceName"] = "OpenClaw test gateway"
        path = self.state_dir / "openclaw.json"
        existing = json.loads(path.read_text()) if path.exists() else {}
        existing.update(config)  # keeps `plugins` written by `openclaw plugins install`
        path.write_text(json.dumps(existing, indent=2))
        (self.workdir / f"openclaw-{name}.json").write_text(json.dumps(existing, indent=2))
        self.gateway_log = self.workdir / f"gateway-{name}.log"
        self.say(f"openclaw gateway run ({name}); log: {self.gateway_log}")
        with self.gateway_log.open("wb") as log:
            self.gateway = subprocess.Popen(
                self.openclaw.command("gateway", "run", "--verbose"),
                cwd=self.home,
                env=self.openclaw.env(self.home, self.state_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop_gateway(self) -> None:
        process, self.gateway = self.gateway, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # the gateway and the helpers it spawned
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of that group is still there
        process.wait(10)

    def check_gateway_alive(self) -> None:
        if self.gateway is not None and self.gateway.poll() is not None:
            pytest.fail(f"openclaw gateway exited with {self.gateway.returncode}\n{self.diagnostics()}")

    def wait_for(self, what: str, timeout: float, probe: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_gateway_alive()
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.5)

    def wait_for_reply(self, room: str, sender: str, tag: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            self.last_seen = self.alice.latest(room, 20)
            for event in self.last_seen:
                if (
                    event["type"] == "m.room.message"
                    and event["sender"] == sender
                    and tag in str(event["content"].get("body", ""))
                ):
                    return event
            return None

        found: dict[str, Any] = self.wait_for(
            f"{sender}'s reply carrying {tag} in {room}", REPLY_TIMEOUT, probe
        )
        return found

    def dm_round_trip(self, bot: str, label: str) -> None:
        started = time.monotonic()
        room = self.alice.call("POST", "/api/v1/dms", json={"user_id": bot})["room_id"]
        self.say(f"{self.alice.user_id} opened DM {room} with {bot}; waiting for OpenClaw to join")
        self.wait_for(
            f"{bot} to join the DM {room}", JOIN_TIMEOUT, lambda: self.alice.membership(room, bot) == "join"
        )
        joined = time.monotonic()
        self.timings[f"{label}: gateway start + join"] = joined - started
        tag = "ping-" + secrets.token_hex(4)
        self.alice.send(room, f"hello OpenClaw, please answer {tag}")
        self.say(f"sent '{tag}' in the DM; waiting for the reply")
        reply = self.wait_for_reply(room, bot, tag)
        self.timings[f"{label}: reply"] = time.monotonic() - joined
        assert reply["content"]["body"].startswith(REPLY)
        self.say(f"DM answered: {reply['content']['body']!r}")


@pytest.fixture(scope="module")
def openclaw(pytestconfig: pytest.Config) -> OpenClaw:
    if not OPT_IN:
        pytest.skip("opt-in: run `make test-openclaw` (or set CLAWLIST_OPENCLAW=1)")
    say = say_to(pytestconfig)
    try:
        return ensure_openclaw(say)
    except InstallError as exc:
        if exc.offline and not IN_CI:
            pytest.skip(f"cannot install OpenClaw, the npm registry is unreachable: {exc}")
        pytest.fail(f"cannot install OpenClaw: {exc}")


@pytest.fixture(scope="module")
def stack(
    openclaw: OpenClaw, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Stack]:
    say = say_to(pytestconfig)
    workdir = tmp_path_factory.mktemp("openclaw")
    home, state_dir = workdir / "home", workdir / "state"
    started = time.monotonic()
    try:
        install_matrix_plugin(openclaw, home, state_dir, say)
    except InstallError as exc:
        if exc.offline and not IN_CI:
            pytest.skip(f"cannot install the Matrix plugin, the npm registry is unreachable: {exc}")
        pytest.fail(f"cannot install the Matrix plugin: {exc}")
    plugin_seconds = time.monotonic() - started
    with (
        running_server(workdir, {"CLAWLIST_SERVER_NAME": SERVER_NAME}) as server,
        running_mock_model() as model,
        recording_proxy(server.url) as proxy,
    ):
        say(f"clawlist at {server.url} (OpenClaw reaches it through {proxy.url}); model at {model.url}")
        reg_token = server.registration_token()
        alice = register_with_password(server, "alice", reg_token)
        # #market is one of the default rooms every clawlist server creates (public)
        market_room = alice.call("POST", f"/api/v1/rooms/{quote('#market:' + SERVER_NAME, safe='')}/join")[
            "room_id"
        ]
        result = Stack(
            server, model, proxy, openclaw, workdir, home, state_dir, reg_token, alice, market_room, say
        )
        result.timings["plugin install"] = plugin_seconds
        try:
            yield result
        finally:
            result.stop_gateway()
            (workdir / "matrix-requests.log").write_text(proxy.report(last=100000) + "\n")
            (workdir / "model-requests.json").write_text(json.dumps(model.requests, indent=1))
            say(f"every Matrix request OpenClaw made: {workdir / 'matrix-requests.log'}")
            say("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))


@pytest.fixture(scope="module")
def token_bot(stack: Stack) -> str:
    """The OpenClaw agent, created with the CLI and given a long-lived token (as docs/openclaw.md says)."""
    env = {
        **stack.server.env,
        "CLAWLIST_SERVER": stack.server.url,
        "CLAWLIST_CONFIG_DIR": str(stack.workdir / "cfg"),
    }
    created = cli(
        ["agent", "create", "claw", "--registration-token", stack.reg_token], env=env, cwd=stack.workdir
    )
    user_id = f"@claw:{SERVER_NAME}"
    assert user_id in created.stdout
    token = cli(["agent", "token", user_id], env=env, cwd=stack.workdir).stdout.strip()
    assert token
    # OpenClaw joins rooms only on invites (autoJoin); a public room is joined for it beforehand
    cli(["room", "join", stack.market_alias, "--as", user_id], env=env, cwd=stack.workdir)
    stack.start_gateway({"accessToken": token}, user_id, "token")
    return user_id


def test_docs_config_blocks_are_valid(stack: Stack) -> None:
    """docs/openclaw.md's `channels.matrix` blocks pass OpenClaw's own schema check."""
    blocks = re.findall(r"<!-- openclaw-config: (\w+) -->\s*```json5\n(.*?)```", DOC.read_text(), re.S)
    assert {name for name, _ in blocks} == {"token", "password"}, blocks
    for name, text in blocks:
        path = stack.workdir / f"doc-{name}.json5"
        path.write_text(text)
        env = stack.openclaw.env(stack.home, stack.state_dir, {"OPENCLAW_CONFIG_PATH": str(path)})
        result = subprocess.run(
            stack.openclaw.command("config", "validate"),
            cwd=stack.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"docs/openclaw.md block {name!r}:\n{result.stdout}\n{result.stderr}"
    # and the check does reject a wrong key
    bad = stack.workdir / "doc-bad.json5"
    bad.write_text(blocks[0][1].replace("requireMention: false", "requireMention: false, mention: 1"))
    env = stack.openclaw.env(stack.home, stack.state_dir, {"OPENCLAW_CONFIG_PATH": str(bad)})
    rejected = subprocess.run(
        stack.openclaw.command("config", "validate"),
        cwd=stack.home,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert rejected.returncode != 0


def test_dm_to_openclaw_is_answered(stack: Stack, token_bot: str) -> None:
    stack.dm_round_trip(token_bot, "token DM")


def test_market_message_is_answered_without_mention(stack: Stack, token_bot: str) -> None:
    """`groups["#market:server"].requireMention: false`: a plain message in #market gets an answer."""
    started = time.monotonic()
    assert stack.alice.membership(stack.market_room, token_bot) == "join"
    tag = "ping-" + secrets.token_hex(4)
    stack.alice.send(stack.market_room, f"anyone selling a lamp? {tag}")
    stack.say(f"sent '{tag}' in {stack.market_alias}; waiting for the reply")
    reply = stack.wait_for_reply(stack.market_room, token_bot, tag)
    stack.timings["market: reply"] = time.monotonic() - started
    assert reply["content"]["body"].startswith(REPLY)


def test_password_login_dm_is_answered(stack: Stack) -> None:
    """The same, with `userId` + `password` instead of a token (OpenClaw calls POST /login)."""
    bot = register_with_password(stack.server, "clawpw", stack.reg_token).user_id
    stack.start_gateway({"password": PASSWORD}, bot, "password")
    stack.dm_round_trip(bot, "password DM")
    assert any(
        e.method == "POST" and e.path.startswith("/_matrix/client/v3/login") for e in stack.proxy.snapshot()
    )
