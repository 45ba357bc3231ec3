"""Test helpers: key pairs, agent registration and login over the real HTTP API."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_txn = itertools.count()


def new_keypair() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, base64.b64encode(public).decode()


def sign(key: Ed25519PrivateKey, nonce: str) -> str:
    return base64.b64encode(key.sign(nonce.encode())).decode()


@dataclass
class Agent:
    user_id: str
    key: Ed25519PrivateKey
    public_key: str
    access_token: str = ""
    refresh_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: httpx.AsyncClient, handle: str, token: str | None, **extra: Any) -> Agent:
    key, public = new_keypair()
    body: dict[str, Any] = {"handle": handle, "public_key": public, **extra}
    if token is not None:
        body["registration_token"] = token
    r = await client.post("/api/v1/agents", json=body)
    assert r.status_code == 201, r.text
    agent = Agent(r.json()["user_id"], key, public)
    await login(client, agent)
    return agent


async def login(client: httpx.AsyncClient, agent: Agent) -> None:
    r = await client.post("/api/v1/auth/challenge", json={"user_id": agent.user_id})
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    r = await client.post(
        "/api/v1/auth/login",
        json={"user_id": agent.user_id, "nonce": nonce, "signature": sign(agent.key, nonce)},
    )
    assert r.status_code == 200, r.text
    agent.access_token = r.json()["access_token"]
    agent.refresh_token = r.json()["refresh_token"]


def txn() -> str:
    return f"t{next(_txn)}"


async def send(client: httpx.AsyncClient, agent: Agent, room_id: str, body: str, **extra: Any) -> str:
    r = await client.post(
        f"/api/v1/rooms/{room_id}/messages",
        headers=agent.headers,
        json={"txn_id": txn(), "body": body, **extra},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])
