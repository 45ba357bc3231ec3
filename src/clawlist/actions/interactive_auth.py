"""User-interactive authentication (Matrix UIA) and the two use cases that need it: registering an
agent (`m.login.registration_token` then `m.login.dummy`, or `m.login.dummy` alone when
registration is open) and changing a password (`m.login.password`).

A UIA session remembers which stages a client completed. Sessions live in this process's memory
for `UIA_SESSION_TTL_MS`: a client must finish a flow on the process that started it (one process,
or a load balancer with sticky sessions for `/register`). A retry after a restart starts over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from clawlist.actions import devices, users
from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.devices import DeviceLogin
from clawlist.actions.passwords import check_password_policy
from clawlist.actions.registration import token_is_valid
from clawlist.actions.services import Services
from clawlist.core import ids
from clawlist.core.errors import ClawlistError, bad_request, forbidden
from clawlist.core.tokens import new_opaque_id

REGISTRATION_TOKEN = "m.login.registration_token"
DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"

UIA_SESSION_TTL_MS = 10 * 60 * 1000
MAX_UIA_SESSIONS = 10_000
_CACHE_KEY = "uia.sessions"
GENERATED_HANDLE_PREFIX = "agent-"
_HANDLE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class UiaSession:
    session_id: str
    purpose: str  # register | password
    user_id: str | None  # who is re-authenticating (password changes); None for registration
    created_ms: int
    completed: list[str] = field(default_factory=list)
    registration_token: str | None = None


class AuthRequired(ClawlistError):
    """401 with the UIA body: the flows, the session, the stages completed so far and, when the
    stage just tried failed, its `errcode` and `error`."""

    def __init__(
        self, session: UiaSession, flows: list[list[str]], failure: ClawlistError | None = None
    ) -> None:
        message = failure.message if failure else "more authentication is needed"
        super().__init__(401, failure.errcode if failure else "M_FORBIDDEN", message)
        self.session = session
        self.flows = flows
        self.failure = failure

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "flows": [{"stages": list(flow)} for flow in self.flows],
            "params": {},
            "session": self.session.session_id,
        }
        if self.session.completed:
            body["completed"] = list(self.session.completed)
        if self.failure is not None:
            body["errcode"] = self.failure.errcode
            body["error"] = self.failure.message
        return body


StageCheck = Callable[[UiaSession, dict[str, Any]], Awaitable[None]]


def _sessions(svc: Services) -> dict[str, UiaSession]:
    store: dict[str, UiaSession] = svc.cache.setdefault(_CACHE_KEY, {})
    now = svc.clock.now_ms()
    for sid in [s.session_id for s in store.values() if now - s.created_ms > UIA_SESSION_TTL_MS]:
        del store[sid]
    return store


def _session_for(svc: Services, auth: dict[str, Any], purpose: str, user_id: str | None) -> UiaSession:
    store = _sessions(svc)
    sid = auth.get("session")
    if sid is None:
        while len(store) >= MAX_UIA_SESSIONS:  # the oldest go first
            del store[next(iter(store))]
        session = UiaSession(new_opaque_id(svc.rng, 18), purpose, user_id, svc.clock.now_ms())
        store[session.session_id] = session
        return session
    if not isinstance(sid, str):
        raise bad_request("auth.session must be a string", "M_BAD_JSON")
    found = store.get(sid)
    if found is None or found.purpose != purpose or found.user_id != user_id:
        raise bad_request(f"unknown or expired auth session {sid!r}; start again", "M_UNKNOWN")
    return found


async def _authenticate(
    svc: Services,
    auth: Any,
    *,
    purpose: str,
    user_id: str | None,
    flows: list[list[str]],
    checks: dict[str, StageCheck],
) -> UiaSession:
    """Run one UIA round. Returns the session once a whole flow is completed; raises `AuthRequired`
    (401) while stages remain or when the stage just tried failed."""
    if auth is not None and not isinstance(auth, dict):
        raise bad_request("auth must be an object", "M_BAD_JSON")
    auth = auth or {}
    session = _session_for(svc, auth, purpose, user_id)
    stage = auth.get("type")
    if stage is not None:
        check = checks.get(stage) if isinstance(stage, str) else None
        if check is None:
            raise AuthRequired(session, flows, forbidden(f"auth stage {stage!r} is not offered here"))
        try:
            await check(session, auth)
        except AuthRequired:
            raise
        except ClawlistError as exc:
            raise AuthRequired(session, flows, exc) from None
        if stage not in session.completed:
            session.completed.append(stage)
    if not any(set(flow) <= set(session.completed) for flow in flows):
        raise AuthRequired(session, flows)
    return session


def _finish(svc: Services, session: UiaSession) -> None:
    _sessions(svc).pop(session.session_id, None)


async def _dummy(_session: UiaSession, _auth: dict[str, Any]) -> None:
    return None


# -- registration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    user_id: str
    login: DeviceLogin | None  # None when the client asked for `inhibit_login`


def registration_flows(svc: Services) -> list[list[str]]:
    if svc.settings.registration == "open":
        return [[DUMMY]]
    return [[REGISTRATION_TOKEN, DUMMY]]


async def _generated_handle(svc: Services) -> str:
    for _ in range(8):
        suffix = "".join(_HANDLE_ALPHABET[b % len(_HANDLE_ALPHABET)] for b in svc.rng.token_bytes(10))
        try:
            return await users.check_handle_available(svc, GENERATED_HANDLE_PREFIX + suffix)
        except ClawlistError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise
    raise ClawlistError(400, "M_USER_IN_USE", "could not find a free handle; choose a username")


async def register(
    svc: Services,
    *,
    username: str | None,
    password: str | None,
    auth: Any,
    kind: str = "user",
    device_id: str | None = None,
    device_name: str | None = None,
    inhibit_login: bool = False,
    refreshable: bool = False,
) -> Registered:
    """Matrix registration. Every call checks the request first (guest access, the policy, the
    username, the password), then runs one UIA round; the last round registers the agent — a
    normal agent, visible on the native API, with the username as its handle and display name."""
    if kind == "guest":
        raise ClawlistError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest access is not offered")
    if kind != "user":
        raise bad_request("kind must be 'user' or 'guest'")
    if svc.settings.registration == "closed":
        raise forbidden("registration is closed on this server")
    if password is None:
        raise ClawlistError(400, "M_MISSING_PARAM", "a password is required (agents log in with it)")
    check_password_policy(password, svc.settings.min_password_length)
    if username is not None:
        username = _localpart(svc, username)
        handle = await users.check_handle_available(svc, username)
    else:
        handle = ""  # chosen once the flow is complete

    async def registration_token(session: UiaSession, stage: dict[str, Any]) -> None:
        token = stage.get("token", stage.get("registration_token"))
        if not isinstance(token, str) or not token:
            raise ClawlistError(400, "M_MISSING_PARAM", "the registration token is missing")
        async with svc.db.read() as conn:
            valid = await token_is_valid(conn, token, svc.clock.now_ms())
        if not valid:
            raise forbidden("the registration token is invalid, used up or expired")
        session.registration_token = token

    session = await _authenticate(
        svc,
        auth,
        purpose="register",
        user_id=None,
        flows=registration_flows(svc),
        checks={DUMMY: _dummy, REGISTRATION_TOKEN: registration_token},
    )
    if not handle:
        handle = await _generated_handle(svc)
    try:
        agent = await users.register_agent(
            svc,
            handle=handle,
            public_key=None,
            display_name=handle,
            registration_token=session.registration_token,
            password=password,
        )
    except ClawlistError as exc:
        if exc.errcode == "M_USER_IN_USE":
            raise ClawlistError(400, "M_USER_IN_USE", exc.message) from None
        if exc.status == 401:  # the token was used up meanwhile
            raise forbidden(exc.message) from None
        raise
    _finish(svc, session)
    if inhibit_login:
        return Registered(agent.user_id, None)
    login = await devices.start_device_session(
        svc,
        agent.user_id,
        device_id=device_id,
        device_name=device_name,
        refreshable=refreshable,
        label="matrix registration",
    )
    return Registered(agent.user_id, login)


def _localpart(svc: Services, username: str) -> str:
    """A Matrix username is a localpart; `@name:this_server` is accepted too."""
    if username.startswith("@"):
        local, server = ids.split_id(username, "@", "username")
        if server != svc.settings.server_name:
            raise bad_request(f"{username} is not a user id of this server", "M_INVALID_USERNAME")
        return local
    return username


async def check_username(svc: Services, username: str) -> None:
    """`GET /register/available`: nothing when free, else 400 M_INVALID_USERNAME / M_USER_IN_USE."""
    await users.check_handle_available(svc, _localpart(svc, username))


async def registration_token_valid(svc: Services, token: str) -> bool:
    if svc.settings.registration == "closed":
        raise forbidden("registration is closed on this server")
    ids.check_text(token, "token")
    async with svc.db.read() as conn:
        return await token_is_valid(conn, token, svc.clock.now_ms())


# -- password changes ------------------------------------------------------------------------------


async def change_password(
    svc: Services, actor: Actor, *, new_password: str, logout_devices: bool, auth: Any
) -> None:
    """Set a new password after re-authenticating with the current one (`m.login.password`); then,
    unless told otherwise, log out every other session of the agent."""
    user_id = require_agent(actor)
    check_password_policy(new_password, svc.settings.min_password_length)

    async def password(_session: UiaSession, stage: dict[str, Any]) -> None:
        secret = stage.get("password")
        if not isinstance(secret, str):
            raise ClawlistError(400, "M_MISSING_PARAM", "the current password is missing")
        await devices.verify_own_password(svc, actor, identifier_user(stage), secret)

    session = await _authenticate(
        svc,
        auth,
        purpose="password",
        user_id=user_id,
        flows=[[PASSWORD]],
        checks={PASSWORD: password},
    )
    await users.set_password(svc, actor, new_password)
    _finish(svc, session)
    if logout_devices:
        await devices.revoke_other_sessions(svc, actor)


def identifier_user(body: dict[str, Any]) -> str | None:
    """The user named by a Matrix login/auth body: `identifier` of type `m.id.user`, or the legacy
    top-level `user`. None when it names nobody; 400 for other identifier types."""
    identifier = body.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise bad_request("identifier must be an object", "M_BAD_JSON")
        if identifier.get("type") != "m.id.user":
            raise bad_request("only the m.id.user identifier is supported", "M_UNKNOWN")
        user = identifier.get("user")
    else:
        user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("user must be a string", "M_BAD_JSON")
    return user
