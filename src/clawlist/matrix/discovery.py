"""Matrix façade: what a client asks before anything else — `/versions`, `/.well-known/matrix/client`,
`/capabilities` and the push rules (a fixed, valid default rule set: clawlist sends no pushes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from clawlist.api.responses import JSONBytesResponse
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, ServicesDep
from clawlist.settings import Settings

router = APIRouter()

SPEC_VERSIONS = [f"v1.{n}" for n in range(1, 12)]
DEFAULT_ROOM_VERSION = "10"
ROOM_VERSIONS = {"10": "stable", "11": "stable"}


def public_base_url(request: Request, settings: Settings) -> str:
    """The URL clients should use: `public_base_url` when the operator set one, else the URL this
    request came to (the default `http://host:port` is useless behind a proxy or on 0.0.0.0)."""
    configured = (settings.public_base_url or "").rstrip("/")
    if configured and configured != f"http://{settings.host}:{settings.port}":
        return configured
    return str(request.base_url).rstrip("/")


def well_known(request: Request, settings: Settings) -> dict[str, Any]:
    return {"m.homeserver": {"base_url": public_base_url(request, settings)}}


@router.get("/_matrix/client/versions")
async def versions() -> dict[str, Any]:
    return {"versions": SPEC_VERSIONS, "unstable_features": {}}


@router.get("/.well-known/matrix/client")
async def client_well_known(request: Request, svc: ServicesDep) -> Response:
    # Browsers fetch this cross-origin (the spec asks for CORS on it).
    return JSONBytesResponse(well_known(request, svc.settings), headers={"Access-Control-Allow-Origin": "*"})


@router.get(f"{CLIENT_V3}/capabilities")
async def capabilities(_actor: MatrixActorDep) -> dict[str, Any]:
    return {
        "capabilities": {
            "m.room_versions": {"default": DEFAULT_ROOM_VERSION, "available": dict(ROOM_VERSIONS)},
            "m.change_password": {"enabled": True},
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": False},
        }
    }


# -- push rules ------------------------------------------------------------------------------------

_NOTIFY_SOUND_HIGHLIGHT: list[Any] = [
    "notify",
    {"set_tweak": "sound", "value": "default"},
    {"set_tweak": "highlight"},
]
_NOTIFY_SOUND: list[Any] = ["notify", {"set_tweak": "sound", "value": "default"}]


def _rule(
    rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], *, enabled: bool = True
) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "default": True,
        "enabled": enabled,
        "conditions": conditions,
        "actions": actions,
    }


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def default_push_rules(user_id: str) -> dict[str, Any]:
    """The spec's (v1.11) predefined push rules for `user_id`, as `GET /pushrules/` returns them
    (also usable as the content of the `m.push_rules` account data)."""
    localpart = user_id[1:].split(":", 1)[0]
    override = [
        _rule(".m.rule.master", [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(
            ".m.rule.invite_for_me",
            [
                _match("type", "m.room.member"),
                _match("content.membership", "invite"),
                _match("state_key", user_id),
            ],
            [
                "notify",
                {"set_tweak": "sound", "value": "default"},
                {"set_tweak": "highlight", "value": False},
            ],
        ),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(
            ".m.rule.is_user_mention",
            [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id}],
            _NOTIFY_SOUND_HIGHLIGHT,
        ),
        _rule(".m.rule.contains_display_name", [{"kind": "contains_display_name"}], _NOTIFY_SOUND_HIGHLIGHT),
        _rule(
            ".m.rule.is_room_mention",
            [
                {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
                {"kind": "sender_notification_permission", "key": "room"},
            ],
            ["notify", {"set_tweak": "highlight"}],
        ),
        _rule(
            ".m.rule.roomnotif",
            [
                {"kind": "sender_notification_permission", "key": "room"},
                _match("content.body", "@room"),
            ],
            ["notify", {"set_tweak": "highlight"}],
        ),
        _rule(
            ".m.rule.tombstone",
            [_match("type", "m.room.tombstone"), _match("state_key", "")],
            ["notify", {"set_tweak": "highlight"}],
        ),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
        _rule(
            ".m.rule.suppress_edits",
            [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
            [],
        ),
    ]
    content = [
        {
            "rule_id": ".m.rule.contains_user_name",
            "default": True,
            "enabled": True,
            "pattern": localpart,
            "actions": _NOTIFY_SOUND_HIGHLIGHT,
        }
    ]
    one_to_one = {"kind": "room_member_count", "is": "2"}
    no_highlight = {"set_tweak": "highlight", "value": False}
    underride = [
        _rule(
            ".m.rule.call",
            [_match("type", "m.call.invite")],
            ["notify", {"set_tweak": "sound", "value": "ring"}, no_highlight],
        ),
        _rule(
            ".m.rule.encrypted_room_one_to_one",
            [_match("type", "m.room.encrypted"), one_to_one],
            [*_NOTIFY_SOUND, no_highlight],
        ),
        _rule(
            ".m.rule.room_one_to_one",
            [_match("type", "m.room.message"), one_to_one],
            [*_NOTIFY_SOUND, no_highlight],
        ),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify", no_highlight]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify", no_highlight]),
    ]
    return {
        "global": {"override": override, "content": content, "room": [], "sender": [], "underride": underride}
    }


@router.get(f"{CLIENT_V3}/pushrules/")
async def push_rules(actor: MatrixActorDep) -> dict[str, Any]:
    return default_push_rules(actor.principal_id)


@router.get(f"{CLIENT_V3}/pushrules/global/")
async def global_push_rules(actor: MatrixActorDep) -> dict[str, Any]:
    rules: dict[str, Any] = default_push_rules(actor.principal_id)["global"]
    return rules
