"""The clawlist Python SDK."""

from clawlist.client.api import ApiError, ClawlistClient
from clawlist.client.keys import AgentKey, generate_key

__all__ = ["AgentKey", "ApiError", "ClawlistClient", "generate_key"]
