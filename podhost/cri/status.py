"""The one place where `podhost.errors` meet gRPC status codes, in both directions.

Servers: every servicer method is wrapped in `@rpc`, which turns a `PodhostError` into the status code
its class names (`grpc_code`) with its message as the details, and anything else into INTERNAL with the
message and a log line carrying the traceback. Clients: `error_from_rpc` turns a status back into the
matching `PodhostError` subclass, so callers (the CLI, the pod manager) catch podhost's own exceptions.

This module never decides *whether* something is an error; it only translates.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from podhost import errors
from podhost.errors import PodhostError
from podhost.runtime.stages import bind_call

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def grpc_code(error: PodhostError) -> grpc.StatusCode:
    """The status code an error travels as; an unknown `grpc_code` name degrades to UNKNOWN."""
    return getattr(grpc.StatusCode, error.grpc_code, grpc.StatusCode.UNKNOWN)


def error_from_rpc(err: grpc.RpcError, what: str = "") -> PodhostError:
    """A podhost exception for a failed call (`errors.error_for_status`); `what` names the peer."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else ""
    return errors.error_for_status(code.name, details or "", what)


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, PodhostError):
        code = grpc_code(exc)
        log.info("%s: %s: %s", method, code.name, exc)
        context.abort(code, str(exc) or code.name.lower())
    log.error("%s: unexpected error: %s", method, exc, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")
    raise AssertionError("context.abort returned")  # it always raises


def rpc(fn: F) -> F:
    """Wrap a servicer method (unary or server-streaming) so errors leave as the right status code."""
    name = fn.__name__
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(self, request, context)
            except Exception as exc:
                _abort(context, name, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            with bind_call(context.is_active):  # a caller that goes away cancels at the next stage
                return fn(self, request, context)
        except Exception as exc:
            _abort(context, name, exc)

    return unary  # type: ignore[return-value]


def unimplemented(name: str, why: str) -> Callable[..., Any]:
    """A servicer method that reports UNIMPLEMENTED with a reason, for verbs podhost does not serve yet."""

    def method(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        raise errors.Unimplemented(f"{name}: {why}")

    method.__name__ = name
    return rpc(method)
