"""One plugin's connection: the trunk socket, its reader thread, and ttrpc calls both ways.

The runtime is the ttrpc client on the Plugin service connection and the server on the Runtime service
connection (protocol.py). Calls from any thread may be in flight at once: each waits on its own stream
id. Every wait is bounded; a call that times out raises TimeoutError, and the caller (the adaptation)
treats it as the plugin being gone, as NRI does: a hung plugin must not wedge the pod lifecycle.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from google.protobuf.message import DecodeError, Message

from podhost.runtime.nri import api_pb2 as nri
from podhost.runtime.nri.protocol import (
    MAX_MESSAGE,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    MuxReader,
    ProtocolError,
    TtrpcFrame,
    TtrpcReader,
    mux_frame,
    ttrpc_frame,
)

log = logging.getLogger(__name__)

#: The largest mux frame podhost sends. The upstream plugin side reads each mux frame into whatever
#: buffer ttrpc's bufio reader (4 KiB) hands it and fails with ENOMEM on a bigger one, so a ttrpc
#: message is split into frames of at most this size (its own writes are, by the same buffer).
MUX_CHUNK = 4096

#: gRPC status codes a server answers with.
UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED = 2, 3, 5, 12

#: A server-side handler: (service, method, request payload) → response payload; raise TtrpcError.
Handler = Callable[[str, str, bytes], bytes]


class TtrpcError(Exception):
    """A call answered with a non-zero status, or a handler's refusal (code is a gRPC status code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConnectionClosed(Exception):
    """The trunk is closed: every call in flight fails with this."""


class Trunk:
    """The socket, read by one thread, written under one lock; `handlers` serve incoming requests per mux
    connection id. `on_close` runs once, from whichever thread notices the end first."""

    def __init__(
        self, sock: socket.socket, handlers: dict[int, Handler], on_close: Callable[[], None], name: str
    ) -> None:
        self._sock = sock
        self._handlers = handlers
        self._on_close = on_close
        self.name = name
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], Future[bytes]] = {}
        self._next_stream: dict[int, int] = {}
        self._readers: dict[int, TtrpcReader] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"nri-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def peer_pid(self) -> int:
        """The plugin's pid (SO_PEERCRED), 0 if unknown."""
        try:
            creds = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        except OSError:
            return 0
        return int.from_bytes(creds[:4], "little")

    def call(
        self, conn_id: int, service: str, method: str, request: Message, response: Message, timeout: float
    ) -> Message:
        """A unary call on mux connection `conn_id`; fills and returns `response`."""
        envelope = nri.TtrpcRequest(
            service=service,
            method=method,
            payload=request.SerializeToString(),
            timeout_nano=int(timeout * 1e9),
        )
        future: Future[bytes] = Future()
        with self._lock:
            if self.closed:
                raise ConnectionClosed(f"plugin {self.name}: connection closed")
            stream_id = self._next_stream.get(conn_id, 1)
            self._next_stream[conn_id] = stream_id + 2  # client-initiated streams are odd
            self._pending[(conn_id, stream_id)] = future
        try:
            self._send(conn_id, ttrpc_frame(stream_id, TYPE_REQUEST, envelope.SerializeToString()))
            try:
                answer = future.result(timeout)
            except FutureTimeout:
                raise TimeoutError(
                    f"plugin {self.name}: {method} did not answer within {timeout:g} s"
                ) from None
        finally:
            with self._lock:
                self._pending.pop((conn_id, stream_id), None)
        reply = nri.TtrpcResponse()
        try:
            reply.ParseFromString(answer)
            if reply.status.code:
                raise TtrpcError(reply.status.code, reply.status.message)
            response.ParseFromString(reply.payload)
        except DecodeError as e:
            self.close()
            raise ConnectionClosed(f"plugin {self.name}: undecodable {method} response: {e}") from e
        return response

    def close(self) -> None:
        """Close the socket and fail every call in flight; idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            pending = list(self._pending.values())
            self._pending.clear()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for future in pending:
            if not future.done():
                future.set_exception(ConnectionClosed(f"plugin {self.name}: connection closed"))
        try:
            self._on_close()
        except Exception:
            log.exception("plugin %s: close callback failed", self.name)

    def _send(self, conn_id: int, data: bytes) -> None:
        try:
            frames = b"".join(
                mux_frame(conn_id, data[i : i + MUX_CHUNK]) for i in range(0, len(data), MUX_CHUNK)
            )
            with self._write_lock:
                self._sock.sendall(frames)
        except OSError as e:
            self.close()
            raise ConnectionClosed(f"plugin {self.name}: {e}") from e

    def _read_loop(self) -> None:
        mux = MuxReader()
        try:
            while True:
                data = self._sock.recv(1 << 16)
                if not data:
                    break
                for conn_id, payload in mux.feed(data):
                    reader = self._readers.setdefault(conn_id, TtrpcReader())
                    for frame in reader.feed(payload):
                        self._dispatch(conn_id, frame)
        except ProtocolError as e:
            log.warning("plugin %s: protocol error, disconnecting: %s", self.name, e)
        except OSError as e:
            if not self.closed:
                log.info("plugin %s: connection lost: %s", self.name, e)
        finally:
            self.close()

    def _dispatch(self, conn_id: int, frame: TtrpcFrame) -> None:
        if frame.kind == TYPE_RESPONSE:
            with self._lock:
                future = self._pending.get((conn_id, frame.stream_id))
            if future is not None and not future.done():
                future.set_result(frame.data)
            return
        if frame.kind != TYPE_REQUEST:
            raise ProtocolError(f"unexpected ttrpc frame type {frame.kind} (streams are not served)")
        handler = self._handlers.get(conn_id)
        # Served on a thread of its own: a handler may call back into the plugin (and wait for this
        # reader to deliver the answer).
        threading.Thread(
            target=self._serve,
            args=(conn_id, frame.stream_id, frame.data, handler),
            name=f"nri-{self.name}-serve",
            daemon=True,
        ).start()

    def _serve(self, conn_id: int, stream_id: int, data: bytes, handler: Handler | None) -> None:
        reply = nri.TtrpcResponse()
        try:
            request = nri.TtrpcRequest()
            request.ParseFromString(data)
            if handler is None:
                raise TtrpcError(UNIMPLEMENTED, f"no service on connection {conn_id}")
            reply.payload = handler(request.service, request.method, request.payload)
            if len(reply.payload) > MAX_MESSAGE:
                raise TtrpcError(UNKNOWN, "response too large")
        except TtrpcError as e:
            reply.status.code, reply.status.message = e.code, str(e)
        except DecodeError as e:
            reply.status.code, reply.status.message = INVALID_ARGUMENT, f"undecodable request: {e}"
        except Exception as e:
            log.exception("plugin %s: serving a request failed", self.name)
            reply.status.code, reply.status.message = UNKNOWN, str(e)
        with contextlib.suppress(ConnectionClosed):
            self._send(conn_id, ttrpc_frame(stream_id, TYPE_RESPONSE, reply.SerializeToString()))
