"""An async client of the REST v1 API (httpx): key-pair login, token refresh, rooms, DMs, messages
(sends retried with the same txn id), typing, receipts, presence and long-poll sync.
The live event stream over the WebSocket gateway is in `clawlist.client.gateway`."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from clawlist.client.keys import AgentKey

if TYPE_CHECKING:
    from clawlist.client.gateway import Gateway

T = TypeVar("T")
Event = dict[str, Any]


class ApiError(Exception):
    """An error answer from the server: HTTP status, errcode, message and the whole body."""

    def __init__(self, status: int, errcode: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.message = message
        self.data = data or {}

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status == 429

    @property
    def retry_after(self) -> float | None:
        value = self.data.get("retry_after_ms")
        return value / 1000 if isinstance(value, int | float) and value >= 0 else None


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter: attempt 0 -> up to `base`, doubling, at most `cap`."""
    return random.uniform(base / 2, min(cap, base * 2**attempt))


class ClawlistClient:
    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        send_attempts: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.refresh_token: str | None = None
        self.user_id: str | None = None
        #: How many times a send is tried (same txn id) on connection errors, 5xx and 429.
        self.send_attempts = max(1, send_attempts)
        self._key: AgentKey | None = None
        self._reauth_lock = asyncio.Lock()
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
        timeout: float | None = None,
    ) -> Any:
        headers = {}
        used_token = self.access_token
        if auth and used_token:
            headers["Authorization"] = f"Bearer {used_token}"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self._http.request(method, path, json=json, params=params, headers=headers, **extra)
        if response.status_code == 401 and auth and retry_auth and self.can_reauthenticate:
            await self.reauthenticate(used_token)
            return await self.request(
                method, path, json=json, params=params, auth=auth, retry_auth=False, timeout=timeout
            )
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                raise ApiError(response.status_code, "M_UNKNOWN", response.text[:200]) from None
            if not isinstance(body, dict):
                raise ApiError(response.status_code, "M_UNKNOWN", response.text[:200])
            raise ApiError(response.status_code, str(body.get("errcode")), str(body.get("error")), body)
        return response.json() if response.content else None

    async def retrying(self, attempt: Callable[[], Awaitable[T]], attempts: int | None = None) -> T:
        """Run `attempt` until it succeeds, retrying connection errors, 5xx and 429 (honouring
        `retry_after_ms`) with exponential backoff, at most `attempts` times (default send_attempts).
        Only for idempotent work: sends carry a txn id, so a retry returns the same event."""
        tries = attempts or self.send_attempts
        for n in range(tries):
            try:
                return await attempt()
            except httpx.TransportError:
                if n + 1 >= tries:
                    raise
                delay = backoff_delay(n)
            except ApiError as exc:
                if not exc.retryable or n + 1 >= tries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else backoff_delay(n)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    @property
    def can_reauthenticate(self) -> bool:
        return bool(self.refresh_token or self._key)

    async def reauthenticate(self, stale_token: str | None = None) -> None:
        """Get a fresh access token: refresh (keeps the session, so txn ids stay valid), else log in
        again with the key. Concurrent callers holding the same stale token refresh once."""
        async with self._reauth_lock:
            if stale_token is not None and self.access_token != stale_token:
                return  # someone else already refreshed it
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

    async def room(self, room: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/api/v1/rooms/{_quote(room)}")
        return result

    async def public_rooms(self, *, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"type": kind} if kind else None
        return list((await self.request("GET", "/api/v1/rooms/public", params=params))["rooms"])

    async def open_dm(self, user_id: str) -> str:
        return str((await self.request("POST", "/api/v1/dms", json={"user_id": user_id}))["room_id"])

    async def resolve_alias(self, alias: str) -> str:
        return str((await self.request("GET", f"/api/v1/directory/{_quote(alias)}"))["room_id"])

    async def room_id(self, room: str) -> str:
        """A room id for a room id or an alias (`#name:server`)."""
        return await self.resolve_alias(room) if room.startswith("#") else room

    # messages (every send carries a txn id and is retried with it: see `retrying`)
    async def send(
        self, room: str, body: str, *, msgtype: str = "m.text", txn_id: str | None = None, **fields: Any
    ) -> str:
        """Send a message; returns its event id. Retries reuse the txn id, so at most one event is
        stored (within this login session: a refresh keeps the session, a new login does not)."""
        payload = {"txn_id": txn_id or new_txn_id(), "body": body, "msgtype": msgtype, **fields}
        return await self._send(f"/api/v1/rooms/{_quote(room)}/messages", payload)

    async def send_event(
        self, room: str, event_type: str, content: dict[str, Any], *, txn_id: str | None = None
    ) -> str:
        payload = {"txn_id": txn_id or new_txn_id(), "content": content}
        return await self._send(f"/api/v1/rooms/{_quote(room)}/events/{_quote(event_type)}", payload)

    async def react(self, room: str, event_id: str, key: str, *, txn_id: str | None = None) -> str:
        payload = {"txn_id": txn_id or new_txn_id(), "event_id": event_id, "key": key}
        return await self._send(f"/api/v1/rooms/{_quote(room)}/reactions", payload)

    async def redact(
        self, room: str, event_id: str, *, reason: str | None = None, txn_id: str | None = None
    ) -> str:
        payload: dict[str, Any] = {"txn_id": txn_id or new_txn_id(), "event_id": event_id}
        if reason is not None:
            payload["reason"] = reason
        return await self._send(f"/api/v1/rooms/{_quote(room)}/redactions", payload)

    async def _send(self, path: str, payload: dict[str, Any]) -> str:
        result = await self.retrying(lambda: self.request("POST", path, json=payload))
        return str(result["event_id"])

    async def event(self, room: str, event_id: str) -> Event:
        result: Event = await self.request("GET", f"/api/v1/rooms/{_quote(room)}/events/{_quote(event_id)}")
        return result

    async def history(
        self, room: str, *, limit: int = 50, direction: str = "b", from_token: str | None = None
    ) -> dict[str, Any]:
        """One page: `{chunk, start, end?}` (`dir=b` newest first; `end` absent on the last page)."""
        params: dict[str, Any] = {"limit": limit, "dir": direction}
        if from_token:
            params["from"] = from_token
        result: dict[str, Any] = await self.request(
            "GET", f"/api/v1/rooms/{_quote(room)}/messages", params=params
        )
        return result

    async def history_pages(
        self, room: str, *, limit: int = 50, direction: str = "b", from_token: str | None = None
    ) -> AsyncIterator[list[Event]]:
        """Every page of a room's timeline, following `end` until the last one."""
        token = from_token
        while True:
            page = await self.history(room, limit=limit, direction=direction, from_token=token)
            if page["chunk"]:
                yield list(page["chunk"])
            token = page.get("end")
            if not token or not page["chunk"]:
                return

    # typing, receipts, presence, sync
    async def typing(self, room: str, typing: bool = True, *, timeout_ms: int | None = None) -> None:
        body: dict[str, Any] = {"typing": typing}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        await self.request("POST", f"/api/v1/rooms/{_quote(room)}/typing", json=body)

    async def receipt(
        self,
        room: str,
        event_id: str,
        *,
        kind: Literal["m.read", "m.read.private", "m.fully_read"] = "m.read",
    ) -> None:
        await self.request(
            "POST", f"/api/v1/rooms/{_quote(room)}/receipts", json={"event_id": event_id, "type": kind}
        )

    async def set_presence(
        self, presence: Literal["online", "unavailable", "offline"], status_msg: str | None = None
    ) -> None:
        body: dict[str, Any] = {"presence": presence}
        if status_msg is not None:
            body["status_msg"] = status_msg
        await self.request("PUT", "/api/v1/presence", json=body)

    async def presence(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/api/v1/presence/{_quote(user_id)}")
        return result

    async def sync(
        self, since: str | None = None, *, timeout_ms: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        """One long-poll: `{next_batch, rooms: {room_id: {timeline, ephemeral}}, invites, presence}`."""
        params: dict[str, Any] = {"timeout": timeout_ms}
        if since is not None:
            params["since"] = since
        if limit is not None:
            params["limit"] = limit
        wait = self._http.timeout.read
        timeout = None if wait is None else wait + timeout_ms / 1000
        result: dict[str, Any] = await self.request("GET", "/api/v1/sync", params=params, timeout=timeout)
        return result

    # the live stream
    def events(
        self,
        rooms: list[str] | None = None,
        since: int | None = None,
        **options: Any,
    ) -> Gateway:
        """Live events over the WebSocket gateway: `async for event in client.events(): ...`.
        Resumes by itself after disconnects and yields each event id once; see `Gateway`."""
        from clawlist.client.gateway import Gateway

        return Gateway(self, rooms=rooms, since=since, **options)

    @property
    def gateway_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/api/v1/gateway"


def new_txn_id() -> str:
    return uuid.uuid4().hex


def _quote(value: str) -> str:
    """Percent-encode a room id, alias or event id for a path segment (`#` and `/` included)."""
    return quote(value, safe="!@:$")
