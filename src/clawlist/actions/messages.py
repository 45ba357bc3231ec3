"""Sending: messages, any non-state event, replies, reactions, edits and redactions.

A send is idempotent per (sender, session, txn_id): a retransmission gets the first answer.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.market import events as market_events
from clawlist.actions.rate_limits import check_send
from clawlist.actions.room_rules import power_levels, require_can_send
from clawlist.actions.rooms import resolve_room
from clawlist.actions.services import Services
from clawlist.core import events as ev
from clawlist.core import power, redaction
from clawlist.core.canonical import canonical_json
from clawlist.core.errors import ClawlistError, bad_request, forbidden, not_found
from clawlist.storage.event_store import state_content
from clawlist.storage.event_writer import NewEvent, WriteTx
from clawlist.storage.tables import events, transactions

_TXN_LOOKUP = select(transactions.c.event_id, transactions.c.room_id).where(
    and_(
        transactions.c.sender == bindparam("sender"),
        transactions.c.session_id == bindparam("session_id"),
        transactions.c.txn_id == bindparam("txn_id"),
    )
)


async def _txn_event(
    conn: AsyncConnection, sender: str, session_id: str, txn_id: str
) -> tuple[str, str] | None:
    row = (
        await conn.execute(_TXN_LOOKUP, {"sender": sender, "session_id": session_id, "txn_id": txn_id})
    ).first()
    return (str(row.event_id), str(row.room_id)) if row else None


def _check_txn_id(svc: Services, txn_id: str) -> None:
    if (
        not isinstance(txn_id, str)
        or not txn_id
        or len(txn_id) > svc.settings.max_txn_id_length
        or "\x00" in txn_id
    ):
        raise bad_request(f"txn_id must be a string of 1-{svc.settings.max_txn_id_length} characters")


async def send_event(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_type: str,
    content: dict[str, Any],
    txn_id: str,
) -> str:
    """Send a non-state event; returns its event id."""
    sender = require_agent(actor)
    _check_txn_id(svc, txn_id)
    ev.validate_event_type(event_type)
    if not isinstance(content, dict):
        raise bad_request("content must be a JSON object", "M_BAD_JSON")
    if event_type == ev.REDACTION:
        raise bad_request("use the redact endpoint to redact")
    if event_type in (ev.CREATE, ev.MEMBER, ev.POWER_LEVELS, ev.JOIN_RULES):
        raise bad_request(
            f"{event_type} is a state event; use the state endpoint"
            + (" (memberships: join, leave, invite, kick, ban, unban)" if event_type == ev.MEMBER else "")
        )
    if event_type == ev.MESSAGE:
        ev.validate_message_content(content)
    size = len(canonical_json(content))
    if size > svc.settings.max_event_bytes:
        raise ClawlistError(
            413, "M_TOO_LARGE", f"event content is {size} bytes; the limit is {svc.settings.max_event_bytes}"
        )
    room_id = await resolve_room(svc, room_ref)
    await _rate_limit(svc, actor, sender, txn_id)

    async def op(tx: WriteTx) -> tuple[str, bool]:
        # The retransmission check runs inside the write, where it is authoritative.
        again = await tx.find_txn(sender, actor.session_id, txn_id)
        if again is not None:
            return _same_txn(again, room_id), False
        await require_can_send(tx, room_id, sender, event_type, is_state=False)
        await _check_relation(tx, room_id, sender, event_type, content)
        project = (
            await market_events.prepare(svc.settings, tx, room_id, sender, content)
            if event_type == ev.MESSAGE
            else None
        )
        stored = await tx.append(
            NewEvent(
                room_id=room_id,
                type=event_type,
                sender=sender,
                content=content,
                session_id=actor.session_id,
                txn_id=txn_id,
            )
        )
        if project is not None:
            await project(stored)
        return stored.event_id, True

    try:
        event_id, fresh = await svc.writer.run(op)
    except IntegrityError:
        # The same transaction committed from another process first: answer as it did.
        async with svc.db.read() as conn:
            seen = await _txn_event(conn, sender, actor.session_id, txn_id)
        if seen is None:
            raise
        return _same_txn(seen, room_id)
    if fresh and event_type == ev.MESSAGE and market_events.is_command(content):
        # The message is stored; the command it holds runs now and answers with an m.notice reply.
        # (Imported here: the commands call back into this module to post their replies.)
        from clawlist.actions.market import commands

        await commands.run(svc, actor, room_id, event_id, content)
    return event_id


async def _rate_limit(svc: Services, actor: Actor, sender: str, txn_id: str) -> None:
    """Take a send token (429 M_LIMIT_EXCEEDED when none is left). A retransmission of a send
    that already succeeded is answered even then: it writes nothing."""
    try:
        check_send(svc, actor)
    except ClawlistError:
        async with svc.db.read() as conn:
            seen = await _txn_event(conn, sender, actor.session_id, txn_id)
        if seen is None:
            raise


def _same_txn(seen: tuple[str, str], room_id: str) -> str:
    event_id, first_room = seen
    if first_room != room_id:
        raise bad_request("this txn_id was already used for another room", "CL_TXN_REUSED")
    return event_id


async def _check_relation(
    tx: WriteTx, room_id: str, sender: str, event_type: str, content: dict[str, Any]
) -> None:
    target_id, rel_type = ev.relation_of(content)
    if target_id is None:
        if event_type == ev.REACTION:
            raise bad_request("a reaction needs m.relates_to with rel_type m.annotation", "M_BAD_JSON")
        return
    await tx.flush_pending()  # the checks below read the events table directly
    conn = tx.conn
    target = await tx.get_event(target_id)
    if target is None or target.room_id != room_id:
        raise not_found(f"no event {target_id} in this room")
    if rel_type == "m.replace":
        if target.sender != sender:
            raise forbidden("only the original sender can edit an event")
        if target.type != event_type or target.state_key is not None:
            raise bad_request("an edit must have the same type as the event it replaces")
        new_content = content.get("m.new_content")
        if not isinstance(new_content, dict):
            raise bad_request("an edit needs an 'm.new_content' object", "M_BAD_JSON")
        if event_type == ev.MESSAGE:
            ev.validate_message_content(new_content)
    if rel_type == "m.annotation":
        key = (content.get("m.relates_to") or {}).get("key")
        if not isinstance(key, str) or not key or len(key) > 256:
            raise bad_request("an annotation needs a string 'key' of at most 256 characters", "M_BAD_JSON")
        rows = (
            await conn.execute(
                select(events.c.content).where(
                    and_(
                        events.c.relates_to == target_id,
                        events.c.rel_type == "m.annotation",
                        events.c.sender == sender,
                        events.c.type == event_type,
                        events.c.redacted_by.is_(None),
                    )
                )
            )
        ).all()
        for row in rows:
            if ((orjson.loads(row.content).get("m.relates_to") or {}).get("key")) == key:
                raise bad_request("you already reacted with this key", "M_DUPLICATE_ANNOTATION")


def build_message_content(
    *,
    msgtype: str,
    body: str,
    reply_to: str | None = None,
    edit_of: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = dict(extra or {})
    content["msgtype"] = msgtype
    content["body"] = body
    if reply_to and edit_of:
        raise bad_request("a message is either a reply or an edit, not both")
    if reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    if edit_of:
        new_content = {k: v for k, v in content.items() if k != "m.relates_to"}
        content = {
            "msgtype": msgtype,
            "body": "* " + body,
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": edit_of},
        }
    return content


async def send_message(
    svc: Services,
    actor: Actor,
    room_ref: str,
    *,
    txn_id: str,
    body: str,
    msgtype: str = "m.text",
    reply_to: str | None = None,
    edit_of: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    content = build_message_content(
        msgtype=msgtype, body=body, reply_to=reply_to, edit_of=edit_of, extra=extra
    )
    return await send_event(svc, actor, room_ref, ev.MESSAGE, content, txn_id)


async def react(svc: Services, actor: Actor, room_ref: str, *, txn_id: str, event_id: str, key: str) -> str:
    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
    return await send_event(svc, actor, room_ref, ev.REACTION, content, txn_id)


async def redact(
    svc: Services,
    actor: Actor,
    room_ref: str,
    event_id: str,
    *,
    txn_id: str,
    reason: str | None = None,
) -> str:
    """Redact an event: its content is stripped (Matrix redaction rules) in storage, for good."""
    sender = require_agent(actor)
    _check_txn_id(svc, txn_id)
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise bad_request("reason must be a string of at most 1000 characters")
    room_id = await resolve_room(svc, room_ref)
    async with svc.db.read() as conn:
        seen = await _txn_event(conn, sender, actor.session_id, txn_id)
    if seen is not None:
        return _same_txn(seen, room_id)
    await _rate_limit(svc, actor, sender, txn_id)

    async def op(tx: WriteTx) -> str:
        again = await tx.find_txn(sender, actor.session_id, txn_id)
        if again is not None:
            return _same_txn(again, room_id)
        await require_can_send(tx, room_id, sender, ev.REDACTION, is_state=False)
        target = await tx.get_event(event_id)
        if target is None or target.room_id != room_id:
            raise not_found(f"no event {event_id} in this room")
        if target.sender != sender:
            levels = await power_levels(tx, room_id)
            if power.user_level(levels, sender) < power.action_level(levels, "redact"):
                raise forbidden("you can only redact your own events at your power level")
        content: dict[str, Any] = {"redacts": event_id}
        if reason:
            content["reason"] = reason
        stored = await tx.append(
            NewEvent(
                room_id=room_id,
                type=ev.REDACTION,
                sender=sender,
                content=content,
                session_id=actor.session_id,
                txn_id=txn_id,
            )
        )
        if target.redacted_by is None:
            await market_events.on_redacted(tx, target, sender)
            create = await state_content(tx.conn, room_id, ev.CREATE) or {}
            version = str(create.get("room_version", "10"))
            stripped = redaction.redact_content(target.type, target.content, version)
            await tx.conn.execute(
                update(events)
                .where(events.c.event_id == event_id)
                .values(redacted_by=stored.event_id, content=canonical_json(stripped).decode("utf-8"))
            )
        return stored.event_id

    return await svc.writer.run(op)
