"""Content-type decisions for uploads (core.media_types): sniffing, and what may be shown inline."""

from __future__ import annotations

import pytest

from clawlist.core.media_types import OCTET_STREAM, decide_type, served_headers, sniff


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF89a..", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x18ftypisom", "video/mp4"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b"%PDF-1.4", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b\x08", "application/gzip"),
        (b"OggS", "audio/ogg"),
        (b"hello", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize(
    ("head", "declared", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n", "text/html", "image/png"),  # the bytes win
        (b"<html>", "text/html", OCTET_STREAM),
        (b"<HTML>", "text/plain", OCTET_STREAM),
        (b"  <svg/onload=x>", "image/svg+xml", OCTET_STREAM),
        (b"\xff\xfe<\x00h\x00t\x00m\x00l\x00>\x00", "text/plain", OCTET_STREAM),  # UTF-16
        (b"hello", "text/plain; charset=latin-1", "text/plain"),
        (b'{"a": 1}', "Application/JSON", "application/json"),
        (b"function(){}", "application/javascript", OCTET_STREAM),
        (b"x", "text/html", OCTET_STREAM),
        (b"x", None, OCTET_STREAM),
        (b"x", "not a type", OCTET_STREAM),
        (b"x", "text/plain\r\nX: y", OCTET_STREAM),  # not a valid type: not trusted
    ],
)
def test_decide_type(head: bytes, declared: str | None, kind: str) -> None:
    assert decide_type(head, declared) == kind


def test_served_headers() -> None:
    h = served_headers("image/png", "a.png")
    assert h["content-type"] == "image/png"
    assert h["content-disposition"] == 'inline; filename="a.png"'
    h = served_headers("application/pdf", 'evil"\r\nname.pdf')
    assert h["content-type"] == OCTET_STREAM
    assert h["content-disposition"].startswith("attachment; filename*=utf-8''")
    assert "\r" not in h["content-disposition"] and '"' not in h["content-disposition"]
    h = served_headers("text/html", None)
    assert h["content-type"] == OCTET_STREAM and h["content-disposition"] == "attachment"
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-security-policy"].startswith("sandbox; default-src 'none'")
