"""podhost.cri.status: every podhost error class has its gRPC code, both ways, and `@rpc` applies it."""

from __future__ import annotations

import logging

import grpc
import pytest

from podhost import errors
from podhost.cri import status

CODES = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.RuntimeFailure: grpc.StatusCode.INTERNAL,
    errors.PodhostError: grpc.StatusCode.UNKNOWN,
}


class Aborted(Exception):
    pass


class FakeContext:
    """Records what a servicer method aborts with, as grpc's context would send it."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted

    def is_active(self) -> bool:
        return True


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("cls", list(CODES), ids=lambda c: c.__name__)
def test_each_error_class_has_its_code(cls: type[errors.PodhostError]) -> None:
    assert status.grpc_code(cls("x")) == CODES[cls]

    class Servicer:
        @status.rpc
        def Verb(self, request: object, context: FakeContext) -> None:
            raise cls("what went wrong")

    ctx = FakeContext()
    with pytest.raises(Aborted):
        Servicer().Verb(None, ctx)  # type: ignore[arg-type]
    assert (ctx.code, ctx.details) == (CODES[cls], "what went wrong")


@pytest.mark.parametrize("cls", list(CODES), ids=lambda c: c.__name__)
def test_codes_translate_back_to_the_same_class(cls: type[errors.PodhostError]) -> None:
    err = status.error_from_rpc(FakeRpcError(CODES[cls], "server said so"))
    assert type(err) is cls and str(err) == "server said so"


def test_codes_without_a_class_keep_their_code() -> None:
    err = status.error_from_rpc(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no"))
    assert type(err) is errors.PodhostError and err.grpc_code == "PERMISSION_DENIED"


def test_transport_failures_name_the_peer() -> None:
    err = status.error_from_rpc(
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connect failed"), "the runtime at X"
    )
    assert isinstance(err, errors.Unavailable) and str(err) == "cannot reach the runtime at X: connect failed"


def test_unexpected_exception_is_internal_with_a_logged_traceback(caplog: pytest.LogCaptureFixture) -> None:
    class Servicer:
        @status.rpc
        def Broken(self, request: object, context: FakeContext) -> None:
            raise KeyError("boom")

    ctx = FakeContext()
    with caplog.at_level(logging.ERROR, logger="podhost.cri.status"), pytest.raises(Aborted):
        Servicer().Broken(None, ctx)  # type: ignore[arg-type]
    assert ctx.code == grpc.StatusCode.INTERNAL and "KeyError" in ctx.details and "boom" in ctx.details
    assert any(r.exc_info for r in caplog.records)


def test_streaming_methods_are_wrapped_too() -> None:
    class Servicer:
        @status.rpc
        def Stream(self, request: object, context: FakeContext):  # type: ignore[no-untyped-def]
            yield 1
            raise errors.NotFound("gone")

    ctx = FakeContext()
    stream = Servicer().Stream(None, ctx)  # type: ignore[arg-type]
    assert next(stream) == 1
    with pytest.raises(Aborted):
        next(stream)
    assert ctx.code == grpc.StatusCode.NOT_FOUND


def test_unimplemented_helper() -> None:
    method = status.unimplemented("Exec", "later")
    ctx = FakeContext()
    with pytest.raises(Aborted):
        method(object(), None, ctx)
    assert (ctx.code, ctx.details) == (grpc.StatusCode.UNIMPLEMENTED, "Exec: later")
