"""What an uploaded file is, and how it may be served: pure rules, no I/O.

The server decides a file's type from its first bytes (a small magic-number table), not from what the
uploader claims; a claim is only kept for harmless types the bytes cannot tell apart (plain text,
JSON, CSV, audio). Anything that a browser could execute (HTML, SVG, XML, JavaScript) or that is not
recognised is stored and served as `application/octet-stream`, always as an attachment.
"""

from __future__ import annotations

import re
from urllib.parse import quote

OCTET_STREAM = "application/octet-stream"
SNIFF_BYTES = 512  # how much of the head the sniffer looks at

# (offset, magic, type): checked in order, the first match wins.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"BM", "image/bmp"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),  # an empty archive
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\x1a\x45\xdf\xa3", "video/webm"),  # Matroska/WebM (EBML)
)

# RIFF containers: bytes 8..12 name the format.
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}

# ISO base media (mp4 family): bytes 4..8 are "ftyp", 8..12 the major brand.
_FTYP_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
}

# Markers of content a browser could run or render as a document; searched, case-insensitively, in
# the head (after leading whitespace and a UTF-8 byte-order mark), like browsers' own sniffers.
_ACTIVE_MARKERS = (
    b"<!doctype",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<svg",
    b"<?xml",
    b"<iframe",
    b"<object",
    b"<embed",
    b"<meta",
    b"<style",
    b"<title",
    b"<a ",
    b"<img",
    b"<div",
    b"<p>",
    b"<!--",
    b"<br",
    b"<table",
    b"<h1",
    b"<font",
    b"<b>",
)

# Declared types kept when the bytes do not say otherwise: nothing here is executable or a document
# format a browser renders with scripts.
_KEEP_DECLARED = frozenset(
    {
        "text/plain",
        "text/csv",
        "text/markdown",
        "application/json",
        "application/ld+json",
        "audio/mpeg",
        "audio/mp4",
        "audio/aac",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/wav",
        "audio/x-wav",
        "audio/flac",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
    }
)

# Types served inline (a browser may display them in place); everything else is an attachment.
INLINE_TYPES = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/mpeg",
        "audio/aac",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/wav",
        "audio/x-wav",
        "audio/flac",
    }
)

# Types a thumbnail request may answer with the original file.
THUMBNAILABLE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_UPLOAD_NAME = 255


def sniff(head: bytes) -> str | None:
    """The type the first bytes prove, or None when they prove nothing."""
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _FTYP_BRANDS.get(brand, "video/mp4")
    return None


def looks_active(head: bytes) -> bool:
    """Whether the head looks like markup a browser could render as a document or run."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip(b" \t\r\n\x0c").lower()
    # UTF-16 text with a byte-order mark: drop the zero bytes and look again.
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = head[2:].replace(b"\x00", b"").lstrip(b" \t\r\n\x0c").lower()
    return any(marker in text for marker in _ACTIVE_MARKERS)


def normalise_declared(declared: str | None) -> str | None:
    """`type/subtype` from a Content-Type header, lowercased, without parameters; None if invalid."""
    if not declared:
        return None
    value = declared.split(";", 1)[0].strip().lower()
    return value if _TYPE_RE.match(value) else None


def decide_type(head: bytes, declared: str | None) -> str:
    """The content type a file is stored and served with.

    The bytes win over the claim; a claim is kept only for harmless types the sniffer cannot prove,
    and never when the bytes look like markup. Everything else is `application/octet-stream`.
    """
    sniffed = sniff(head)
    if sniffed is not None:
        return sniffed
    claimed = normalise_declared(declared)
    if claimed in _KEEP_DECLARED and not looks_active(head):
        return claimed
    return OCTET_STREAM


def served_headers(content_type: str, filename: str | None) -> dict[str, str]:
    """Headers for serving a stored file: type, disposition and the browser-hardening headers."""
    inline = content_type in INLINE_TYPES
    media_type = content_type if inline else OCTET_STREAM
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    disposition = "inline" if inline else "attachment"
    name = clean_upload_name(filename)
    if name:
        disposition += "; " + _filename_param(name)
    return {
        "content-type": media_type,
        "content-disposition": disposition,
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox; default-src 'none'; script-src 'none'; object-src 'none'",
        "cross-origin-resource-policy": "cross-origin",
        "cache-control": "private, max-age=86400, immutable",
    }


def clean_upload_name(name: str | None) -> str | None:
    """A file name safe to store and to put in a header: no control characters, at most 255 chars."""
    if name is None:
        return None
    cleaned = _CONTROL_RE.sub("", name).strip()[:MAX_UPLOAD_NAME]
    return cleaned or None


def _filename_param(name: str) -> str:
    """`filename="..."` for plain ASCII names, RFC 5987 `filename*=utf-8''...` otherwise."""
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return "filename*=utf-8''" + quote(name, safe="")
