"""The CRI gRPC server on a unix socket: RuntimeService, ImageService and podhost's Admin service.

`serve()` owns the socket file: it refuses to take over a socket another daemon still answers on, removes
a stale one (left by a daemon that died), binds, and sets mode 0660 so only root and the socket's group
reach the runtime. The thread pool is sized for blocking calls: a StopContainer waiting out its grace
period or an ExecSync waiting for its command holds a thread for that long, and GetContainerEvents
holds one per subscriber for as long as the subscriber stays. `InFlightCalls` keeps the list of calls
being served, so a daemon whose shutdown overruns can say which requests it abandons.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from podhost.cri import admin_pb2_grpc, api_pb2_grpc
from podhost.cri.admin_service import AdminServicer
from podhost.cri.image_service import ImageServicer
from podhost.cri.runtime_service import RuntimeServicer
from podhost.cri.transport import channel_options
from podhost.errors import AlreadyExists, FailedPrecondition, RuntimeFailure

if TYPE_CHECKING:
    from podhost.cri.runtime_api import RuntimeAPI
    from podhost.cri.streaming.server import StreamingServer

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
DEFAULT_WORKERS = 32


def _answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def prepare_socket_path(path: Path) -> None:
    """Make `path` free to bind: create its directory, remove a stale socket, refuse anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; refusing to replace it")
    if _answers(path):
        raise AlreadyExists(f"another server is already listening on {path}")
    log.info("removing stale socket %s", path)
    path.unlink()


class InFlightCalls(grpc.ServerInterceptor):  # type: ignore[misc]
    """A server interceptor that keeps the calls being served (method, thread, start), so a shutdown
    that overruns can log which requests it abandons and where their threads are."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, tuple[str, str, float]] = {}
        self._next = 0

    def _enter(self, method: str) -> int:
        with self._lock:
            self._next += 1
            self._calls[self._next] = (method, threading.current_thread().name, time.monotonic())
            return self._next

    def _leave(self, token: int) -> None:
        with self._lock:
            self._calls.pop(token, None)

    def snapshot(self) -> list[tuple[str, str, float]]:
        """(method, thread name, seconds running) of every call being served, oldest first."""
        now = time.monotonic()
        with self._lock:
            calls = sorted(self._calls.values(), key=lambda c: c[2])
        return [(method, thread, now - started) for method, thread, started in calls]

    def _wrap(self, method: str, fn: Callable[..., Any] | None, streams: bool) -> Callable[..., Any] | None:
        if fn is None:
            return None
        if streams:

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = self._enter(method)
                try:
                    yield from fn(request, context)
                finally:
                    self._leave(token)

            return stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            token = self._enter(method)
            try:
                return fn(request, context)
            finally:
                self._leave(token)

        return unary

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return handler._replace(
            unary_unary=self._wrap(method, handler.unary_unary, False),
            unary_stream=self._wrap(method, handler.unary_stream, True),
            stream_unary=self._wrap(method, handler.stream_unary, False),
            stream_stream=self._wrap(method, handler.stream_stream, True),
        )


def serve(
    runtime: RuntimeAPI,
    socket_path: str | os.PathLike[str],
    max_workers: int = DEFAULT_WORKERS,
    streaming: StreamingServer | None = None,
    calls: InFlightCalls | None = None,
) -> grpc.Server:
    """Start serving CRI for `runtime` on `unix://<socket_path>`; the caller stops the returned server.
    `streaming` serves the Exec/Attach/PortForward URLs (the caller starts and closes it); `calls`, if
    given, keeps the calls being served."""
    path = Path(socket_path).absolute()
    prepare_socket_path(path)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cri"),
        options=channel_options(),
        interceptors=[calls] if calls is not None else None,
    )
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RuntimeServicer(runtime, streaming), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(runtime), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(runtime), server)
    try:
        bound = server.add_insecure_port(f"unix://{path}")
    except RuntimeError as e:
        raise RuntimeFailure(f"cannot listen on {path}: {e}") from e
    if not bound:
        raise RuntimeFailure(f"cannot listen on {path}")
    server.start()
    os.chmod(path, SOCKET_MODE)
    log.info("CRI server listening on unix://%s (%d workers)", path, max_workers)
    return server
