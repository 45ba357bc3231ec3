"""Password hashing with argon2, off the event loop (it is slow by design)."""

from __future__ import annotations

import asyncio
import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from clawlist.core.errors import bad_request

_hasher = PasswordHasher()


def check_password_policy(password: str, min_length: int) -> None:
    if not isinstance(password, str) or len(password) < min_length:
        raise bad_request(f"password must be at least {min_length} characters", "M_WEAK_PASSWORD")
    if len(password) > 1024:
        raise bad_request("password must be at most 1024 characters", "M_WEAK_PASSWORD")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        # Spend the same time as a real check, so timing does not tell which accounts exist.
        await asyncio.to_thread(_dummy_verify, password)
        return False
    try:
        return bool(await asyncio.to_thread(_hasher.verify, password_hash, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY = _hasher.hash("clawlist-timing-equaliser")


def _dummy_verify(password: str) -> None:
    with contextlib.suppress(VerificationError):
        _hasher.verify(_DUMMY, password)
