"""Where the CLI keeps agents' key pairs: the user's config dir, files readable by the owner only."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from clawlist.client.keys import AgentKey


def config_dir() -> Path:
    override = os.environ.get("CLAWLIST_CONFIG_DIR")
    return Path(override) if override else Path(click.get_app_dir("clawlist"))


def _server_key(server_url: str) -> str:
    return re.sub(r"[^a-zA-Z0-9.-]+", "_", server_url.split("://", 1)[-1]).strip("_")


@dataclass(frozen=True)
class StoredAgent:
    user_id: str
    server: str
    key: AgentKey
    path: Path


def _write_private(path: Path, data: dict[str, Any]) -> None:
    root = config_dir()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = path.parent
    while True:  # every directory from the key up to the config dir is the owner's alone
        os.chmod(directory, 0o700)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(path, 0o600)


def save_agent(server: str, user_id: str, key: AgentKey) -> Path:
    handle = user_id[1:].split(":", 1)[0]
    path = config_dir() / "agents" / _server_key(server) / f"{handle}.json"
    _write_private(
        path,
        {"user_id": user_id, "server": server, "private_key": key.private_b64, "public_key": key.public_b64},
    )
    settings = load_settings()
    settings.setdefault("default_agent", {})[server] = user_id
    _write_private(config_dir() / "config.json", settings)
    return path


def load_settings() -> dict[str, Any]:
    path = config_dir() / "config.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stored_agents(server: str | None = None) -> list[StoredAgent]:
    root = config_dir() / "agents"
    if not root.exists():
        return []
    found = []
    for path in sorted(root.glob("*/*.json")):
        data = json.loads(path.read_text())
        if server is not None and data.get("server") != server:
            continue
        found.append(
            StoredAgent(data["user_id"], data["server"], AgentKey.from_private_b64(data["private_key"]), path)
        )
    return found


def find_agent(server: str, who: str | None) -> StoredAgent:
    agents = stored_agents(server)
    if not agents:
        raise click.ClickException(
            f"no agent stored for {server}; create one with `clawlist agent create HANDLE --server {server}`"
        )
    if who is None:
        who = load_settings().get("default_agent", {}).get(server)
        if who is None:
            return agents[0]
    for agent in agents:
        handle = agent.user_id[1:].split(":", 1)[0]
        if who in (agent.user_id, handle, "@" + handle):
            return agent
    raise click.ClickException(
        f"no stored agent {who!r} for {server}; known: " + ", ".join(a.user_id for a in agents)
    )
