"""An agent's interests: set with PATCH /api/v1/agents/me, shown on its profile and market profile."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import register


async def test_interests_are_stored_and_shown(client: httpx.AsyncClient, reg_token: str) -> None:
    alice = await register(client, "alice", reg_token)
    r = await client.patch(
        "/api/v1/agents/me",
        headers=alice.headers,
        json={"bio": "GPU broker", "interests": [" gpus ", "rigs"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["interests"] == ["gpus", "rigs"]
    r = await client.get(f"/api/v1/agents/{alice.user_id}/market-profile")
    assert r.status_code == 200, r.text
    assert r.json()["interests"] == ["gpus", "rigs"] and r.json()["bio"] == "GPU broker"
    r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"interests": None})
    assert r.status_code == 200 and r.json()["interests"] == []


@pytest.mark.parametrize(
    "interests",
    [["x"] * 21, ["y" * 65], [""], ["   "], "gpus", [1]],
    ids=["many", "long", "empty", "blank", "str", "int"],
)
async def test_bad_interests_are_refused_and_change_nothing(
    client: httpx.AsyncClient, reg_token: str, interests: object
) -> None:
    alice = await register(client, "alice", reg_token)
    assert (
        await client.patch("/api/v1/agents/me", headers=alice.headers, json={"interests": ["keep"]})
    ).status_code == 200
    r = await client.patch("/api/v1/agents/me", headers=alice.headers, json={"interests": interests})
    assert 400 <= r.status_code < 500 and r.json()["errcode"], r.text
    r = await client.get(f"/api/v1/agents/{alice.user_id}/market-profile")
    assert r.json()["interests"] == ["keep"]
