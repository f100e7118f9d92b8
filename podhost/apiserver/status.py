"""Errors as the Kubernetes API reports them: a `Status` object with an HTTP code and a reason.

Handlers raise `podhost.errors` exceptions (the manager's own, or the few API-specific ones below); this
module is the one place they become HTTP answers, as `podhost.cri.status` is for gRPC. kubectl prints
`Error from server (<reason>): <message>`, so the message is written as kube-apiserver writes it.
"""

from __future__ import annotations

from typing import Any

from podhost.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PodhostError,
    Unavailable,
    Unimplemented,
)


class BadRequest(InvalidArgument):
    """The request cannot be decoded or names unknown fields (kube-apiserver's 400 BadRequest)."""


class Unauthorized(PodhostError):
    """No client certificate of this instance was presented."""


class Forbidden(PodhostError):
    pass


class Conflict(FailedPrecondition):
    pass


class Gone(FailedPrecondition):
    """A watch asked for a resourceVersion older than the event log keeps (410 Expired)."""


class UnsupportedMediaType(InvalidArgument):
    pass


class MethodNotAllowed(Unimplemented):
    pass


#: Most specific first: (class, HTTP code, Kubernetes StatusReason).
_MAPPING: list[tuple[type[PodhostError], int, str]] = [
    (BadRequest, 400, "BadRequest"),
    (UnsupportedMediaType, 415, "UnsupportedMediaType"),
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (Gone, 410, "Expired"),
    (Conflict, 409, "Conflict"),
    (MethodNotAllowed, 405, "MethodNotAllowed"),
    (NotFound, 404, "NotFound"),
    (AlreadyExists, 409, "AlreadyExists"),
    (InvalidArgument, 422, "Invalid"),
    (FailedPrecondition, 409, "Conflict"),
    (Unimplemented, 405, "MethodNotAllowed"),
    (Unavailable, 503, "ServiceUnavailable"),
    (DeadlineExceeded, 504, "Timeout"),
    (Cancelled, 499, "Timeout"),
]


def code_and_reason(error: BaseException) -> tuple[int, str]:
    for cls, code, reason in _MAPPING:
        if isinstance(error, cls):
            return code, reason
    return 500, "InternalError"


def status_object(error: BaseException, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The v1 Status for `error` (any exception: an unexpected one is a 500 InternalError)."""
    code, reason = code_and_reason(error)
    obj: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": str(error) if isinstance(error, PodhostError) else f"internal error: {error!r}",
        "reason": reason,
        "code": code,
    }
    if details:
        obj["details"] = details
    return obj


def success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        obj["details"] = details
    return obj
