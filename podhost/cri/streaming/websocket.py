"""Kubernetes channel WebSockets (`v5.channel.k8s.io` and kin) over the `websockets` sans-I/O protocol.

Theory of operation. The client upgrades with `Sec-WebSocket-Protocol` listing the versions it speaks;
this side picks the first it also speaks (client order, as the kubelet's wsstream does). Every binary
message is one channel's bytes: the first byte is the channel number, the rest the payload. Exec and
attach use channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize (channel numbers equal the SPDY
stream types of remotecommand); v5 adds a message `[255, n]` that closes channel n, which is how a
client says "no more stdin". Port-forward uses two channels per port (data, error) and starts each with
the port number as two little-endian bytes. Messages may arrive fragmented (gorilla/websocket flushes
large messages in pieces); they are reassembled before they are split by channel.

A port-forward client may instead offer `SPDY/3.1+portforward.k8s.io` (kubectl 1.31 and later): the
WebSocket then tunnels a SPDY session, each binary message a run of the session's bytes, no channel
byte (client-go tools/portforward/tunneling_connection.go). `TunnelConnection` gives such a connection
the socket surface (`recv`, `sendall`, `shutdown`, `close`) that `spdy.Session` runs over.

The WebSocket framing, masking, ping/pong and close handshake are the `websockets` library's
(`ServerProtocol`); this module only moves bytes between it and the socket and demultiplexes channels.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import deque
from collections.abc import Sequence

from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

#: v5's "close this channel" message starts with this byte (remotecommand.StreamClose).
CLOSE_CHANNEL = 255


class Pipe:
    """Bytes from a reader thread to one consumer: blocking `read()`, b"" once closed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._closed = False

    def put(self, data: bytes) -> None:
        with self._cond:
            if not self._closed and data:
                self._chunks.append(data)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._closed, timeout):
                raise TimeoutError("no data")
            return self._chunks.popleft() if self._chunks else b""


#: RFC 6455 makes subprotocol names HTTP tokens, which may not hold a "/"; Kubernetes' tunnelling names
#: (`SPDY/3.1+portforward.k8s.io`) do, and `websockets` refuses them. On the way in they become tokens by
#: this swap, and the response names the protocol as the client spelled it.
_SLASH_ALIAS = "~"


def _token(name: str) -> str:
    return name.replace("/", _SLASH_ALIAS)


def _name(token: str) -> str:
    return token.replace(_SLASH_ALIAS, "/")


def _with_token_subprotocols(raw: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"sec-websocket-protocol":
            lines[i] = name + colon + value.replace(b"/", _SLASH_ALIAS.encode())
    return b"\r\n".join(lines) + sep + rest


def _client_order(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return next((p for p in offered if p in supported), None)


def is_websocket_upgrade(headers: dict[str, str]) -> bool:
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "upgrade" in connection and headers.get("upgrade", "").lower() == "websocket"


class MessageConnection:
    """A server-side WebSocket after a successful handshake: one reader thread reassembles messages and
    hands each to `_deliver`; `send_message` sends one binary message."""

    def __init__(self, sock: socket.socket, protocol: ServerProtocol, name: str) -> None:
        self.sock = sock
        self.protocol = protocol
        self.subprotocol = _name(str(protocol.subprotocol or ""))
        self.name = name
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"{name}-ws-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def send_message(self, data: bytes) -> None:
        with self._lock:
            if self._closed.is_set():
                raise BrokenPipeError(f"{self.name}: websocket closed")
            self.protocol.send_binary(data)
            self._flush()

    def _read_loop(self) -> None:
        fragments: list[bytes] = []
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    if data:
                        self.protocol.receive_data(data)
                    else:
                        self.protocol.receive_eof()
                    events = self.protocol.events_received()
                    with contextlib.suppress(OSError):
                        self._flush()  # pongs, the reply to a close
                for event in events:
                    if isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                        fragments.append(bytes(event.data))
                        if event.fin:
                            self._deliver(b"".join(fragments))
                            fragments = []
                if not data or self.protocol.close_expected() or self.protocol.close_rcvd is not None:
                    break
        except Exception:
            log.exception("%s: websocket reader failed", self.name)
        finally:
            self._closed.set()
            self._ended()

    def _deliver(self, message: bytes) -> None:
        raise NotImplementedError

    def _ended(self) -> None:
        """The peer is gone or closed: wake whoever waits for its bytes."""

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def close(self, code: int = 1000, reason: str = "", linger: float = 2.0) -> None:
        """The closing handshake, then the socket: wait up to `linger` seconds for the peer's close."""
        with self._lock, contextlib.suppress(Exception):
            if self.protocol.close_sent is None:
                self.protocol.send_close(code, reason)
            self._flush()
        self._thread.join(linger)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(1.0)


class ChannelConnection(MessageConnection):
    """A Kubernetes channel WebSocket: the first byte of each message names its channel."""

    def __init__(self, sock: socket.socket, protocol: ServerProtocol, channels: int, name: str) -> None:
        super().__init__(sock, protocol, name)
        self.supports_close = self.subprotocol.startswith("v5.")
        self.readers = [Pipe() for _ in range(channels)]

    def send(self, channel: int, data: bytes) -> None:
        """One message on `channel` (an empty payload is a message too: the 'channel open' signal)."""
        self.send_message(bytes([channel]) + data)

    def _deliver(self, message: bytes) -> None:
        if not message:
            return
        channel, payload = message[0], message[1:]
        if channel == CLOSE_CHANNEL and self.supports_close:
            if len(payload) == 1 and payload[0] < len(self.readers):
                self.readers[payload[0]].close()
            return
        if channel >= len(self.readers):
            log.debug("%s: message for unknown channel %d dropped", self.name, channel)
            return
        self.readers[channel].put(payload)

    def _ended(self) -> None:
        for reader in self.readers:
            reader.close()


class TunnelConnection(MessageConnection):
    """A WebSocket that tunnels a byte stream (SPDY) in binary messages, with the socket methods
    `spdy.Session` uses: `recv` (b"" at the end), `sendall`, `shutdown`, `close`."""

    def __init__(self, sock: socket.socket, protocol: ServerProtocol, name: str) -> None:
        super().__init__(sock, protocol, name)
        self._incoming = Pipe()

    def _deliver(self, message: bytes) -> None:
        self._incoming.put(message)

    def _ended(self) -> None:
        self._incoming.close()

    def recv(self, bufsize: int) -> bytes:
        return self._incoming.read()

    def sendall(self, data: bytes) -> None:
        self.send_message(data)

    def shutdown(self, how: int) -> None:
        """SHUT_WR says "nothing more from this side": the WebSocket close handshake starts."""
        with self._lock, contextlib.suppress(Exception):
            if self.protocol.close_sent is None:
                self.protocol.send_close(1000, "")
            self._flush()
        if how == socket.SHUT_RDWR:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self, code: int = 1000, reason: str = "", linger: float = 0.5) -> None:
        super().close(code, reason, linger)


def offered_subprotocols(headers: dict[str, str]) -> list[str]:
    return [t.strip() for t in headers.get("sec-websocket-protocol", "").split(",") if t.strip()]


def handshake(
    sock: socket.socket, raw_request: bytes, supported: Sequence[str], name: str
) -> ServerProtocol | None:
    """Answer the upgrade request in `raw_request` (bytes read so far): the open protocol, or None when
    it was refused (the refusal has been sent)."""

    def select(_: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        names = [_name(p) for p in offered]
        chosen = _client_order(names, supported)
        if chosen is None:
            raise NegotiationError(f"no supported subprotocol in {names} (podhost speaks {list(supported)})")
        return Subprotocol(_token(chosen))

    protocol = ServerProtocol(select_subprotocol=select, max_size=None)
    protocol.receive_data(_with_token_subprotocols(raw_request))
    requests = [e for e in protocol.events_received() if isinstance(e, Request)]
    if not requests:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return None
    response = protocol.accept(requests[0])
    if "Sec-WebSocket-Protocol" in response.headers:
        chosen = _name(response.headers["Sec-WebSocket-Protocol"])
        del response.headers["Sec-WebSocket-Protocol"]
        response.headers["Sec-WebSocket-Protocol"] = chosen
    protocol.send_response(response)
    for chunk in protocol.data_to_send():
        if chunk:
            sock.sendall(chunk)
    if response.status_code != 101:
        log.info("%s: websocket upgrade refused: %s", name, response.body.decode(errors="replace").strip())
        return None
    return protocol


def accept(
    sock: socket.socket, raw_request: bytes, supported: Sequence[str], channels: int, name: str
) -> ChannelConnection | None:
    """A channel WebSocket from the upgrade request in `raw_request`; None when it was refused."""
    protocol = handshake(sock, raw_request, supported, name)
    return None if protocol is None else ChannelConnection(sock, protocol, channels, name)
