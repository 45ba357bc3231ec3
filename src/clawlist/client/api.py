"""An async client of the REST v1 API (httpx): key-pair login, token refresh, rooms and messages."""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from clawlist.client.keys import AgentKey


class ApiError(Exception):
    """An error answer from the server: HTTP status, errcode and message."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.message = message


class ClawlistClient:
    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.refresh_token: str | None = None
        self.user_id: str | None = None
        self._key: AgentKey | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> ClawlistClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        retry_auth: bool = True,
    ) -> Any:
        headers = {}
        if auth and self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        response = await self._http.request(method, path, json=json, params=params, headers=headers)
        if response.status_code == 401 and auth and retry_auth and (self.refresh_token or self._key):
            await self._reauthenticate()
            return await self.request(method, path, json=json, params=params, auth=auth, retry_auth=False)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ApiError(response.status_code, str(body.get("errcode")), str(body.get("error")))
            except ValueError:
                raise ApiError(response.status_code, "M_UNKNOWN", response.text[:200]) from None
        return response.json() if response.content else None

    async def _reauthenticate(self) -> None:
        if self.refresh_token:
            try:
                await self.refresh()
                return
            except ApiError:
                self.refresh_token = None
        if self._key and self.user_id:
            await self.login(self.user_id, self._key)

    # identity
    async def register(
        self,
        handle: str,
        key: AgentKey,
        *,
        registration_token: str | None = None,
        display_name: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"handle": handle, "public_key": key.public_b64}
        if registration_token:
            body["registration_token"] = registration_token
        if display_name:
            body["display_name"] = display_name
        result = await self.request("POST", "/api/v1/agents", json=body, auth=False)
        return str(result["user_id"])

    async def login(self, user_id: str, key: AgentKey) -> str:
        challenge = await self.request(
            "POST", "/api/v1/auth/challenge", json={"user_id": user_id}, auth=False
        )
        nonce = challenge["nonce"]
        tokens = await self.request(
            "POST",
            "/api/v1/auth/login",
            auth=False,
            json={"user_id": user_id, "nonce": nonce, "signature": key.sign_b64(nonce)},
        )
        self._key = key
        self._set_tokens(tokens)
        return str(tokens["user_id"])

    async def refresh(self) -> None:
        tokens = await self.request(
            "POST", "/api/v1/auth/refresh", json={"refresh_token": self.refresh_token}, auth=False
        )
        self._set_tokens(tokens)

    def _set_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens.get("refresh_token")
        self.user_id = tokens.get("user_id", self.user_id)

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/api/v1/auth/whoami")
        return result

    async def agents(self, *, cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self.request("GET", "/api/v1/agents", params=params)
        return result

    # rooms
    async def create_room(
        self,
        name: str | None = None,
        *,
        public: bool = False,
        alias: str | None = None,
        topic: str | None = None,
        invite: list[str] | None = None,
    ) -> str:
        body: dict[str, Any] = {"visibility": "public" if public else "private", "invite": invite or []}
        for key, value in (("name", name), ("alias", alias), ("topic", topic)):
            if value is not None:
                body[key] = value
        return str((await self.request("POST", "/api/v1/rooms", json=body))["room_id"])

    async def join(self, room: str) -> str:
        return str((await self.request("POST", f"/api/v1/rooms/{_quote(room)}/join"))["room_id"])

    async def leave(self, room: str) -> None:
        await self.request("POST", f"/api/v1/rooms/{_quote(room)}/leave")

    async def invite(self, room: str, user_id: str) -> str:
        result = await self.request("POST", f"/api/v1/rooms/{_quote(room)}/invite", json={"user_id": user_id})
        return str(result["event_id"])

    async def rooms(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/api/v1/rooms"))["rooms"])

    async def public_rooms(self, *, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"type": kind} if kind else None
        return list((await self.request("GET", "/api/v1/rooms/public", params=params))["rooms"])

    async def open_dm(self, user_id: str) -> str:
        return str((await self.request("POST", "/api/v1/dms", json={"user_id": user_id}))["room_id"])

    async def resolve_alias(self, alias: str) -> str:
        return str((await self.request("GET", f"/api/v1/directory/{_quote(alias)}"))["room_id"])

    # messages
    async def send(
        self, room: str, body: str, *, msgtype: str = "m.text", txn_id: str | None = None, **fields: Any
    ) -> str:
        payload = {"txn_id": txn_id or uuid.uuid4().hex, "body": body, "msgtype": msgtype, **fields}
        return str(
            (await self.request("POST", f"/api/v1/rooms/{_quote(room)}/messages", json=payload))["event_id"]
        )

    async def history(
        self, room: str, *, limit: int = 50, direction: str = "b", from_token: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "dir": direction}
        if from_token:
            params["from"] = from_token
        result: dict[str, Any] = await self.request(
            "GET", f"/api/v1/rooms/{_quote(room)}/messages", params=params
        )
        return result


def _quote(value: str) -> str:
    """Percent-encode a room id, alias or event id for a path segment (`#` and `/` included)."""
    return quote(value, safe="!@:$")
