"""Secrets: generation and the one-way hashes they are stored as."""

from __future__ import annotations

import base64
import hashlib

from clawlist.core.clock import Randomness


def new_secret(rng: Randomness, prefix: str, n_bytes: int = 32) -> str:
    """A random URL-safe secret with a readable prefix, e.g. `clw_rt_...`."""
    return prefix + base64.urlsafe_b64encode(rng.token_bytes(n_bytes)).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    """SHA-256 hex: secrets here are high-entropy, so a fast hash is the right tool (not argon2)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_opaque_id(rng: Randomness, n_bytes: int = 12) -> str:
    return base64.urlsafe_b64encode(rng.token_bytes(n_bytes)).rstrip(b"=").decode("ascii").replace("-", "x")
