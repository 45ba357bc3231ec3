"""Matrix façade: the content repository (upload, download, thumbnail, config).

- `POST /_matrix/media/v3/upload` streams the body to disk (limit `media_max_upload_bytes`; the
  body-size middleware lets this path through at that limit instead of `max_body_bytes`).
- Downloads and thumbnails: the authenticated `/_matrix/client/v1/media/...` endpoints, and the
  legacy `/_matrix/media/v3/...` ones, which are served without a token (Synapse's legacy default
  before its "authenticated media" freeze: media ids are 144 random bits, unguessable; clients such
  as matrix-nio still use the legacy paths).
- A thumbnail is the original file, for the image types browsers show (no resizing).
- Files are served with the type decided at upload (`core.media_types`): anything not on the inline
  list leaves as `application/octet-stream` with `Content-Disposition: attachment`, and every
  response carries `X-Content-Type-Options: nosniff` and a sandboxing Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse

from clawlist.actions import media
from clawlist.core import media_types
from clawlist.core.errors import ClawlistError, bad_request
from clawlist.matrix.deps import CLIENT_V1, MEDIA_V3, MatrixActorDep, ServicesDep

router = APIRouter()

MEDIA_V1 = f"{CLIENT_V1}/media"
MEDIA_R0 = "/_matrix/media/r0"
THUMBNAIL_METHODS = ("crop", "scale")
MAX_THUMBNAIL_SIDE = 10_000


async def upload(request: Request, svc: ServicesDep, actor: MatrixActorDep) -> dict[str, str]:
    filename = request.query_params.get("filename")

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in request.stream():
                yield chunk
        except ClientDisconnect:
            # Nobody is left to answer; the action removes the partial file. Not a server error.
            raise ClawlistError(400, "M_UNKNOWN", "the client went away during the upload") from None

    stored = await media.upload(
        svc,
        actor,
        chunks(),
        declared_type=request.headers.get("content-type"),
        filename=filename,
    )
    return {"content_uri": stored.content_uri}


def _config(svc: ServicesDep) -> dict[str, int]:
    return {"m.upload.size": svc.settings.media_max_upload_bytes}


async def config_legacy(svc: ServicesDep, _actor: MatrixActorDep) -> dict[str, int]:
    return _config(svc)


@router.get(f"{MEDIA_V1}/config")
async def config_v1(svc: ServicesDep, _actor: MatrixActorDep) -> dict[str, int]:
    return _config(svc)


async def _serve(svc: ServicesDep, server_name: str, media_id: str, file_name: str | None) -> FileResponse:
    stored = await media.lookup(svc, server_name, media_id)
    headers = media_types.served_headers(stored.content_type, file_name or stored.upload_name)
    return FileResponse(stored.path, headers=headers)


# -- downloads: legacy (no token) and authenticated ----------------------------------------------


async def download_legacy(svc: ServicesDep, server_name: str, media_id: str) -> FileResponse:
    return await _serve(svc, server_name, media_id, None)


async def download_legacy_named(
    svc: ServicesDep, server_name: str, media_id: str, file_name: str
) -> FileResponse:
    return await _serve(svc, server_name, media_id, file_name)


@router.get(f"{MEDIA_V1}/download/{{server_name}}/{{media_id}}")
async def download_v1(
    svc: ServicesDep, _actor: MatrixActorDep, server_name: str, media_id: str
) -> FileResponse:
    return await _serve(svc, server_name, media_id, None)


@router.get(f"{MEDIA_V1}/download/{{server_name}}/{{media_id}}/{{file_name}}")
async def download_v1_named(
    svc: ServicesDep, _actor: MatrixActorDep, server_name: str, media_id: str, file_name: str
) -> FileResponse:
    return await _serve(svc, server_name, media_id, file_name)


# -- thumbnails: the original image -------------------------------------------------------------


def _dimension(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        raise bad_request(f"missing query parameter '{name}'", "M_MISSING_PARAM")
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"'{name}' must be an integer") from None
    if not 0 < value <= MAX_THUMBNAIL_SIDE:
        raise bad_request(f"'{name}' must be between 1 and {MAX_THUMBNAIL_SIDE}")
    return value


async def _thumbnail(request: Request, svc: ServicesDep, server_name: str, media_id: str) -> FileResponse:
    _dimension(request, "width")
    _dimension(request, "height")
    method = request.query_params.get("method", "scale")
    if method not in THUMBNAIL_METHODS:
        raise bad_request("'method' must be 'crop' or 'scale'")
    stored = await media.lookup(svc, server_name, media_id)
    if stored.content_type not in media_types.THUMBNAILABLE:
        raise ClawlistError(400, "M_UNKNOWN", f"cannot make a thumbnail of {stored.content_type}")
    headers = media_types.served_headers(stored.content_type, None)
    return FileResponse(stored.path, headers=headers)


async def thumbnail_legacy(
    request: Request, svc: ServicesDep, server_name: str, media_id: str
) -> FileResponse:
    return await _thumbnail(request, svc, server_name, media_id)


@router.get(f"{MEDIA_V1}/thumbnail/{{server_name}}/{{media_id}}")
async def thumbnail_v1(
    request: Request, svc: ServicesDep, _actor: MatrixActorDep, server_name: str, media_id: str
) -> FileResponse:
    return await _thumbnail(request, svc, server_name, media_id)


# The legacy prefix, and its older r0 spelling (still used by some bots), share the handlers.
for _prefix in (MEDIA_V3, MEDIA_R0):
    router.add_api_route(f"{_prefix}/upload", upload, methods=["POST"])
    router.add_api_route(f"{_prefix}/config", config_legacy, methods=["GET"])
    router.add_api_route(f"{_prefix}/download/{{server_name}}/{{media_id}}", download_legacy, methods=["GET"])
    router.add_api_route(
        f"{_prefix}/download/{{server_name}}/{{media_id}}/{{file_name}}",
        download_legacy_named,
        methods=["GET"],
    )
    router.add_api_route(
        f"{_prefix}/thumbnail/{{server_name}}/{{media_id}}", thumbnail_legacy, methods=["GET"]
    )
