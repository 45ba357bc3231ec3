"""The one error type. Transports map it to their wire format (REST `{errcode, error}`, Matrix `M_*`)."""

from __future__ import annotations

from typing import Any


class ClawlistError(Exception):
    """An expected failure with an HTTP status, a Matrix-style errcode and a human message."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}

    def __repr__(self) -> str:
        return f"ClawlistError({self.status}, {self.errcode!r}, {self.message!r})"


def bad_request(message: str, errcode: str = "M_INVALID_PARAM") -> ClawlistError:
    return ClawlistError(400, errcode, message)


def bad_json(message: str) -> ClawlistError:
    return ClawlistError(400, "M_BAD_JSON", message)


def not_found(message: str) -> ClawlistError:
    return ClawlistError(404, "M_NOT_FOUND", message)


def forbidden(message: str) -> ClawlistError:
    return ClawlistError(403, "M_FORBIDDEN", message)


def conflict(message: str, errcode: str = "CL_CONFLICT") -> ClawlistError:
    return ClawlistError(409, errcode, message)


def unauthorized(message: str, errcode: str = "M_UNKNOWN_TOKEN") -> ClawlistError:
    return ClawlistError(401, errcode, message)


def too_large(message: str) -> ClawlistError:
    return ClawlistError(413, "M_TOO_LARGE", message)
