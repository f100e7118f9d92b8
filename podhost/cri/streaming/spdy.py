"""SPDY/3.1 as Kubernetes streaming speaks it: frames (pure), header blocks, and a threaded session.

Theory of operation. After an HTTP/1.1 `Upgrade: SPDY/3.1` the TCP connection carries SPDY frames
(draft-mbelshe-httpbis-spdy-00, "SPDY Protocol - Draft 3.1"). Every frame starts with 8 bytes:

    control: 1 | version(15) | type(16)    flags(8) | length(24)    then the type's fields
    data:    0 | stream-id(31)             flags(8) | length(24)    then `length` bytes of payload

Kubernetes (moby/spdystream under k8s.io/apimachinery/pkg/util/httpstream/spdy) uses only a few of
them: SYN_STREAM opens a stream with a header block (its `streamtype`, `port`, `requestid`), SYN_REPLY
accepts it, DATA carries bytes, the FIN flag half-closes one direction, RST_STREAM aborts a stream,
PING is echoed, GOAWAY ends the session. The client opens every stream (odd ids); the server only
replies. Header blocks are zlib streams primed with the SPDY/3 dictionary (spec section 2.6.10.1), one
compression context per direction for the whole session, each block ended by a sync flush; names are
lower case, several values of one name are joined by NUL. spdystream implements no flow control (it
ignores WINDOW_UPDATE and SETTINGS), so neither does this module: it never waits for a window.

`FrameParser` and the `*_frame` functions do no I/O. `Session` runs them over a socket with one reader
thread that dispatches frames to `Stream`s; writers share one lock. This module knows nothing about
exec, attach or port-forward: those give meaning to the streams (podhost.cri.streaming.remotecommand,
.portforward).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

VERSION = 3
UPGRADE_TOKEN = "SPDY/3.1"

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01

# RST_STREAM status codes (spec 2.6.2).
PROTOCOL_ERROR = 1
REFUSED_STREAM = 3
CANCEL = 5
INTERNAL_ERROR = 6

#: Largest DATA payload this side writes; the length field allows 2**24 - 1.
MAX_DATA_CHUNK = 32 * 1024

# The SPDY/3 header compression dictionary (spec 2.6.10.1): length-prefixed words, then a run of text.
_DICT_WORDS = (  # noqa: SIM905 - the spec lists them as one run of words
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3 as this module reads it."""


# --- header blocks -------------------------------------------------------------------------------------


class HeaderCompressor:
    """One direction's header compression context (it lives as long as the session)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def block(self, headers: Headers) -> bytes:
        raw = [struct.pack(">I", len(headers))]
        for name, values in headers.items():
            key = name.lower().encode()
            value = "\x00".join(values).encode()
            raw += [struct.pack(">I", len(key)), key, struct.pack(">I", len(value)), value]
        return self._z.compress(b"".join(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, DICTIONARY)

    def block(self, data: bytes) -> Headers:
        try:
            raw = self._z.decompress(data)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from e
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    """Decode an uncompressed SPDY/3 name/value block (32-bit counts and lengths)."""
    try:
        (count,) = struct.unpack_from(">I", raw, 0)
        offset = 4
        headers: Headers = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, offset)
            name = raw[offset + 4 : offset + 4 + n].decode().lower()
            offset += 4 + n
            (n,) = struct.unpack_from(">I", raw, offset)
            value = raw[offset + 4 : offset + 4 + n].decode()
            offset += 4 + n
            headers.setdefault(name, []).extend(value.split("\x00"))
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed header block: {e}") from e
    return headers


def header(headers: Headers, name: str) -> str:
    values = headers.get(name.lower())
    return values[0] if values else ""


# --- frames (pure) ---------------------------------------------------------------------------------------


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def syn_stream_frame(stream_id: int, block: bytes, flags: int = 0, priority: int = 0) -> bytes:
    return _control(SYN_STREAM, flags, struct.pack(">IIBB", stream_id, 0, (priority & 7) << 5, 0) + block)


def syn_reply_frame(stream_id: int, block: bytes, flags: int = 0) -> bytes:
    return _control(SYN_REPLY, flags, struct.pack(">I", stream_id) + block)


def rst_stream_frame(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def ping_frame(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway_frame(last_good_stream_id: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_good_stream_id, status))


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


@dataclass
class Frame:
    """A parsed frame. `type` is 0 for DATA; `stream_id` is 0 for session frames (PING id in `value`)."""

    type: int
    flags: int
    stream_id: int = 0
    data: bytes = b""
    headers: Headers = field(default_factory=dict)
    value: int = 0  # RST/GOAWAY status, PING id, WINDOW_UPDATE delta

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class FrameParser:
    """Bytes in, frames out. Owns the receiving direction's header decompression context."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._headers = HeaderDecompressor()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            word, flags_length = struct.unpack_from(">II", self._buffer, 0)
            length = flags_length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = flags_length >> 24
            if word & 0x80000000:
                frame = self._control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(Frame(0, flags, word & 0x7FFFFFFF, payload))
        return frames

    def _control(self, version: int, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        try:
            if frame_type == SYN_STREAM:
                (stream_id,) = struct.unpack_from(">I", payload, 0)
                return Frame(
                    frame_type, flags, stream_id & 0x7FFFFFFF, headers=self._headers.block(payload[10:])
                )
            if frame_type in (SYN_REPLY, HEADERS):
                (stream_id,) = struct.unpack_from(">I", payload, 0)
                return Frame(
                    frame_type, flags, stream_id & 0x7FFFFFFF, headers=self._headers.block(payload[4:])
                )
            if frame_type in (RST_STREAM, WINDOW_UPDATE):
                stream_id, value = struct.unpack_from(">II", payload, 0)
                return Frame(frame_type, flags, stream_id & 0x7FFFFFFF, value=value)
            if frame_type == PING:
                return Frame(frame_type, flags, value=struct.unpack_from(">I", payload, 0)[0])
            if frame_type == GOAWAY:
                (last,) = struct.unpack_from(">I", payload, 0)
                return Frame(frame_type, flags, last & 0x7FFFFFFF)
        except struct.error as e:
            raise ProtocolError(f"short control frame of type {frame_type}") from e
        return None  # SETTINGS, CREDENTIAL, unknown types: nothing this side acts on


# --- session ---------------------------------------------------------------------------------------------


class Stream:
    """One SPDY stream: blocking `read()` (b"" once the peer half-closed or reset it), `write()`, `close()`."""

    def __init__(self, session: Session, stream_id: int, headers: Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.reply_headers: Headers = {}
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._remote_closed = False
        self._local_closed = False
        self._replied = False
        self.reset = False

    def header(self, name: str) -> str:
        return header(self.headers, name)

    # Called by the session's reader thread.
    def _receive(self, data: bytes, fin: bool) -> None:
        with self._cond:
            if data:
                self._chunks.append(data)
            if fin:
                self._remote_closed = True
            self._cond.notify_all()

    def _replied_with(self, headers: Headers) -> None:
        with self._cond:
            self.reply_headers, self._replied = headers, True
            self._cond.notify_all()

    def _aborted(self) -> None:
        with self._cond:
            self.reset = self._remote_closed = self._local_closed = True
            self._replied = True
            self._cond.notify_all()

    def wait_reply(self, timeout: float) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._replied, timeout)
            return self._replied and not self.reset

    def read(self, timeout: float | None = None) -> bytes:
        """The next chunk the peer sent; b"" at end of stream. TimeoutError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._remote_closed, timeout):
                raise TimeoutError(f"stream {self.id}: no data within {timeout}s")
            return self._chunks.popleft() if self._chunks else b""

    def read_all(self, timeout: float | None = None) -> bytes:
        out = bytearray()
        while chunk := self.read(timeout):
            out += chunk
        return bytes(out)

    def write(self, data: bytes) -> None:
        if self._local_closed:
            raise BrokenPipeError(f"stream {self.id} is closed for writing")
        view = memoryview(data)
        for start in range(0, len(view), MAX_DATA_CHUNK):
            self.session.send(data_frame(self.id, bytes(view[start : start + MAX_DATA_CHUNK])))

    def close(self) -> None:
        """Half-close: tell the peer this side sends nothing more (an empty DATA frame with FIN)."""
        with self._cond:
            if self._local_closed:
                return
            self._local_closed = True
        with contextlib.suppress(OSError):
            self.session.send(data_frame(self.id, b"", fin=True))

    def abort(self, status: int = CANCEL) -> None:
        """Reset the stream in both directions."""
        if not self.reset:
            self._aborted()
            with contextlib.suppress(OSError):
                self.session.send(rst_stream_frame(self.id, status))

    @property
    def closed(self) -> bool:
        return self._local_closed and self._remote_closed


class Connection(Protocol):
    """What a session runs over: a connected socket, or a WebSocket tunnel (websocket.TunnelConnection)."""

    def recv(self, bufsize: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class Session:
    """A SPDY session over a connected socket (or a tunnel). `on_stream(stream)` is called (on the reader thread) for
    every stream the peer opens; it is replied to first, so the peer may send on it at once."""

    def __init__(
        self,
        sock: Connection,
        *,
        client: bool,
        on_stream: Callable[[Stream], None] | None = None,
        initial: bytes = b"",
        name: str = "spdy",
    ) -> None:
        self.sock = sock
        self.client = client
        self.name = name
        self.on_stream = on_stream
        self._send_lock = threading.Lock()
        self._compressor = HeaderCompressor()
        self._parser = FrameParser()
        self._streams: dict[int, Stream] = {}
        self._lock = threading.Lock()
        self._next_id = 1 if client else 2
        self._last_remote_id = 0
        self._closed = threading.Event()
        self.goaway_received = False
        self._initial = initial
        self._thread = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._thread.start()

    # --- sending ---

    def send(self, frame: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(frame)

    def _send_headers_frame(self, make: Callable[[bytes], bytes], headers: Headers) -> None:
        # Compression context and socket order must agree: compress and send under one lock.
        with self._send_lock:
            self.sock.sendall(make(self._compressor.block(headers)))

    def open_stream(self, headers: Headers, timeout: float = 30.0) -> Stream:
        """Open a stream (client side) and wait for the peer's SYN_REPLY."""
        with self._lock:
            stream_id, self._next_id = self._next_id, self._next_id + 2
            stream = Stream(self, stream_id, headers)
            self._streams[stream_id] = stream
        self._send_headers_frame(lambda block: syn_stream_frame(stream_id, block), headers)
        if not stream.wait_reply(timeout):
            raise ConnectionError(f"{self.name}: stream {stream_id} ({headers}) was not accepted")
        return stream

    # --- receiving ---

    def _read_loop(self) -> None:
        try:
            if self._initial:
                self._dispatch_all(self._initial)
            while not self._closed.is_set():
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self._dispatch_all(data)
        except ProtocolError as e:
            log.warning("%s: protocol error, closing: %s", self.name, e)
            with contextlib.suppress(OSError):
                self.send(goaway_frame(self._last_remote_id, 1))
        except Exception:
            log.exception("%s: reader failed", self.name)
        finally:
            self._closed.set()
            with self._lock:
                streams = list(self._streams.values())
            for stream in streams:
                stream._receive(b"", fin=True)
                stream._replied_with({})

    def _dispatch_all(self, data: bytes) -> None:
        for frame in self._parser.feed(data):
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        if frame.type == SYN_STREAM:
            self._new_remote_stream(frame)
            return
        if frame.type == PING:
            # Echo the peer's pings (their ids have the other parity); this side sends none.
            with contextlib.suppress(OSError):
                self.send(ping_frame(frame.value))
            return
        if frame.type == GOAWAY:
            self.goaway_received = True  # no new streams; the open ones carry on until EOF
            return
        with self._lock:
            stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # a stream already forgotten, or WINDOW_UPDATE for the session
        if frame.type == 0:
            stream._receive(frame.data, frame.fin)
        elif frame.type == SYN_REPLY:
            stream._replied_with(frame.headers)
            if frame.fin:
                stream._receive(b"", True)
        elif frame.type == HEADERS:
            if frame.fin:
                stream._receive(b"", True)
        elif frame.type == RST_STREAM:
            stream._aborted()

    def _new_remote_stream(self, frame: Frame) -> None:
        stream = Stream(self, frame.stream_id, frame.headers)
        with self._lock:
            if frame.stream_id in self._streams or frame.stream_id <= self._last_remote_id:
                raise ProtocolError(f"stream id {frame.stream_id} reused")
            self._last_remote_id = frame.stream_id
            self._streams[frame.stream_id] = stream
        stream._replied = True
        self._send_headers_frame(lambda block: syn_reply_frame(frame.stream_id, block), {})
        if frame.fin:
            stream._receive(b"", True)
        if self.on_stream is not None:
            self.on_stream(stream)
        else:
            stream.abort(REFUSED_STREAM)

    # --- teardown ---

    def forget(self, stream: Stream) -> None:
        with self._lock:
            self._streams.pop(stream.id, None)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def close(self, linger: float = 2.0) -> None:
        """GOAWAY, then stop writing; wait up to `linger` seconds for the peer to hang up, then close."""
        with contextlib.suppress(OSError):
            self.send(goaway_frame(self._last_remote_id))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self._thread.join(linger)
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(1.0)
