"""Uploaded files (the Matrix content repository): store, look up.

The bytes live under `data_dir/media/<id[:2]>/<id[2:4]>/<id>`; one row per file in table `media`
(uploader, decided content type, size, sha256, the uploader's file name). An upload streams to a
temporary file in `data_dir/media/tmp/` and is renamed into place only when complete, within the
size limit and recorded, so a reader never sees half a file. Media ids are random url-safe strings;
every id from a request is checked against their alphabet before it names a path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from clawlist.actions.actor import Actor, require_agent
from clawlist.actions.services import Services
from clawlist.core import media_types
from clawlist.core.errors import not_found, too_large
from clawlist.storage.tables import media

MEDIA_ID_BYTES = 18  # 24 url-safe characters
MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass(frozen=True)
class StoredMedia:
    media_id: str
    content_uri: str
    content_type: str
    size: int
    sha256: str
    upload_name: str | None
    uploader: str
    path: Path


def media_root(svc: Services) -> Path:
    return (svc.settings.data_dir / "media").resolve()


def content_uri(svc: Services, media_id: str) -> str:
    return f"mxc://{svc.settings.server_name}/{media_id}"


def _file_path(root: Path, media_id: str) -> Path:
    """Where a (validated) media id lives; refuses anything that would leave `root`."""
    if not MEDIA_ID_RE.fullmatch(media_id):
        raise not_found("no such media")
    path = (root / media_id[:2] / media_id[2:4] / media_id).resolve()
    if root not in path.parents:
        raise not_found("no such media")
    return path


def _new_media_id(svc: Services) -> str:
    return base64.urlsafe_b64encode(svc.rng.token_bytes(MEDIA_ID_BYTES)).decode().rstrip("=")


def _open_temp(tmp_dir: Path, name: str) -> int:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return os.open(tmp_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _finish(fd: int, temp: Path, final: Path) -> None:
    os.fsync(fd)
    os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)


async def upload(
    svc: Services,
    actor: Actor,
    body: AsyncIterator[bytes],
    *,
    declared_type: str | None,
    filename: str | None,
) -> StoredMedia:
    """Store the streamed `body`; 413 M_TOO_LARGE past `media_max_upload_bytes`."""
    uploader = require_agent(actor)
    limit = svc.settings.media_max_upload_bytes
    root = media_root(svc)
    media_id = _new_media_id(svc)
    final = _file_path(root, media_id)
    temp = root / "tmp" / f"{media_id}.part"
    fd: int | None = await asyncio.to_thread(_open_temp, temp.parent, temp.name)
    placed = False
    try:
        hasher = hashlib.sha256()
        head = b""
        size = 0
        async for chunk in body:
            if not chunk:
                continue
            size += len(chunk)
            if size > limit:
                raise too_large(f"the file is larger than the upload limit of {limit} bytes")
            if len(head) < media_types.SNIFF_BYTES:
                head += chunk[: media_types.SNIFF_BYTES - len(head)]
            hasher.update(chunk)
            assert fd is not None
            await asyncio.to_thread(_write_all, fd, chunk)
        assert fd is not None
        await asyncio.to_thread(_finish, fd, temp, final)
        fd = None
        placed = True
        stored = StoredMedia(
            media_id=media_id,
            content_uri=content_uri(svc, media_id),
            content_type=media_types.decide_type(head, declared_type),
            size=size,
            sha256=hasher.hexdigest(),
            upload_name=media_types.clean_upload_name(filename),
            uploader=uploader,
            path=final,
        )
        async with svc.db.write() as conn:
            await conn.execute(
                media.insert().values(
                    media_id=media_id,
                    uploader=uploader,
                    content_type=stored.content_type,
                    size=size,
                    upload_name=stored.upload_name,
                    sha256=stored.sha256,
                    created_ts=svc.clock.now_ms(),
                )
            )
        return stored
    except BaseException:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        if placed:
            with contextlib.suppress(OSError):
                final.unlink()
        raise


async def lookup(svc: Services, server_name: str, media_id: str) -> StoredMedia:
    """The stored file behind `mxc://server_name/media_id`; 404 M_NOT_FOUND for anything else
    (another server's media, a malformed or unknown id, a file gone from disk)."""
    if server_name != svc.settings.server_name or not MEDIA_ID_RE.fullmatch(media_id):
        raise not_found("no such media")
    path = _file_path(media_root(svc), media_id)
    async with svc.db.read() as conn:
        row = (await conn.execute(select(media).where(media.c.media_id == media_id))).first()
    if row is None or not await asyncio.to_thread(path.is_file):
        raise not_found("no such media")
    return StoredMedia(
        media_id=media_id,
        content_uri=content_uri(svc, media_id),
        content_type=row.content_type,
        size=int(row.size),
        sha256=row.sha256,
        upload_name=row.upload_name,
        uploader=row.uploader,
        path=path,
    )
