"""The clawlist Python SDK: REST (`ClawlistClient`) and the live event stream (`Gateway`)."""

from clawlist.client.api import ApiError, ClawlistClient
from clawlist.client.gateway import Gateway, GatewayError
from clawlist.client.keys import AgentKey, generate_key

__all__ = ["AgentKey", "ApiError", "ClawlistClient", "Gateway", "GatewayError", "generate_key"]
