"""The one exception hierarchy of podhost.

Services raise these; `podhost.cri.status` maps them to gRPC status codes and `podhost.cli` to messages and
exit codes. Nothing else should decide how an error looks to a user.
"""

from __future__ import annotations


class PodhostError(Exception):
    """Base of every error podhost reports to a caller."""

    #: gRPC status code name (grpc.StatusCode member) this error maps to.
    grpc_code = "UNKNOWN"


class NotFound(PodhostError):
    grpc_code = "NOT_FOUND"


class InvalidArgument(PodhostError):
    grpc_code = "INVALID_ARGUMENT"


class AlreadyExists(PodhostError):
    grpc_code = "ALREADY_EXISTS"


class FailedPrecondition(PodhostError):
    grpc_code = "FAILED_PRECONDITION"


class Unimplemented(PodhostError):
    grpc_code = "UNIMPLEMENTED"


class DeadlineExceeded(PodhostError):
    grpc_code = "DEADLINE_EXCEEDED"


class Cancelled(PodhostError):
    """The caller went away (cancelled, or its deadline passed); what the call had made was undone."""

    grpc_code = "CANCELLED"


class Unavailable(PodhostError):
    grpc_code = "UNAVAILABLE"


class RuntimeFailure(PodhostError):
    """A real component (runc, conmon, a CNI plugin, the kernel) failed; the message says which and why."""

    grpc_code = "INTERNAL"


def _all_error_classes() -> list[type[PodhostError]]:
    found: list[type[PodhostError]] = []
    pending: list[type[PodhostError]] = [PodhostError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def error_class(code_name: str) -> type[PodhostError]:
    """The exception class for a gRPC status code name (the most direct one when several share a code)."""
    direct: tuple[type[PodhostError], ...] = (
        NotFound,
        InvalidArgument,
        AlreadyExists,
        FailedPrecondition,
        Unimplemented,
        DeadlineExceeded,
        Cancelled,
        Unavailable,
        RuntimeFailure,
    )
    for cls in (*direct, *_all_error_classes()):
        if cls.grpc_code == code_name:
            return cls
    return PodhostError


def error_for_status(code_name: str, details: str, what: str = "") -> PodhostError:
    """The exception a failed call raises, from its status code name and details; `what` ("the runtime at
    unix:///...") names the peer in transport failures (unreachable, deadline), where the server's own
    words are not available. Every client transport (grpcio's, the CLI's own) turns a status into this."""
    details = details or code_name.lower()
    if code_name == "UNAVAILABLE" and what:
        details = f"cannot reach {what}: {details}"
    elif code_name == "DEADLINE_EXCEEDED" and what:
        details = f"{what}: deadline exceeded ({details})"
    exc = error_class(code_name)(details)
    exc.grpc_code = code_name  # keep the exact code even where it fell back to PodhostError
    return exc
