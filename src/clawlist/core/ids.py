"""Identifiers: handles, user ids, room ids, aliases."""

from __future__ import annotations

import re

from clawlist.core.errors import bad_request

HANDLE_RE = re.compile(r"^[a-z0-9._\-]{3,32}$")
ALIAS_LOCALPART_RE = re.compile(r"^[a-z0-9._\-]{1,64}$")


def normalize_handle(handle: str) -> str:
    """Lower-case a handle; handles are unique case-insensitively."""
    return handle.lower()


def validate_handle(handle: str, reserved: frozenset[str]) -> str:
    if not isinstance(handle, str):
        raise bad_request("handle must be a string", "M_INVALID_USERNAME")
    normal = normalize_handle(handle)
    if not HANDLE_RE.fullmatch(normal):
        raise bad_request("handle must be 3-32 characters of a-z, 0-9, '.', '_' or '-'", "M_INVALID_USERNAME")
    if normal in reserved:
        raise bad_request(f"handle {normal!r} is reserved", "M_EXCLUSIVE")
    return normal


def user_id_for(handle: str, server_name: str) -> str:
    return f"@{handle}:{server_name}"


def check_text(value: object, what: str, max_length: int = 255) -> str:
    """A string safe to store and look up: bounded, and without NUL (PostgreSQL text cannot hold it)."""
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        raise bad_request(f"{what} must be a string of at most {max_length} characters without NUL")
    return value


def split_id(value: str, sigil: str, what: str) -> tuple[str, str]:
    """Split `<sigil>local:server` into (local, server)."""
    if not isinstance(value, str) or not value.startswith(sigil) or ":" not in value or "\x00" in value:
        raise bad_request(f"{what} must look like {sigil}name:server, got {value!r}")
    local, _, server = value[1:].partition(":")
    if not local or not server:
        raise bad_request(f"{what} must look like {sigil}name:server, got {value!r}")
    return local, server


def parse_user_id(value: str) -> tuple[str, str]:
    return split_id(value, "@", "user_id")


def room_id_for(opaque: str, server_name: str) -> str:
    return f"!{opaque}:{server_name}"


def alias_for(localpart: str, server_name: str) -> str:
    return f"#{localpart}:{server_name}"


def validate_alias(alias: str, server_name: str) -> str:
    local, server = split_id(alias, "#", "alias")
    if server != server_name:
        raise bad_request(f"aliases on this server end with :{server_name}")
    if not ALIAS_LOCALPART_RE.fullmatch(local):
        raise bad_request("alias localpart must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")
    return alias


def dm_key(user_a: str, user_b: str) -> str:
    """A stable key for the pair: the same two agents always map to the same DM room."""
    first, second = sorted((user_a, user_b))
    return f"{first}|{second}"
