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


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413 M_TOO_LARGE, before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error_response(400, "M_BAD_JSON", "invalid Content-Length")(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    await self._too_large(scope, receive, send)
                    return
                # The HTTP parser delivers exactly the declared length, so nothing to count.
                await self.app(scope, receive, send)
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
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
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

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "M_TOO_LARGE", f"request body is larger than {self.max_bytes} bytes")
        await response(scope, receive, send)
