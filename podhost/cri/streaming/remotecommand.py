"""Exec and attach sessions: the Kubernetes remotecommand protocol over SPDY or a channel WebSocket.

Theory of operation (k8s.io/apimachinery/pkg/util/remotecommand, kubelet cri/streaming/remotecommand):
a session has up to five streams — stdin (client to server), stdout and stderr (server to client),
error (the outcome) and resize (terminal sizes as a stream of JSON objects `{"Width":W,"Height":H}`).
Over SPDY the client opens one SPDY stream per kind, named by its `streamtype` header, and the server
waits until every stream the request implies has arrived. Over a WebSocket the kinds are channels 0-4 of
one connection; the server sends an empty message on the lowest writable channel to say it is ready.

The versions differ only at the edges:
  v2  the error stream carries a plain-text message, empty for success; no resize
  v3  v2 + resize
  v4  the error stream carries a metav1.Status: Success, or Failure with reason NonZeroExitCode and
      details.causes [{reason: ExitCode, message: "<n>"}] (that is how a client learns the exit code)
  v5  v4 + a client may close a single channel (WebSocket only: how stdin's end is said)

The session: stdin and resize are pumped to the process by their own threads; output is pumped to the
client on the session's thread; once output has ended, stdout/stderr are half-closed, the exit status
is written to the error stream, and the connection is closed. If the client goes away first, the
process is released (an exec'd process is killed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from podhost.cri.streaming import spdy
from podhost.cri.streaming.requests import ProcessIO
from podhost.cri.streaming.websocket import ChannelConnection, Pipe

log = logging.getLogger(__name__)

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
#: What the SPDY upgrade accepts, best first (the kubelet's list, minus v1's known bugs).
SPDY_PROTOCOLS = (V4, V3, V2)
#: What the WebSocket upgrade accepts, best first (v5 is WebSocket-only).
WEBSOCKET_PROTOCOLS = (V5, V4, V3, V2)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}
#: How long a server waits for the client's streams (remotecommand.DefaultStreamCreationTimeout).
STREAM_CREATION_TIMEOUT_S = 30.0
#: How long an exec with a terminal waits for the client's first size before it starts the process.
FIRST_SIZE_WAIT_S = 0.5


def supports_resize(version: str) -> bool:
    return version in (V3, V4, V5)


def status_json(version: str) -> bool:
    return version in (V4, V5)


# --- the outcome -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a session ended: an exit code (None for attach, which has none), or an error message."""

    exit_code: int | None = None
    error: str = ""
    command: tuple[str, ...] = ()


def status_document(outcome: Outcome) -> dict[str, Any]:
    """The metav1.Status the v4+ error stream carries."""
    if outcome.error:
        return {
            "metadata": {},
            "status": "Failure",
            "message": outcome.error,
            "reason": "InternalError",
            "details": {"causes": [{"message": outcome.error}]},
            "code": 500,
        }
    if not outcome.exit_code:
        return {"metadata": {}, "status": "Success"}
    code = outcome.exit_code
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: "
            f"error executing command {list(outcome.command)}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def error_stream_bytes(version: str, outcome: Outcome) -> bytes:
    """What the error stream carries for `outcome` under `version` (empty: nothing to say)."""
    if status_json(version):
        return json.dumps(status_document(outcome), separators=(",", ":")).encode()
    if outcome.error:
        return outcome.error.encode()
    if outcome.exit_code:
        return status_document(outcome)["message"].encode()
    return b""


class ResizeDecoder:
    """Terminal sizes from the resize stream: JSON objects one after another (Go's json.Encoder)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buffer += data.decode(errors="replace")
        sizes = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                break
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buffer = text
                break
            self._buffer = text[end:]
            if isinstance(value, dict):
                width, height = int(value.get("Width", 0) or 0), int(value.get("Height", 0) or 0)
                sizes.append((width, height))
        return sizes


# --- transports ------------------------------------------------------------------------------------------


class Reader(Protocol):
    def read(self, timeout: float | None = None) -> bytes: ...


class Channels(Protocol):
    """One session's streams, whatever carries them."""

    version: str

    @property
    def stdin(self) -> Reader | None: ...

    @property
    def resize(self) -> Reader | None: ...

    def write(self, kind: int, data: bytes) -> None: ...

    def close_output(self) -> None: ...

    def finish(self, error: bytes) -> None: ...

    def wait_disconnected(self) -> None: ...


class SpdyChannels:
    """remotecommand streams of one SPDY session, collected as the client opens them."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.session: spdy.Session | None = None
        self.streams: dict[int, spdy.Stream] = {}
        self._cond = threading.Condition()

    # Session.on_stream callback (reader thread): never blocks.
    def add(self, stream: spdy.Stream) -> None:
        kind = STREAM_TYPES.get(stream.header("streamtype"))
        if kind is None or kind in self.streams:
            log.warning("remotecommand: unexpected stream %r refused", stream.header("streamtype"))
            stream.abort(spdy.REFUSED_STREAM)
            return
        with self._cond:
            self.streams[kind] = stream
            self._cond.notify_all()

    def wait_for(self, expected: set[int], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: expected <= set(self.streams), timeout)

    @property
    def stdin(self) -> Reader | None:
        return self.streams.get(STDIN)

    @property
    def resize(self) -> Reader | None:
        return self.streams.get(RESIZE)

    def write(self, kind: int, data: bytes) -> None:
        stream = self.streams.get(kind) or self.streams.get(STDOUT)
        if stream is not None:
            stream.write(data)

    def close_output(self) -> None:
        for kind in (STDOUT, STDERR):
            if (stream := self.streams.get(kind)) is not None:
                stream.close()

    def finish(self, error: bytes) -> None:
        stream = self.streams.get(ERROR)
        if stream is not None:
            try:
                if error:
                    stream.write(error)
                stream.close()
            except OSError:
                pass
        if self.session is not None:
            self.session.close()

    def wait_disconnected(self) -> None:
        if self.session is not None:
            self.session.wait_closed()


class WebSocketChannels:
    """remotecommand channels of one WebSocket connection."""

    def __init__(self, conn: ChannelConnection, stdin: bool, tty: bool) -> None:
        self.conn = conn
        self.version = conn.subprotocol
        self._stdin: Pipe | None = conn.readers[STDIN] if stdin else None
        self._resize: Pipe | None = conn.readers[RESIZE] if tty and supports_resize(self.version) else None

    @property
    def stdin(self) -> Reader | None:
        return self._stdin

    @property
    def resize(self) -> Reader | None:
        return self._resize

    def write(self, kind: int, data: bytes) -> None:
        self.conn.send(kind, data)

    def close_output(self) -> None:
        """Channels cannot be closed from the server side; the connection's close ends them."""

    def finish(self, error: bytes) -> None:
        try:
            if error:
                self.conn.send(ERROR, error)
        except OSError:
            pass
        self.conn.close()

    def wait_disconnected(self) -> None:
        self.conn.wait_closed()


# --- the session -----------------------------------------------------------------------------------------


def _pump_stdin(reader: Reader, io: ProcessIO) -> None:
    try:
        while data := reader.read():
            io.write_stdin(data)
    except OSError as e:
        log.debug("stdin pump ended: %s", e)
    finally:
        io.close_stdin()


def _pump_resize(reader: Reader, io: ProcessIO, first: list[tuple[int, int]]) -> None:
    decoder = ResizeDecoder()
    for width, height in first:
        _resize(io, width, height)
    try:
        while data := reader.read():
            for width, height in decoder.feed(data):
                _resize(io, width, height)
    except OSError as e:
        log.debug("resize pump ended: %s", e)


def _resize(io: ProcessIO, width: int, height: int) -> None:
    try:
        io.resize(width, height)
    except Exception as e:  # a resize is advisory: never let it end the session
        log.debug("resize to %dx%d failed: %s", width, height, e)


def first_size(
    channels: Channels, timeout: float = FIRST_SIZE_WAIT_S
) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """The client's first terminal size, if it sends one soon (clients send it right after connecting),
    and any further sizes read with it."""
    if channels.resize is None:
        return None, []
    decoder = ResizeDecoder()
    try:
        sizes = decoder.feed(channels.resize.read(timeout))
    except TimeoutError:
        return None, []
    return (sizes[0], sizes[1:]) if sizes else (None, [])


def run_session(
    channels: Channels,
    start: Callable[[tuple[int, int] | None], ProcessIO],
    command: tuple[str, ...],
    label: str,
) -> Outcome:
    """Start the process (`start(first terminal size)`), move bytes until its output ends, report the
    outcome on the error stream and close. Returns the outcome (for logs and tests)."""
    size, more_sizes = first_size(channels)
    try:
        io = start(size)
    except Exception as e:
        message = str(e) or e.__class__.__name__
        log.info("%s: could not start: %s", label, message)
        channels.finish(error_stream_bytes(channels.version, Outcome(error=message, command=command)))
        return Outcome(error=message, command=command)
    done = threading.Event()

    def hang_up_when_client_leaves() -> None:
        channels.wait_disconnected()
        if not done.is_set():
            log.info("%s: client disconnected", label)
            io.abort()

    threads = [threading.Thread(target=hang_up_when_client_leaves, name=f"{label}-watch", daemon=True)]
    if channels.stdin is not None:
        threads.append(threading.Thread(target=_pump_stdin, args=(channels.stdin, io), daemon=True))
    if channels.resize is not None:
        threads.append(
            threading.Thread(target=_pump_resize, args=(channels.resize, io, more_sizes), daemon=True)
        )
    for thread in threads:
        thread.start()
    client_gone = False
    try:
        while (chunk := io.read_output()) is not None:
            kind, data = chunk
            try:
                channels.write(kind, data)
            except OSError:
                client_gone = True
                break
        if client_gone:
            outcome = Outcome(error="client disconnected", command=command)
            io.abort()
            with contextlib.suppress(OSError):
                channels.finish(b"")
        else:
            code = io.wait()
            error = io.error() if code else ""
            outcome = Outcome(exit_code=code, error=error, command=command)
        done.set()
        if not client_gone:
            with contextlib.suppress(OSError):
                channels.close_output()
            channels.finish(error_stream_bytes(channels.version, outcome))
    finally:
        done.set()
        io.close()
    log.info("%s: session ended: %s", label, outcome)
    return outcome
