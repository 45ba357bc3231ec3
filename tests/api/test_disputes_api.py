"""The moderators' dispute queue on SQLite and PostgreSQL: staff only, oldest first with the deal's
summary, the evidence (the DM transcript) as JSON and Markdown, resolution (money, decision event,
reputation), and the `clawlist disputes` CLI against a real HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from typer.testing import CliRunner

from clawlist.actions.market import ledger
from clawlist.cli.main import app as cli
from tests.api.test_reputation_api import (
    API,
    DAY,
    MarketWorld,
    assert_error,
    bearer,
    dm_events,
    open_world,
)
from tests.conftest import free_port
from tests.helpers import Agent

PASSWORD = "correct horse battery"


@pytest.fixture
async def world(settings_for: Any) -> AsyncIterator[MarketWorld]:
    async for w in open_world(settings_for):
        yield w


async def human(w: MarketWorld, email: str, role: str) -> str:
    r = await w.client.post(
        f"{API}/humans", json={"email": email, "password": PASSWORD, "registration_token": w.reg_token}
    )
    assert r.status_code == 201, r.text
    if role != "owner":
        path = f"{API}/admin/humans/{r.json()['human_id']}/role"
        assert (
            await w.client.put(path, headers=bearer(w.admin_token), json={"role": role})
        ).status_code == 200
    r = await w.client.post(f"{API}/auth/password", json={"user": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def staff_get(w: MarketWorld, token: str, path: str, **params: Any) -> httpx.Response:
    return await w.client.get(f"{API}{path}", headers=bearer(token), params=params)


async def test_the_queue_is_for_staff_only(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    deal_id = await w.disputed(bob, alice)
    observer = await human(w, "watcher@example.com", "observer")
    owner = await human(w, "owner@example.com", "owner")
    moderator = await human(w, "mod@example.com", "moderator")
    refused = [
        ("GET", "/moderation/disputes", None),
        ("GET", f"/moderation/disputes/{deal_id}", None),
        ("GET", f"/moderation/disputes/{deal_id}/transcript", None),
        ("GET", f"/moderation/disputes/{deal_id}/transcript?format=md", None),
        ("POST", f"/moderation/disputes/{deal_id}/resolve", {"outcome": "refund", "decision": "x"}),
    ]
    for headers in (alice.headers, bob.headers, bearer(observer), bearer(owner)):
        for method, path, body in refused:
            r = await w.client.request(method, f"{API}{path}", headers=headers, json=body)
            assert_error(r, 403, "M_FORBIDDEN")
    for method, path, body in refused:
        r = await w.client.request(method, f"{API}{path}", json=body)
        assert r.status_code == 401, r.text
    # the parties' money did not move and the deal is still disputed
    r = await w.client.get(f"{API}/deals/{deal_id}", headers=bob.headers)
    assert r.json()["state"] == "disputed"
    for token in (moderator, w.admin_token):
        r = await staff_get(w, token, "/moderation/disputes")
        assert r.status_code == 200, r.text
        assert [d["deal_id"] for d in r.json()["disputes"]] == [deal_id]


async def test_queue_oldest_first_with_the_deal_summary_and_pages(world: MarketWorld) -> None:
    w = world
    sellers = [await w.agent(f"seller{i}") for i in range(3)]
    buyer = await w.agent("buyer")
    opened = []
    for i, s in enumerate(sellers):
        opened.append(await w.disputed(buyer, s, 1000 + i, reason=f"problem {i}"))
        w.clock.advance(3600)
    done = await w.completed(buyer, sellers[0], 300)  # no dispute: not in the queue

    r = await staff_get(w, w.admin_token, "/moderation/disputes")
    page = r.json()
    assert page["open"] == 3 and page["next_cursor"] is None
    assert [d["deal_id"] for d in page["disputes"]] == opened
    first = page["disputes"][0]
    assert first["reason"] == "problem 0" and first["opened_by"] == buyer.user_id and first["state"] == "open"
    assert first["age_seconds"] == 3 * 3600
    deal = first["deal"]
    assert deal["buyer"] == buyer.user_id and deal["seller"] == sellers[0].user_id
    assert deal["amount"] == 1000 and deal["amount_display"] == "10.00 credits"
    assert deal["title"] == "a lamp" and deal["state"] == "disputed" and deal["room_id"].startswith("!")

    r = await staff_get(w, w.admin_token, "/moderation/disputes", limit=2)
    assert [d["deal_id"] for d in r.json()["disputes"]] == opened[:2]
    cursor = r.json()["next_cursor"]
    r = await staff_get(w, w.admin_token, "/moderation/disputes", limit=2, cursor=cursor)
    assert [d["deal_id"] for d in r.json()["disputes"]] == opened[2:] and r.json()["next_cursor"] is None

    for params in (
        {"state": "closed"},
        {"limit": 0},
        {"limit": 100_000},
        {"cursor": "garbage"},
        {"cursor": "1:"},
    ):
        r = await staff_get(w, w.admin_token, "/moderation/disputes", **params)
        assert r.status_code == 400 and r.json()["errcode"], (params, r.text)
    assert_error(await staff_get(w, w.admin_token, f"/moderation/disputes/{done}"), 404, "M_NOT_FOUND")
    assert_error(await staff_get(w, w.admin_token, "/moderation/disputes/d_nothing"), 404, "M_NOT_FOUND")
    assert_error(await staff_get(w, w.admin_token, "/moderation/disputes/d_nothing/transcript"), 404)


async def test_show_and_the_transcript_as_json_and_markdown(world: MarketWorld) -> None:
    w = world
    alice, bob = await w.agent("alice"), await w.agent("bob")
    deal_id = await w.funded(bob, alice, 2500)
    r = await w.client.get(f"{API}/deals/{deal_id}", headers=bob.headers)
    room_id = r.json()["room_id"]
    # the parties talk in the DM; a body holding a Markdown fence must not break the export
    for who, text in ((alice, "shipping tomorrow"), (bob, "it came broken ```rm -rf```\n| a | b |")):
        r = await w.client.post(
            f"{API}/rooms/{room_id}/messages",
            headers=who.headers,
            json={"txn_id": f"t-{text[:5]}", "body": text},
        )
        assert r.status_code == 200, r.text
    r = await w.client.post(
        f"{API}/deals/{deal_id}/dispute", headers=bob.headers, json={"reason": "arrived broken"}
    )
    assert r.status_code == 200, r.text

    shown = (await staff_get(w, w.admin_token, f"/moderation/disputes/{deal_id}")).json()
    assert shown["state"] == "open" and shown["reason"] == "arrived broken"
    assert [s["to_state"] for s in shown["deal"]["transitions"]] == ["agreed", "funded", "disputed"]
    assert shown["transcript_events"] > 5 and shown["reputation_effect"] is None and shown["feedback"] == []

    r = await staff_get(w, w.admin_token, f"/moderation/disputes/{deal_id}/transcript")
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    data = r.json()
    assert data["deal_id"] == deal_id and data["room_id"] == room_id
    evs = data["events"]
    assert [e["position"] for e in evs] == sorted(e["position"] for e in evs)
    kinds = [e["msgtype"] for e in evs if e["type"] == "m.room.message"]
    for k in ("clawlist.offer", "clawlist.accept", "clawlist.deal", "clawlist.dispute", "m.text"):
        assert k in kinds, kinds
    for e in evs:
        assert {"event_id", "sender", "origin_server_ts", "content", "type"} <= e.keys()
    said = next(e for e in evs if e["body"] and e["body"].startswith("it came broken"))
    assert said["sender"] == bob.user_id and said["content"]["msgtype"] == "m.text"
    dispute_event = next(e for e in evs if e["msgtype"] == "clawlist.dispute")
    assert dispute_event["content"]["reason"] == "arrived broken"

    r = await staff_get(w, w.admin_token, f"/moderation/disputes/{deal_id}/transcript", format="md")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith(f"# Dispute on deal {deal_id}")
    for e in evs:
        assert e["event_id"] in md
    assert "arrived broken" in md and "shipping tomorrow" in md
    assert "````text\nit came broken ```rm -rf```" in md  # a longer fence than the body's
    r = await staff_get(w, w.admin_token, f"/moderation/disputes/{deal_id}/transcript", format="pdf")
    assert_error(r, 400)


async def test_resolutions_move_money_post_a_decision_and_adjust_reputation(world: MarketWorld) -> None:
    w = world
    seller, buyer = await w.agent("seller"), await w.agent("buyer")
    moderator = await human(w, "mod@example.com", "moderator")
    refund = await w.disputed(buyer, seller, 4000, reason="never delivered")
    w.clock.advance(60)
    release = await w.disputed(buyer, seller, 2000, reason="i do not like it")
    w.clock.advance(60)
    split = await w.disputed(buyer, seller, 1000, reason="half of it broken")
    assert await ledger.balance(w.svc, buyer.user_id) == 0

    async def resolve(deal_id: str, body: dict[str, Any], token: str = moderator) -> httpx.Response:
        return await w.client.post(
            f"{API}/moderation/disputes/{deal_id}/resolve", headers=bearer(token), json=body
        )

    # bad decisions are refused and change nothing
    for body in (
        {"outcome": "keep", "decision": "x"},
        {"outcome": "refund"},
        {"outcome": "refund", "decision": "  "},
        {"outcome": "split", "decision": "x"},
        {"outcome": "split", "decision": "x", "buyer_amount": 1000},
        {"outcome": "refund", "decision": "x", "buyer_amount": 5},
    ):
        r = await resolve(split, body)
        assert r.status_code == 400 and r.json()["errcode"], (body, r.text)
    assert (await staff_get(w, moderator, f"/moderation/disputes/{split}")).json()["state"] == "open"

    r = await resolve(refund, {"outcome": "refund", "decision": "no proof of delivery"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["state"] == "resolved" and out["outcome"] == "refund" and out["buyer_amount"] == 4000
    assert out["reputation_effect"]["at_fault"] == seller.user_id
    assert out["deal"]["state"] == "resolved" and out["decision_event_id"]
    assert await ledger.balance(w.svc, buyer.user_id) == 4000
    [decision] = await dm_events(w, out["deal"]["room_id"], "clawlist.decision")
    assert decision["event_id"] == out["decision_event_id"]
    assert (
        decision["content"]["outcome"] == "refund"
        and decision["content"]["decision"] == "no proof of delivery"
    )
    # a second decision on the same deal is refused
    assert_error(
        await resolve(refund, {"outcome": "release", "decision": "oops"}), 409, "CL_ILLEGAL_TRANSITION"
    )

    r = await resolve(release, {"outcome": "release", "decision": "delivered as described"}, w.admin_token)
    assert r.status_code == 200 and r.json()["reputation_effect"]["at_fault"] == buyer.user_id
    r = await resolve(split, {"outcome": "split", "buyer_amount": 400, "decision": "half broken"})
    assert r.status_code == 200 and r.json()["reputation_effect"]["at_fault"] is None
    assert await ledger.balance(w.svc, buyer.user_id) == 4400

    # reputation: the refund is the buyer's -1 about the seller, the release the seller's -1 about
    # the buyer; both may still rate (resolved deals take feedback), and the buyer's +1 on the
    # refunded deal does not undo the moderator's finding
    assert (await w.rate(buyer, refund, 1, "nice in the end")).status_code == 201
    assert (await w.rate(buyer, split, 1)).status_code == 201
    s = (await w.client.get(f"{API}/agents/{seller.user_id}/reputation")).json()
    assert s["disputes_lost"] == 1 and s["feedback"]["negative"] == 1 and s["feedback"]["positive"] == 1
    assert s["score"] == 0  # the same buyer on both sides: +1 and -1
    b = (await w.client.get(f"{API}/agents/{buyer.user_id}/reputation")).json()
    assert b["disputes_lost"] == 1 and b["score"] == -1 and b["positive_pct_12m"] == 0.0

    r = await staff_get(w, moderator, "/moderation/disputes")
    assert r.json()["open"] == 0 and r.json()["disputes"] == []
    r = await staff_get(w, moderator, "/moderation/disputes", state="resolved")
    assert [(d["deal_id"], d["outcome"]) for d in r.json()["disputes"]] == [
        (refund, "refund"),
        (release, "release"),
        (split, "split"),
    ]
    md = (await staff_get(w, moderator, f"/moderation/disputes/{refund}/transcript", format="md")).text
    assert "## Decision" in md and "no proof of delivery" in md


# -- the CLI against a real HTTP server ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(w: MarketWorld) -> AsyncIterator[str]:
    """The app (already started) behind a real uvicorn on 127.0.0.1, for the CLI to reach."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(w.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_the_disputes_cli(world: MarketWorld, tmp_path: Any) -> None:
    w = world
    seller, buyer = await w.agent("seller"), await w.agent("buyer")
    await human(w, "mod@example.com", "moderator")
    deal_id = await w.disputed(buyer, seller, 2000, reason="wrong colour")
    w.clock.advance(2 * DAY)
    async with served(w) as url:
        login = {"CLAWLIST_STAFF_EMAIL": "mod@example.com", "CLAWLIST_STAFF_PASSWORD": PASSWORD}
        result = await run_cli("disputes", "list", "--server", url, env=login)
        assert result.exit_code == 0, result.output
        assert deal_id in result.output and "wrong" in result.output and "2d" in result.output

        result = await run_cli("disputes", "list", "--json", "--server", url, "--token", w.admin_token)
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.stdout)["disputes"][0]["deal_id"] == deal_id

        result = await run_cli("disputes", "show", deal_id, "--server", url, env=login)
        assert result.exit_code == 0, result.output
        assert "wrong colour" in result.output and "delivered → disputed" in result.output, result.output

        out = tmp_path / "evidence.md"
        result = await run_cli("disputes", "export", deal_id, "-o", str(out), "--server", url, env=login)
        assert result.exit_code == 0, result.output
        assert out.read_text().startswith(f"# Dispute on deal {deal_id}")
        result = await run_cli("disputes", "export", deal_id, "--format", "json", "--server", url, env=login)
        assert orjson.loads(result.stdout)["deal_id"] == deal_id

        # refusals: an agent's token, a wrong password, a bad amount, an unknown deal
        result = await run_cli("disputes", "list", "--server", url, "--token", buyer.access_token)
        assert result.exit_code == 1 and "M_FORBIDDEN" in result.output
        bad = {**login, "CLAWLIST_STAFF_PASSWORD": "wrong password!"}
        result = await run_cli("disputes", "list", "--server", url, env=bad)
        assert result.exit_code == 1 and "M_FORBIDDEN" in result.output
        result = await run_cli(
            "disputes",
            "resolve",
            deal_id,
            "split",
            "-d",
            "x",
            "--buyer-amount",
            "-3",
            "--server",
            url,
            env=login,
        )
        assert result.exit_code == 2 and "CL_BAD_AMOUNT" in result.output
        result = await run_cli("disputes", "show", "d_missing", "--server", url, env=login)
        assert result.exit_code == 1 and "M_NOT_FOUND" in result.output

        result = await run_cli(
            "disputes",
            "resolve",
            deal_id,
            "split",
            "--buyer-amount",
            "5.50",
            "-d",
            "colour differs",
            "--server",
            url,
            env=login,
        )
        assert result.exit_code == 0, result.output
        assert "split" in result.output and "5.50 credits" in result.output
    assert await ledger.balance(w.svc, buyer.user_id) == 550
    r = await staff_get(w, w.admin_token, f"/moderation/disputes/{deal_id}")
    assert r.json()["state"] == "resolved" and r.json()["buyer_amount"] == 550


async def test_unreachable_server_is_a_clear_error() -> None:
    result = await run_cli("disputes", "list", "--server", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert result.exit_code == 1 and "cannot reach the server" in result.output


__all__ = ["Agent"]
