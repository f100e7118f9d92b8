"""The NRI wire format, without I/O: the multiplexer's frames, ttrpc's frames, and the method names.

No well-kept Python implementation of ttrpc or of NRI's multiplexer exists (PyPI has none maintained),
so podhost carries this small one, written from the published protocol:
- **The trunk.** A plugin opens one unix socket to the runtime. NRI multiplexes two byte streams over it
  (github.com/containerd/nri, pkg/net/multiplex): every frame is `conn id (u32 BE) | length (u32 BE) |
  bytes`. Connection 1 carries the Plugin service (the runtime is the ttrpc client), connection 2 the
  Runtime service (the plugin is the client).
- **ttrpc** (github.com/containerd/ttrpc, PROTOCOL.md) inside each: `length (u32 BE) | stream id (u32 BE)
  | type (u8) | flags (u8) | data`, data at most 4 MiB. A unary call is one Request frame (type 1) on a
  new odd stream id from the client, answered by one Response frame (type 2) on the same id. Request and
  Response are protobuf envelopes (`TtrpcRequest`, `TtrpcResponse` in api.proto) around the method's
  own message; a non-zero `status.code` is a gRPC status code.

`FrameReader` turns received bytes into whole frames whatever the chunking (the peer's mux splits a
ttrpc frame into as many mux frames as its writes). Everything here is a pure function or a buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: The mux connection of the Plugin service (runtime → plugin calls) and of the Runtime service.
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"

MUX_HEADER = struct.Struct(">II")
TTRPC_HEADER = struct.Struct(">IIBB")
#: ttrpc's limit on one message's data; a larger frame is a protocol error.
MAX_MESSAGE = 4 << 20
#: The mux's limit on one frame's payload: a ttrpc header and the largest message.
MAX_MUX_PAYLOAD = TTRPC_HEADER.size + MAX_MESSAGE

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3


class ProtocolError(Exception):
    """The peer broke the framing: the connection cannot be trusted any further."""


@dataclass(frozen=True)
class TtrpcFrame:
    stream_id: int
    kind: int
    flags: int
    data: bytes


def mux_frame(conn_id: int, payload: bytes) -> bytes:
    """One mux frame; callers keep payloads within MAX_MUX_PAYLOAD (a ttrpc frame always is)."""
    return MUX_HEADER.pack(conn_id, len(payload)) + payload


def ttrpc_frame(stream_id: int, kind: int, data: bytes, flags: int = 0) -> bytes:
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds ttrpc's {MAX_MESSAGE}-byte limit")
    return TTRPC_HEADER.pack(len(data), stream_id, kind, flags) + data


class FrameReader:
    """Bytes in, whole frames out. `header` is MUX_HEADER or TTRPC_HEADER; the first field of each is
    the length of what follows (the mux's second field, ttrpc's first)."""

    def __init__(self, header: struct.Struct, limit: int) -> None:
        self._header = header
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[tuple[int, ...], bytes]]:
        """Append `data`; return every frame now complete as (header fields, body)."""
        self._buffer += data
        frames = []
        size = self._header.size
        while len(self._buffer) >= size:
            fields = self._header.unpack_from(self._buffer)
            length = fields[1] if self._header is MUX_HEADER else fields[0]
            if length > self._limit:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._limit}-byte limit")
            if len(self._buffer) < size + length:
                break
            body = bytes(self._buffer[size : size + length])
            del self._buffer[: size + length]
            frames.append((fields, body))
        return frames


class TtrpcReader:
    """ttrpc frames from one mux connection's byte stream."""

    def __init__(self) -> None:
        self._frames = FrameReader(TTRPC_HEADER, MAX_MESSAGE)

    def feed(self, data: bytes) -> list[TtrpcFrame]:
        return [
            TtrpcFrame(stream_id=fields[1], kind=fields[2], flags=fields[3], data=body)
            for fields, body in self._frames.feed(data)
        ]


class MuxReader:
    """(conn id, payload) pairs from the trunk's byte stream."""

    def __init__(self) -> None:
        self._frames = FrameReader(MUX_HEADER, MAX_MUX_PAYLOAD)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        return [(fields[0], body) for fields, body in self._frames.feed(data)]


def event_bit(event: int) -> int:
    """The bit of `event` (an api_pb2.Event value) in ConfigureResponse.events."""
    return 1 << (event - 1)
