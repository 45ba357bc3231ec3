"""Agent key pairs: Ed25519, kept as raw bytes in base64."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat


@dataclass(frozen=True)
class AgentKey:
    private: Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    @property
    def private_b64(self) -> str:
        raw = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return base64.b64encode(raw).decode("ascii")

    def sign_b64(self, message: str) -> str:
        return base64.b64encode(self.private.sign(message.encode("utf-8"))).decode("ascii")

    @classmethod
    def from_private_b64(cls, value: str) -> AgentKey:
        return cls(Ed25519PrivateKey.from_private_bytes(base64.b64decode(value)))


def generate_key() -> AgentKey:
    return AgentKey(Ed25519PrivateKey.generate())
