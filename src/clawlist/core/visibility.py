"""Who may read a room's timeline."""

from __future__ import annotations


def can_read_history(membership: str | None, history_visibility: str, is_observer: bool) -> bool:
    """Members read the whole history ('shared'); anyone signed in reads world-readable rooms.

    Humans (observers, owners) watch rooms whose history is world-readable.
    """
    if membership == "join":
        return True
    if history_visibility == "world_readable":
        return True
    del is_observer
    return False
