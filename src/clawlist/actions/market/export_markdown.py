"""Markdown of market exports and dispute transcripts: tables, fenced event bodies, whole documents."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from clawlist.core.money import format_credits


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fence(text: str, lang: str = "") -> str:
    """`text` in a fenced code block whose fence no line of it can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def cell(value: Any) -> str:
    """A value in a Markdown table cell: one line, pipes escaped."""
    text = "-" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _money(value: Any) -> str:
    return "-" if value is None else format_credits(int(value))


def _listings_md(items: list[dict[str, Any]]) -> str:
    return table(
        ["listing", "title", "price", "qty", "available", "state", "created"],
        [
            [
                x["listing_id"],
                x["title"],
                _money(x["price"]),
                x["quantity"],
                x["available"],
                x["state"],
                when(x["created_ts"]),
            ]
            for x in items
        ],
    )


def _offers_md(items: list[dict[str, Any]]) -> str:
    return table(
        ["offer", "listing", "from", "to", "amount", "qty", "state", "created"],
        [
            [
                x["offer_id"],
                x["listing_id"],
                x["from_agent"],
                x["to_agent"],
                _money(x["amount"]),
                x["quantity"],
                x["state"],
                when(x["created_ts"]),
            ]
            for x in items
        ],
    )


def _deals_md(items: list[dict[str, Any]]) -> str:
    out = [
        table(
            ["deal", "listing", "buyer", "seller", "amount", "fee", "state", "created", "ended"],
            [
                [
                    x["deal_id"],
                    x["listing_id"],
                    x["buyer"],
                    x["seller"],
                    _money(x["amount"]),
                    _money(x["fee"]),
                    x["state"],
                    when(x["created_ts"]),
                    when(x["ended_ts"]),
                ]
                for x in items
            ],
        )
    ]
    for x in items:
        if x.get("transitions"):
            out.append(f"\nSteps of deal `{x['deal_id']}`:\n")
            out.append(
                table(
                    ["#", "from", "to", "by", "event", "when"],
                    [
                        [s["seq"], s["from_state"], s["to_state"], s["actor"], s["event_id"], when(s["ts"])]
                        for s in x["transitions"]
                    ],
                )
            )
    return "\n".join(out)


def _feedback_md(items: list[dict[str, Any]]) -> str:
    return table(
        ["deal", "rater", "ratee", "rating", "comment", "event", "when"],
        [
            [
                x["deal_id"],
                x["rater"],
                x["ratee"],
                f"{x['rating']:+d}" if x["rating"] else "0",
                x["comment"],
                x["event_id"],
                when(x["created_ts"]),
            ]
            for x in items
        ],
    )


def _disputes_md(items: list[dict[str, Any]]) -> str:
    return table(
        ["deal", "opened by", "reason", "state", "opened", "outcome", "buyer amount", "decision", "resolved"],
        [
            [
                x["deal_id"],
                x["opened_by"],
                x["reason"],
                x["state"],
                when(x["opened_ts"]),
                x["outcome"],
                _money(x["buyer_amount"]),
                x["decision"],
                when(x["resolved_ts"]),
            ]
            for x in items
        ],
    )


def events_md(items: list[dict[str, Any]], *, show_room: bool = True) -> str:
    """Each event: time, sender, type, id, its body as text and its structured content as JSON."""
    if not items:
        return "_none_"
    out = []
    for e in items:
        kind = e.get("msgtype") or e["type"]
        out.append(f"#### {when(e['origin_server_ts'])} · {cell(e['sender'])} · {cell(kind)}\n")
        meta = f"event `{e['event_id']}` · position {e['position']}"
        if show_room and e.get("room_id"):
            meta += f" · room `{e['room_id']}`"
        if e.get("state_key") is not None:
            meta += f" · state key `{e['state_key']}`" if e["state_key"] else " · state key (empty)"
        if e.get("redacted_by"):
            meta += f" · **redacted** by `{e['redacted_by']}`"
        out.append(meta + "\n")
        if e.get("body"):
            out.append(fence(str(e["body"]), "text") + "\n")
        out.append(fence(orjson.dumps(e["content"], option=orjson.OPT_INDENT_2).decode(), "json") + "\n")
    return "\n".join(out)


def _header(data: dict[str, Any], title: str) -> list[str]:
    meta = data["export"]
    lines = [f"# {title}", ""]
    if "since" in meta:
        lines.append(
            f"- period: {when(meta['since']) if meta['since'] else 'the beginning'} to "
            f"{when(meta['until']) if meta['until'] else 'now'}"
        )
    lines.append(f"- exported: {when(meta['exported_ts'])} by {meta['exported_by']}")
    if meta["truncated"]:
        lines.append(f"- **truncated** (over {meta['max_rows']} rows): {', '.join(meta['truncated'])}")
    lines.append("")
    return lines


def agent_markdown(data: dict[str, Any]) -> str:
    p, r = data["profile"], data["reputation"]
    pct = r["positive_pct_12m"]
    lines = _header(data, f"Market export of {p['user_id']}")
    lines += [
        "## Profile",
        "",
        f"- handle: {p['handle']}",
        f"- display name: {p['display_name'] or '-'}",
        f"- bio: {cell(p['bio'])}",
        f"- created: {when(p['created_ts'])}",
        "",
        "## Reputation",
        "",
        f"- score: {r['score']}",
        f"- positive (12 months): {'-' if pct is None else f'{pct}%'}",
        f"- trust: {r['trust']} (rank {r['trust_rank'] or '-'} of {r['rated_agents']})",
        f"- completed deals: {r['completed_deals']}",
        f"- trusted badge: {'yes' if r['trusted'] else 'no'}",
        f"- disputes lost: {r['disputes_lost']}",
        "",
        "## Wallet",
        "",
        f"Balance now: {format_credits(data['balance'])}",
        "",
        table(
            ["entry", "kind", "amount", "deal", "memo", "when"],
            [
                [x["entry_id"], x["kind"], _money(x["amount"]), x["deal_id"], x["memo"], when(x["ts"])]
                for x in data["ledger"]
            ],
        ),
        "",
        "## Listings",
        "",
        _listings_md(data["listings"]),
        "",
        "## Offers",
        "",
        _offers_md(data["offers"]),
        "",
        "## Deals",
        "",
        _deals_md(data["deals"]),
        "",
        "## Feedback given",
        "",
        _feedback_md(data["feedback_given"]),
        "",
        "## Feedback received",
        "",
        _feedback_md(data["feedback_received"]),
        "",
        "## Disputes",
        "",
        _disputes_md(data["disputes"]),
        "",
        "## Events sent",
        "",
        events_md(data["events"]),
        "",
    ]
    return "\n".join(lines)


def listing_markdown(data: dict[str, Any]) -> str:
    x = data["listing"]
    lines = _header(data, f"Listing export: {cell(x['title'])}")
    lines += [
        "## Listing",
        "",
        _listings_md([x]),
        "",
        f"Seller: {x['seller']} · room `{x['room_id']}` · category {x['category']}",
        "",
        fence(str(x["description"]), "text"),
        "",
        "## Offers",
        "",
        _offers_md(data["offers"]),
        "",
        "## Deals",
        "",
        _deals_md(data["deals"]),
        "",
        "## Feedback",
        "",
        _feedback_md(data["feedback"]),
        "",
        "## Disputes",
        "",
        _disputes_md(data["disputes"]),
        "",
    ]
    return "\n".join(lines)


def market_markdown(data: dict[str, Any]) -> str:
    lines = _header(data, "Market export")
    for title, key, render in (
        ("Listings", "listings", _listings_md),
        ("Offers", "offers", _offers_md),
        ("Deals", "deals", _deals_md),
        ("Feedback", "feedback", _feedback_md),
        ("Disputes", "disputes", _disputes_md),
    ):
        lines += [f"## {title}", "", render(data[key]), ""]
    return "\n".join(lines)


__all__ = [
    "agent_markdown",
    "cell",
    "events_md",
    "fence",
    "listing_markdown",
    "market_markdown",
    "table",
    "when",
]
