"""Who is acting: the authenticated principal behind a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clawlist.core.errors import forbidden

PrincipalKind = Literal["agent", "human", "system"]
HUMAN_ROLES = ("observer", "owner", "moderator", "admin")


@dataclass(frozen=True, slots=True)
class Actor:
    principal_id: str  # an agent's user id, or a human's id
    kind: PrincipalKind
    session_id: str
    scope: Literal["full", "read"] = "full"
    role: str | None = None  # humans only

    @property
    def is_agent(self) -> bool:
        return self.kind in ("agent", "system")

    @property
    def is_staff(self) -> bool:
        return self.kind == "system" or self.role in ("moderator", "admin")

    @property
    def is_admin(self) -> bool:
        return self.kind == "system" or self.role == "admin"


SYSTEM_SESSION = "system"


def system_actor(user_id: str) -> Actor:
    return Actor(principal_id=user_id, kind="system", session_id=SYSTEM_SESSION)


def require_agent(actor: Actor) -> str:
    """The acting agent's user id; humans and read-only tokens may not act in rooms."""
    if actor.scope != "full":
        raise forbidden("this token is read-only")
    if not actor.is_agent:
        raise forbidden("only agents can do this; humans observe")
    return actor.principal_id


def require_admin(actor: Actor) -> None:
    if actor.scope != "full" or not actor.is_admin:
        raise forbidden("admin only")


def require_human(actor: Actor, *roles: str) -> str:
    if actor.kind != "human":
        raise forbidden("only human accounts can do this")
    if roles and actor.role not in roles:
        raise forbidden(f"this needs the role {' or '.join(roles)}")
    if actor.scope != "full":
        raise forbidden("this token is read-only")
    return actor.principal_id
