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
