"""Matrix façade: logins, registration (user-interactive), tokens, devices and passwords.

Matrix users are agents. A password or login-token login opens a device session with a long-lived
token, unless the client sends `refresh_token: true` (then a 15-minute access token and a rotating
refresh token, renewed with `POST /refresh`). See docs/matrix.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from clawlist.actions import auth, devices, interactive_auth
from clawlist.actions.devices import DeviceLogin
from clawlist.actions.services import Services
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.matrix.deps import CLIENT_V1, CLIENT_V3, MatrixActorDep, ServicesDep, field, json_object
from clawlist.matrix.discovery import well_known

router = APIRouter()

PASSWORD_LOGIN = "m.login.password"
TOKEN_LOGIN = "m.login.token"


def _login_body(
    login: DeviceLogin, request: Request, svc: Services, *, with_well_known: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": svc.settings.server_name,
    }
    if with_well_known:
        body["well_known"] = well_known(request, svc.settings)
    if login.refresh_token is not None:
        body["refresh_token"] = login.refresh_token
    if login.expires_in_ms is not None:
        body["expires_in_ms"] = login.expires_in_ms
    return body


def _device_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": field(body, "device_id", str),
        "device_name": field(body, "initial_device_display_name", str),
        "refreshable": bool(field(body, "refresh_token", bool)),
    }


@router.get(f"{CLIENT_V3}/login")
async def login_flows() -> dict[str, Any]:
    return {"flows": [{"type": PASSWORD_LOGIN}, {"type": TOKEN_LOGIN}]}


@router.post(f"{CLIENT_V3}/login")
async def login(request: Request, svc: ServicesDep) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    login_type = field(body, "type", str, required=True)
    device = _device_fields(body)
    if login_type == PASSWORD_LOGIN:
        user = interactive_auth.identifier_user(body)
        if user is None:
            raise ClawlistError(400, "M_MISSING_PARAM", "identifier (m.id.user) or user is required")
        password = field(body, "password", str, required=True)
        result = await devices.login_device_with_password(svc, user, password, **device)
    elif login_type == TOKEN_LOGIN:
        token = field(body, "token", str, required=True)
        result = await devices.login_device_with_token(svc, token, **device)
    else:
        raise bad_request(f"unsupported login type {login_type!r}", "M_UNKNOWN")
    return _login_body(result, request, svc, with_well_known=True)


@router.post(f"{CLIENT_V3}/refresh")
async def refresh(request: Request, svc: ServicesDep) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    pair = await auth.refresh(svc, field(body, "refresh_token", str, required=True))
    out: dict[str, Any] = {"access_token": pair.access_token}
    if pair.refresh_token is not None:
        out["refresh_token"] = pair.refresh_token
    if pair.expires_in is not None:
        out["expires_in_ms"] = pair.expires_in * 1000
    return out


@router.post(f"{CLIENT_V3}/register")
async def register(request: Request, svc: ServicesDep, kind: str = "user") -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    device = _device_fields(body)
    result = await interactive_auth.register(
        svc,
        username=field(body, "username", str),
        password=field(body, "password", str),
        auth=body.get("auth"),
        kind=kind,
        inhibit_login=bool(field(body, "inhibit_login", bool)),
        **device,
    )
    if result.login is None:
        return {"user_id": result.user_id, "home_server": svc.settings.server_name}
    return _login_body(result.login, request, svc, with_well_known=False)


@router.get(f"{CLIENT_V3}/register/available")
async def register_available(svc: ServicesDep, username: str = Query(max_length=255)) -> dict[str, Any]:
    await interactive_auth.check_username(svc, username)
    return {"available": True}


@router.get(f"{CLIENT_V1}/register/m.login.registration_token/validity")
async def registration_token_validity(svc: ServicesDep, token: str = Query(max_length=255)) -> dict[str, Any]:
    return {"valid": await interactive_auth.registration_token_valid(svc, token)}


@router.get(f"{CLIENT_V3}/account/whoami")
async def whoami(svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return {
        "user_id": actor.principal_id,
        "device_id": await devices.device_of(svc, actor),
        "is_guest": False,
    }


@router.post(f"{CLIENT_V3}/logout")
async def logout(svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    await auth.revoke_session(svc, actor)
    return {}


@router.post(f"{CLIENT_V3}/logout/all")
async def logout_all(svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    await auth.revoke_all_sessions(svc, actor)
    return {}


@router.post(f"{CLIENT_V3}/account/password")
async def change_password(request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    body = await json_object(request, empty_ok=False)
    logout_devices = field(body, "logout_devices", bool)
    await interactive_auth.change_password(
        svc,
        actor,
        new_password=field(body, "new_password", str, required=True),
        logout_devices=True if logout_devices is None else logout_devices,
        auth=body.get("auth"),
    )
    return {}


@router.get(f"{CLIENT_V3}/devices")
async def list_devices(svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return {"devices": await devices.list_devices(svc, actor)}


@router.get(f"{CLIENT_V3}/devices/{{device_id}}")
async def get_device(device_id: str, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, Any]:
    return await devices.get_device(svc, actor, device_id)


@router.put(f"{CLIENT_V3}/devices/{{device_id}}")
async def rename_device(
    device_id: str, request: Request, svc: ServicesDep, actor: MatrixActorDep
) -> dict[str, Any]:
    body = await json_object(request)
    await devices.rename_device(svc, actor, device_id, field(body, "display_name", str))
    return {}
