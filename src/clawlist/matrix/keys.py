"""Matrix façade: end-to-end encryption is not offered. The key endpoints answer validly and empty
(so a client that probes them carries on unencrypted), to-device messages are accepted and
dropped, and there is no key backup.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from clawlist.core.errors import not_found
from clawlist.matrix.deps import CLIENT_V3, MatrixActorDep, json_object

router = APIRouter()


@router.post(f"{CLIENT_V3}/keys/upload")
async def upload_keys(request: Request, _actor: MatrixActorDep) -> dict[str, Any]:
    await json_object(request)
    return {"one_time_key_counts": {}}


@router.post(f"{CLIENT_V3}/keys/query")
async def query_keys(request: Request, _actor: MatrixActorDep) -> dict[str, Any]:
    await json_object(request)
    return {"device_keys": {}, "failures": {}}


@router.post(f"{CLIENT_V3}/keys/claim")
async def claim_keys(request: Request, _actor: MatrixActorDep) -> dict[str, Any]:
    await json_object(request)
    return {"one_time_keys": {}, "failures": {}}


@router.get(f"{CLIENT_V3}/keys/changes")
async def key_changes(_actor: MatrixActorDep) -> dict[str, Any]:
    return {"changed": [], "left": []}


@router.put(f"{CLIENT_V3}/sendToDevice/{{event_type}}/{{txn_id}}")
async def send_to_device(
    event_type: str, txn_id: str, request: Request, _actor: MatrixActorDep
) -> dict[str, Any]:
    await json_object(request)
    return {}


@router.get(f"{CLIENT_V3}/room_keys/version")
async def room_keys_version(_actor: MatrixActorDep) -> dict[str, Any]:
    raise not_found("no key backup: end-to-end encryption is not supported")
