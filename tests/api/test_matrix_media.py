"""The Matrix content repository: upload, download, thumbnail, config; size limits, type sniffing,
safe serving and path traversal attempts. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawlist.app import create_app
from tests.helpers import register

UPLOAD = "/_matrix/media/v3/upload"
V3 = "/_matrix/media/v3"
V1 = "/_matrix/client/v1/media"

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


async def _upload(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, **kw: Any
) -> httpx.Response:
    params = kw.pop("params", None)
    content_type = kw.pop("content_type", "application/octet-stream")
    return await client.post(
        UPLOAD, content=data, params=params, headers={**headers, "Content-Type": content_type}
    )


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _split(uri: str) -> tuple[str, str]:
    assert uri.startswith("mxc://")
    server, media_id = uri[len("mxc://") :].split("/", 1)
    return server, media_id


async def test_upload_download_roundtrip(client, reg_token, app_env):
    alice = await register(client, "alice", reg_token)
    r = await _upload(client, alice.headers, PNG, content_type="image/png", params={"filename": "cat.png"})
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    server, media_id = _split(uri)
    assert server == "test.local"
    assert len(media_id) >= 16 and media_id.replace("-", "").replace("_", "").isalnum()

    # legacy v3 download works without a token; v1 needs one
    for url, headers in (
        (f"{V3}/download/{server}/{media_id}", {}),
        (f"{V1}/download/{server}/{media_id}", alice.headers),
    ):
        r = await client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        assert r.content == PNG
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-disposition"] == 'inline; filename="cat.png"'
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]
        assert "default-src 'none'" in r.headers["content-security-policy"]

    r = await client.get(f"{V1}/download/{server}/{media_id}")
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.get(f"{V1}/download/{server}/{media_id}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"

    # a file name in the path overrides the uploaded one; a non-ASCII name is RFC 5987-encoded
    r = await client.get(f"{V3}/download/{server}/{media_id}/other.png")
    assert r.headers["content-disposition"] == 'inline; filename="other.png"'
    r = await client.get(f"{V1}/download/{server}/{media_id}/k%C3%A4tzchen.png", headers=alice.headers)
    assert r.headers["content-disposition"] == "inline; filename*=utf-8''k%C3%A4tzchen.png"

    # the bytes are under data_dir/media, and the row records what was stored
    files = [p for p in (app_env["settings"].data_dir / "media").rglob(media_id) if p.is_file()]
    assert len(files) == 1 and files[0].read_bytes() == PNG
    assert not list((app_env["settings"].data_dir / "media" / "tmp").iterdir())
    from clawlist.actions import media

    stored = await media.lookup(app_env["services"], server, media_id)
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert (stored.size, stored.content_type, stored.uploader) == (len(PNG), "image/png", alice.user_id)
    assert stored.upload_name == "cat.png"

    # the older r0 spelling of the legacy paths works too
    r = await client.get(f"/_matrix/media/r0/download/{server}/{media_id}")
    assert r.status_code == 200 and r.content == PNG
    r = await client.post("/_matrix/media/r0/upload", content=b"r0", headers=alice.headers)
    assert r.status_code == 200 and r.json()["content_uri"].startswith("mxc://test.local/")

    # ranges work (clients resume downloads, players seek)
    r = await client.get(f"{V3}/download/{server}/{media_id}", headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and r.content == PNG[:8]


async def test_upload_needs_an_agent_token(client, reg_token):
    r = await client.post(UPLOAD, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await client.post(UPLOAD, content=b"x", params={"access_token": "bogus"})
    assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"
    # the deprecated query-parameter token works
    alice = await register(client, "alice", reg_token)
    r = await client.post(UPLOAD, content=b"hello", params={"access_token": alice.access_token})
    assert r.status_code == 200, r.text


async def test_content_type_is_sniffed_not_trusted(client, reg_token):
    alice = await register(client, "alice", reg_token)

    async def served(data: bytes, declared: str) -> httpx.Response:
        r = await _upload(client, alice.headers, data, content_type=declared)
        assert r.status_code == 200, r.text
        server, media_id = _split(r.json()["content_uri"])
        return await client.get(f"{V3}/download/{server}/{media_id}")

    # a PNG declared as HTML is served as a PNG
    r = await served(PNG, "text/html")
    assert r.headers["content-type"] == "image/png"
    # a JPEG declared as octet-stream is recognised
    r = await served(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32, "application/octet-stream")
    assert r.headers["content-type"] == "image/jpeg"
    # plain text keeps its declared type, inline
    r = await served(b"just some words", "text/plain; charset=utf-8")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-disposition"].startswith("inline")
    # a PDF is recognised, but downloaded (not shown in place)
    r = await served(b"%PDF-1.7\n...", "application/pdf")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (HTML, "text/html"),
        (HTML, "text/plain"),  # lying about HTML does not get it shown inline
        (HTML, "application/octet-stream"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
            "image/svg+xml",
        ),
        (b"<svg onload=alert(1)>", "image/png"),
        (b"alert(1)", "application/javascript"),
        (b"\xef\xbb\xbf  <html>", "text/plain"),
        (b"\x00\x01\x02 unknown", "application/x-whatever"),
    ],
)
async def test_dangerous_uploads_are_served_as_attachments(client, reg_token, data, declared):
    alice = await register(client, "alice", reg_token)
    r = await _upload(client, alice.headers, data, content_type=declared, params={"filename": "x.html"})
    assert r.status_code == 200, r.text
    server, media_id = _split(r.json()["content_uri"])
    for url, headers in (
        (f"{V3}/download/{server}/{media_id}", {}),
        (f"{V1}/download/{server}/{media_id}/page.html", alice.headers),
    ):
        r = await client.get(url, headers=headers)
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"].startswith("attachment")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    # and it has no thumbnail
    r = await client.get(f"{V3}/thumbnail/{server}/{media_id}", params={"width": 32, "height": 32})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNKNOWN"


async def test_oversized_upload_is_refused(settings_for, tmp_path):
    settings = settings_for(media_max_upload_bytes=4096)
    app = create_app(settings, announce=lambda _text: None)
    async with app.router.lifespan_context(app), _client(app) as client:
        alice = await register(client, "alice", app.state.first_start.registration_token)
        # at the limit: fine
        r = await _upload(client, alice.headers, b"a" * 4096)
        assert r.status_code == 200, r.text
        # over it, declared: refused before the body is read
        r = await _upload(client, alice.headers, b"a" * 4097)
        assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"

        # over it, chunked (no Content-Length): refused while streaming
        async def chunked():
            for _ in range(10):
                yield b"b" * 1000

        r = await client.post(UPLOAD, content=chunked(), headers=alice.headers)
        assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
        r = await client.get(f"{V1}/config", headers=alice.headers)
        assert r.json() == {"m.upload.size": 4096}
        # nothing half-written is left behind
        assert not list((settings.data_dir / "media" / "tmp").iterdir())


async def test_upload_may_exceed_the_general_body_limit(settings_for):
    settings = settings_for(max_body_bytes=2048, media_max_upload_bytes=100_000)
    app = create_app(settings, announce=lambda _text: None)
    async with app.router.lifespan_context(app), _client(app) as client:
        alice = await register(client, "alice", app.state.first_start.registration_token)
        data = bytes(range(256)) * 200  # 51200 bytes
        r = await _upload(client, alice.headers, data)
        assert r.status_code == 200, r.text
        server, media_id = _split(r.json()["content_uri"])
        r = await client.get(f"{V3}/download/{server}/{media_id}")
        assert r.content == data

        async def chunked():
            for _ in range(50):
                yield b"c" * 1000

        r = await client.post(UPLOAD, content=chunked(), headers=alice.headers)
        assert r.status_code == 200, r.text
        # other endpoints keep the general limit
        r = await client.post(
            "/api/v1/rooms", headers=alice.headers, content=b'{"name":"' + b"x" * 4000 + b'"}'
        )
        assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"


async def test_config(client, reg_token, app_env):
    alice = await register(client, "alice", reg_token)
    for url in (f"{V3}/config", f"{V1}/config"):
        r = await client.get(url, headers=alice.headers)
        assert r.status_code == 200
        assert r.json() == {"m.upload.size": app_env["settings"].media_max_upload_bytes}
        r = await client.get(url)
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"


async def test_unknown_and_malformed_media(client, reg_token):
    alice = await register(client, "alice", reg_token)
    r = await _upload(client, alice.headers, PNG, content_type="image/png")
    server, media_id = _split(r.json()["content_uri"])
    for url in (
        f"{V3}/download/{server}/AAAAAAAAAAAAAAAAAAAAAAAA",  # well formed, unknown
        f"{V3}/download/other.server/{media_id}",  # someone else's server
        f"{V3}/download/{server}/{media_id}x",
        f"{V3}/download/{server}/..",
        f"{V3}/download/{server}/..%2F..%2F..%2Fetc",
        f"{V3}/download/{server}/%2E%2E",
        f"{V3}/download/{server}/{media_id[:2]}",
        f"{V3}/download/{server}/tmp",
        f"{V3}/download/{server}/%00abcdefgh",
        f"{V3}/download/{server}/" + "a" * 300,
        f"{V3}/download/..%2F..%2F/{media_id}",
        f"{V3}/thumbnail/{server}/%2E%2E?width=1&height=1",
        f"{V1}/download/{server}/..",
    ):
        headers = alice.headers if url.startswith(V1) else {}
        r = await client.get(url, headers=headers)
        assert r.status_code in (400, 404), (url, r.status_code, r.text)
        assert r.json()["errcode"] in ("M_NOT_FOUND", "M_UNRECOGNIZED", "M_INVALID_PARAM"), (url, r.text)
        assert b"root:" not in r.content


async def test_traversal_through_the_raw_path_never_reads_outside(client, reg_token, app_env):
    """Percent-encoded dots and slashes reach the router decoded: whatever they match, no file outside
    data_dir/media is read."""
    secret = Path(app_env["settings"].data_dir) / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("top secret")
    for raw in (
        "/_matrix/media/v3/download/test.local/..%2F..%2Fsecret.txt",
        "/_matrix/media/v3/download/test.local/%2E%2E/secret.txt",
        "/_matrix/media/v3/download/test.local/%2e%2e%2f%2e%2e%2fsecret.txt/x",
        "/_matrix/media/v3/download/test.local/....%2F%2Fsecret.txt",
        "/_matrix/client/v1/media/download/test.local/%2E%2E%2F%2E%2E%2Fsecret.txt",
    ):
        r = await client.get(httpx.URL(f"http://test{raw}"))
        assert r.status_code in (400, 401, 404), (raw, r.status_code)
        assert b"top secret" not in r.content


async def test_thumbnail_returns_the_original_image(client, reg_token):
    alice = await register(client, "alice", reg_token)
    r = await _upload(client, alice.headers, PNG, content_type="image/png")
    server, media_id = _split(r.json()["content_uri"])
    q = {"width": 64, "height": 64, "method": "scale"}
    r = await client.get(f"{V3}/thumbnail/{server}/{media_id}", params=q)
    assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
    r = await client.get(
        f"{V1}/thumbnail/{server}/{media_id}", params={**q, "method": "crop"}, headers=alice.headers
    )
    assert r.status_code == 200 and r.content == PNG
    r = await client.get(f"{V1}/thumbnail/{server}/{media_id}", params=q)
    assert r.status_code == 401
    # bad parameters
    for params, errcode in (
        ({"height": 64}, "M_MISSING_PARAM"),
        ({"width": "wide", "height": 64}, "M_INVALID_PARAM"),
        ({"width": -1, "height": 64}, "M_INVALID_PARAM"),
        ({"width": 64, "height": 64, "method": "stretch"}, "M_INVALID_PARAM"),
    ):
        r = await client.get(f"{V3}/thumbnail/{server}/{media_id}", params=params)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, (params, r.text)
    r = await client.get(f"{V3}/thumbnail/{server}/AAAAAAAAAAAAAAAAAAAAAAAA", params=q)
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


async def test_upload_names_and_types_are_cleaned(client, reg_token, app_env):
    alice = await register(client, "alice", reg_token)
    r = await client.post(
        UPLOAD,
        content=b"text",
        params={"filename": "a\x00b\r\nSet-Cookie: x=y" + "z" * 400},
        headers={**alice.headers, "Content-Type": "text/plain\x7f; boundary=?"},
    )
    assert r.status_code == 200, r.text
    server, media_id = _split(r.json()["content_uri"])
    r = await client.get(f"{V3}/download/{server}/{media_id}")
    assert r.status_code == 200
    disposition = r.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "set-cookie" not in r.headers
    from clawlist.actions import media

    stored = await media.lookup(app_env["services"], server, media_id)
    assert stored.upload_name is not None and len(stored.upload_name) <= 255
    assert "\x00" not in stored.upload_name
    # an empty file is a file
    r = await _upload(client, alice.headers, b"")
    assert r.status_code == 200
    server, media_id = _split(r.json()["content_uri"])
    r = await client.get(f"{V3}/download/{server}/{media_id}")
    assert r.status_code == 200 and r.content == b""


async def test_wrong_methods_and_humans(client, app_env):
    r = await client.get(UPLOAD)
    assert r.status_code in (404, 405) and r.json()["errcode"] == "M_UNRECOGNIZED"
    # a human (observer, admin) token is not a Matrix user: no uploads
    first = app_env["first"]
    r = await client.post(
        "/api/v1/auth/password", json={"user": first.admin_email, "password": first.admin_password}
    )
    assert r.status_code == 200, r.text
    human = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await client.post(UPLOAD, content=b"x", headers=human)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
