"""gRPC calls over HTTP/2 on a unix socket, without grpcio: the CLI's and the pod manager's transport.

Importing grpcio costs 60-90 ms here (its core loads asyncio and ssl), more than a short `podhost cri`
command may take in all, and a grpcio channel polls (a spin thread, 0.1 s waits) while a node idles: ~30
wake-ups a second for a pod manager holding GetContainerEvents open. What a CRI client needs of gRPC is
small: unary calls and one server-streaming call, each an HTTP/2 stream (HEADERS, DATA, then trailers
carrying grpc-status), framed by `hyperframe` and its headers coded by `hpack` (python-hyper's, pure
Python, ~15 ms to import). The status comes back as the exception `podhost.errors` names for it, exactly
as through grpcio (`errors.error_for_status`). Works against podhost's grpcio server and containerd's
grpc-go one.

For a peer on a unix socket only: no TLS, no proxy. A `Connection` makes one call at a time; `Pool` gives
each thread its own and each server-streaming call one of its own. Requests are small (they fit the
peer's first flow-control window); what is received is given back to the windows as it is read.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import hpack
from hyperframe import frame as hf

from podhost.errors import PodhostError, Unimplemented, error_for_status

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The frames we send carry at most this much (the peer's default SETTINGS_MAX_FRAME_SIZE).
MAX_FRAME = 16384
#: Our receive window: large enough that the answer to a long listing flows without WINDOW_UPDATEs.
WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65535
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5


class Connection:
    """One HTTP/2 connection to a gRPC server on a unix socket."""

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        self._sock: socket.socket | None = None
        self._encoder, self._decoder = hpack.Encoder(), hpack.Decoder()
        self._next_stream = 1
        self._buffer = b""
        self._cancelled = False

    def _connect(self, deadline: float | None) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(_left(deadline, self.what))
                sock.connect(self.path)
            except OSError as e:
                sock.close()
                raise error_for_status("UNAVAILABLE", e.strerror or str(e), self.what) from None
            settings = hf.SettingsFrame(0)
            settings.settings = {SETTINGS_INITIAL_WINDOW_SIZE: WINDOW}
            update = hf.WindowUpdateFrame(0)
            update.window_increment = WINDOW - DEFAULT_WINDOW
            sock.sendall(PREFACE + settings.serialize() + update.serialize())
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, path: str, request: bytes, timeout: float | None) -> bytes:
        """POST one gRPC message to `path` ("/runtime.v1.RuntimeService/Version"); the response message,
        or the status as a podhost exception."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            stream = self._start(path, request, timeout, deadline)
            message = b""
            for data, trailers in self._frames_of(stream, deadline):
                if trailers is None:
                    message += data
                else:
                    return _message_or_status(message, trailers, self.what)
            raise error_for_status("UNAVAILABLE", "the answer ended early", self.what)
        except TimeoutError:
            self.close()
            raise error_for_status("DEADLINE_EXCEEDED", "", self.what) from None
        except OSError as e:
            self.close()
            raise error_for_status("UNAVAILABLE", e.strerror or str(e), self.what) from None

    def stream(self, path: str, request: bytes) -> Iterator[bytes]:
        """A server-streaming call on this connection (give it one of its own): each message as it
        arrives, until the server's OK trailers; its status otherwise. `cancel()` (from any thread) ends
        it quietly."""
        try:
            stream = self._start(path, request, None, None)
            pending = b""
            for data, trailers in self._frames_of(stream, None):
                if trailers is not None:
                    _check_status(trailers, self.what)
                    return
                pending += data
                while len(pending) >= 5 and len(pending) >= 5 + (
                    size := struct.unpack(">I", pending[1:5])[0]
                ):
                    yield pending[5 : 5 + size]
                    pending = pending[5 + size :]
        except (OSError, PodhostError) as e:
            if self._cancelled:
                return
            if isinstance(e, PodhostError):
                raise
            raise error_for_status("UNAVAILABLE", e.strerror or str(e), self.what) from None
        finally:
            self.close()

    def cancel(self) -> None:
        """End a `stream` from another thread: its blocked read returns, and it stops without an error."""
        self._cancelled = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _start(self, path: str, request: bytes, timeout: float | None, deadline: float | None) -> int:
        """Send the request (HEADERS, DATA) on a new stream; its id."""
        sock = self._connect(deadline)
        stream, self._next_stream = self._next_stream, self._next_stream + 2
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", f"{max(1, int(timeout * 1000))}m"))
        out = hf.HeadersFrame(stream, self._encoder.encode(headers))
        out.flags.add("END_HEADERS")
        body = b"\0" + struct.pack(">I", len(request)) + request
        frames = [out.serialize()]
        for at in range(0, len(body), MAX_FRAME):
            data = hf.DataFrame(stream, body[at : at + MAX_FRAME])
            if at + MAX_FRAME >= len(body):
                data.flags.add("END_STREAM")
            frames.append(data.serialize())
        sock.settimeout(_left(deadline, self.what))
        sock.sendall(b"".join(frames))
        return stream

    def _frames_of(
        self, stream: int, deadline: float | None
    ) -> Iterator[tuple[bytes, dict[Any, Any] | None]]:
        """(data, None) for each DATA frame of `stream`, then (b"", its headers and trailers) once it
        ends. What is read is given back to the flow-control windows at once (a long-lived connection, a
        stream of events, never runs dry)."""
        headers, block, ending = dict[Any, Any](), b"", False
        while True:
            f = self._read_frame(deadline)
            if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
                if SETTINGS_HEADER_TABLE_SIZE in f.settings:  # our encoder's table may not outgrow it
                    self._encoder.header_table_size = f.settings[SETTINGS_HEADER_TABLE_SIZE]
                self._send(hf.SettingsFrame(0, flags=["ACK"]))
            elif isinstance(f, hf.PingFrame) and "ACK" not in f.flags:
                self._send(hf.PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]))
            elif isinstance(f, hf.GoAwayFrame):
                self.close()
                raise error_for_status("UNAVAILABLE", "the server closed the connection", self.what)
            elif f.stream_id != stream:
                continue  # WINDOW_UPDATEs: what we send fits the peer's first window
            elif isinstance(f, hf.RstStreamFrame):
                raise error_for_status("INTERNAL", f"stream reset (HTTP/2 error {f.error_code})", self.what)
            elif isinstance(f, hf.DataFrame):
                if f.flow_controlled_length:
                    self._give_back(stream, f.flow_controlled_length, "END_STREAM" not in f.flags)
                yield f.data, None
                if "END_STREAM" in f.flags:  # no trailers: not a gRPC answer
                    yield b"", headers
                    return
            elif isinstance(f, hf.HeadersFrame | hf.ContinuationFrame):
                if isinstance(f, hf.HeadersFrame):
                    block, ending = b"", "END_STREAM" in f.flags
                block += f.data
                if "END_HEADERS" in f.flags:
                    headers.update(dict(self._decoder.decode(block)))
                    if ending:
                        yield b"", headers
                        return

    def _give_back(self, stream: int, size: int, to_stream: bool) -> None:
        updates = [hf.WindowUpdateFrame(0, window_increment=size)]
        if to_stream:
            updates.append(hf.WindowUpdateFrame(stream, window_increment=size))
        assert self._sock is not None
        self._sock.sendall(b"".join(u.serialize() for u in updates))

    def _send(self, f: hf.Frame) -> None:
        assert self._sock is not None
        self._sock.sendall(f.serialize())

    def _read_exactly(self, n: int, deadline: float | None) -> bytes:
        assert self._sock is not None
        while len(self._buffer) < n:
            self._sock.settimeout(_left(deadline, self.what))
            chunk = self._sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                self.close()
                raise error_for_status("UNAVAILABLE", "the server closed the connection", self.what)
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _read_frame(self, deadline: float | None) -> Any:
        head = self._read_exactly(9, deadline)
        f, length = hf.Frame.parse_frame_header(memoryview(head))
        f.parse_body(memoryview(self._read_exactly(length, deadline)))
        return f


def _text(headers: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in headers.items()
    }


def _check_status(headers: dict[Any, Any], what: str) -> None:
    """Raise the call's status unless it is OK (no grpc-status: an HTTP failure, UNKNOWN/UNAVAILABLE)."""
    fields = _text(headers)
    status = fields.get("grpc-status", "2" if fields.get(":status", "200") == "200" else "14")
    if status != "0":
        details = urllib.parse.unquote(fields.get("grpc-message", ""))
        raise error_for_status(_CODES.get(status, "UNKNOWN"), details, what)


def _message_or_status(message: bytes, headers: dict[Any, Any], what: str) -> bytes:
    _check_status(headers, what)
    if len(message) < 5:
        raise PodhostError(f"{what}: an empty answer")
    (length,) = struct.unpack(">I", message[1:5])
    return message[5 : 5 + length]


def _left(deadline: float | None, what: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise error_for_status("DEADLINE_EXCEEDED", "", what)
    return left


_CODES = {
    str(number): name
    for number, name in enumerate(
        [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ]
    )
}


class Pool:
    """Connections for callers on many threads (the pod manager's workers): one per thread for unary
    calls, one per server-streaming call."""

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Connection] = []

    def new(self) -> Connection:
        conn = Connection(self.path, self.what)
        with self._lock:
            self._all.append(conn)
        return conn

    def call(self, path: str, request: bytes, timeout: float | None) -> bytes:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.new()
        return conn.call(path, request, timeout)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.cancel()
            conn.close()


class Streaming:
    """A server-streaming call in progress: iterate for its messages; `cancel()` ends it quietly."""

    def __init__(self, conn: Connection, path: str, request: bytes, response_type: Any) -> None:
        self._conn, self._path, self._request, self._type = conn, path, request, response_type

    def __iter__(self) -> Iterator[Any]:
        for raw in self._conn.stream(self._path, self._request):
            yield self._type.FromString(raw)

    def cancel(self) -> None:
        self._conn.cancel()


class Stub:
    """A service's methods as callables `(request, timeout=None)`, like grpcio's stubs (method names and
    message types from the service's descriptor): unary ones return the response, server-streaming ones
    a `Streaming`."""

    def __init__(self, transport: Pool | Connection, service: Any) -> None:
        self._transport, self._service = transport, service

    def __getattr__(self, name: str) -> Any:
        method = self._service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(name)
        if method.client_streaming:
            raise Unimplemented(f"{name}: podhost's HTTP/2 client does not stream requests")
        path = f"/{self._service.full_name}/{name}"
        response_type = _message_class(method.output_type)
        transport = self._transport
        if method.server_streaming:

            def open_stream(request: Any, timeout: float | None = None) -> Streaming:
                conn = (
                    transport.new()
                    if isinstance(transport, Pool)
                    else Connection(transport.path, transport.what)
                )
                return Streaming(conn, path, request.SerializeToString(), response_type)

            return open_stream

        def call(request: Any, timeout: float | None = None) -> Any:
            return response_type.FromString(transport.call(path, request.SerializeToString(), timeout))

        return call


def _message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)
