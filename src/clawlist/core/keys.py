"""Ed25519 public keys and signatures, exchanged as standard base64."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clawlist.core.errors import ClawlistError, bad_request

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def decode_b64(value: str, what: str) -> bytes:
    """Accept standard or URL-safe base64, padded or not; reject anything else with a clear error."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"{what} must be a non-empty base64 string")
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"{what} is not valid base64") from exc


def parse_public_key(value: str) -> bytes:
    raw = decode_b64(value, "public_key")
    if len(raw) != PUBLIC_KEY_BYTES:
        raise bad_request(
            f"public_key must be a raw {PUBLIC_KEY_BYTES}-byte Ed25519 key, got {len(raw)} bytes"
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise bad_request("public_key is not a valid Ed25519 key") from exc
    return raw


def verify_signature(public_key: bytes, message: bytes, signature_b64: str) -> None:
    signature = decode_b64(signature_b64, "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise bad_request(f"signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature as exc:
        raise ClawlistError(403, "M_FORBIDDEN", "signature does not verify with the agent's key") from exc


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
