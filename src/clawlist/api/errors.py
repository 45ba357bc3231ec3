"""Every failure leaves as `{errcode, error}` with the right status; never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawlist.api.responses import JSONBytesResponse
from clawlist.core.errors import ClawlistError

log = logging.getLogger("clawlist.api")

_STATUS_ERRCODES = {
    400: "M_BAD_JSON",
    401: "M_MISSING_TOKEN",
    403: "M_FORBIDDEN",
    404: "M_UNRECOGNIZED",
    405: "M_UNRECOGNIZED",
    413: "M_TOO_LARGE",
    415: "M_NOT_JSON",
    429: "M_LIMIT_EXCEEDED",
}


def error_response(status: int, errcode: str, message: str, **extra: Any) -> JSONBytesResponse:
    return JSONBytesResponse({"errcode": errcode, "error": message, **extra}, status_code=status)


def _describe(errors: list[Any]) -> tuple[str, str]:
    first = errors[0] if errors else {}
    kind = str(first.get("type", ""))
    # `loc` starts with where the value came from ("body", "query", "path"); only that first
    # element is the request body itself: a field may be called `body` too.
    source = list(first.get("loc", ()))
    loc = [str(p) for p in (source[1:] if source and source[0] == "body" else source)]
    where = ".".join(loc)
    if kind == "json_invalid":
        return "M_NOT_JSON", "request body is not valid JSON"
    if kind in ("model_attributes_type", "dict_type", "model_type") and not loc:
        return "M_BAD_JSON", "request body must be a JSON object"
    if kind == "missing" and not loc:
        return "M_NOT_JSON", "request body is required"
    errcode = "M_INVALID_PARAM" if first.get("loc", ("",))[0] in ("query", "path") else "M_BAD_JSON"
    if kind == "missing":
        errcode = "M_MISSING_PARAM"
    return errcode, f"{where or 'body'}: {first.get('msg', 'invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClawlistError)
    async def _clawlist_error(_request: Request, exc: ClawlistError) -> JSONBytesResponse:
        return JSONBytesResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONBytesResponse:
        errcode, message = _describe(list(exc.errors()))
        return error_response(400, errcode, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONBytesResponse:
        errcode = _STATUS_ERRCODES.get(exc.status_code, "M_UNKNOWN")
        message = "unrecognised request" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(exc.status_code, errcode, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONBytesResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "M_UNKNOWN", "internal server error")


# Paths whose bodies are streamed by their endpoint (never buffered here) under a larger limit: the
# Matrix media upload. The value names the setting that holds the limit.
STREAMED_BODY_PATHS: dict[str, str] = {
    "/_matrix/media/v3/upload": "media_max_upload_bytes",
    "/_matrix/media/r0/upload": "media_max_upload_bytes",
}


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413 M_TOO_LARGE, before anything parses them.

    The limit is `max_bytes`, except on the paths of `path_limits` (exact path -> bytes); by default
    those are `STREAMED_BODY_PATHS`, with limits read from the app's settings (`app.state.settings`).
    Bodies on those paths are not buffered: a declared Content-Length over the limit is refused at
    once, and a chunked body is counted as the endpoint reads it (the read raises M_TOO_LARGE).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits

    def _limit_for(self, scope: Scope) -> tuple[int, bool]:
        """(limit, streamed) for this request's path."""
        path = scope.get("path", "")
        if self.path_limits is not None:
            if path in self.path_limits:
                return self.path_limits[path], True
            return self.max_bytes, False
        setting = STREAMED_BODY_PATHS.get(path)
        if setting is None:
            return self.max_bytes, False
        app = scope.get("app")
        settings = getattr(getattr(app, "state", None), "settings", None)
        limit = getattr(settings, setting, None)
        return (limit if isinstance(limit, int) else self.max_bytes), True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit, streamed = self._limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "M_BAD_JSON", "invalid Content-Length")(scope, receive, send)
                    return
                if declared > limit:
                    await self._too_large(scope, receive, send, limit)
                    return
                # The HTTP parser delivers exactly the declared length, so nothing to count.
                await self.app(scope, receive, send)
                return
        if streamed:
            await self.app(scope, _counting(receive, limit), send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, "M_TOO_LARGE", f"request body is larger than {limit} bytes")
        await response(scope, receive, send)


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive`, raising 413 M_TOO_LARGE (inside the endpoint that reads) once `limit` is passed."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise ClawlistError(413, "M_TOO_LARGE", f"request body is larger than {limit} bytes")
        return message

    return counted
