"""Port-forward sessions: the Kubernetes portforward protocol over SPDY or a channel WebSocket.

Theory of operation (kubelet cri/streaming/portforward, client-go tools/portforward):
SPDY (`X-Stream-Protocol-Version: portforward.k8s.io`): for every connection the client accepts
locally it opens two streams carrying the same `requestid` and `port` headers: `streamtype: error` (which
the client half-closes at once: it only reads it) and `streamtype: data`. Once both are there, the
server connects to the port inside the pod and copies bytes both ways; a half-close on one side becomes
a half-close on the other. A failure (nothing listens on the port) is written as text to the error
stream. When the copy is over both streams are closed. One session serves any number of connections.

SPDY over a WebSocket (`SPDY/3.1+portforward.k8s.io`, what kubectl 1.31+ asks for first): the same SPDY
session, its bytes carried in the WebSocket's binary messages (websocket.TunnelConnection).

WebSocket (`v4.channel.k8s.io`, or the unversioned `channel.k8s.io`): one connection per port set. Port i
has channels 2i (data) and 2i+1 (error); each starts with the port number as two little-endian bytes
from the server. The pod connection is made once per port when the session opens.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from podhost.cri.streaming import spdy
from podhost.cri.streaming.websocket import ChannelConnection, Pipe

log = logging.getLogger(__name__)

SPDY_PROTOCOL = "portforward.k8s.io"
WEBSOCKET_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")
#: The WebSocket subprotocol that tunnels the SPDY protocol (k8s.io/apimachinery util/portforward
#: WebsocketsSPDYTunnelingPrefix + PortForwardV1Name).
TUNNEL_PROTOCOL = "SPDY/3.1+" + SPDY_PROTOCOL
READ_SIZE = 32 * 1024

Dial = Callable[[int], socket.socket]


def _copy_to_pod(read: Callable[[], bytes], pod: socket.socket) -> None:
    """Client bytes to the pod until the client's half-close, which becomes the pod socket's."""
    try:
        while data := read():
            pod.sendall(data)
    except OSError as e:
        log.debug("port-forward: to pod: %s", e)
    finally:
        with contextlib.suppress(OSError):
            pod.shutdown(socket.SHUT_WR)


class _Pair:
    def __init__(self) -> None:
        self.data: spdy.Stream | None = None
        self.error: spdy.Stream | None = None
        self.port = 0


class SpdyPortForward:
    """The streams of one SPDY port-forward session, paired by request id and served as they complete."""

    def __init__(self, dial: Dial, allowed_ports: tuple[int, ...], label: str) -> None:
        self.dial = dial
        self.allowed_ports = allowed_ports
        self.label = label
        self._pairs: dict[str, _Pair] = {}
        self._lock = threading.Lock()

    # Session.on_stream callback (reader thread): never blocks.
    def add(self, stream: spdy.Stream) -> None:
        kind, request_id = stream.header("streamtype"), stream.header("requestid")
        if kind not in ("data", "error"):
            stream.abort(spdy.REFUSED_STREAM)
            return
        if not request_id:
            # Clients older than the requestID header: the error stream is opened just before its data.
            request_id = str(stream.id - 2 if kind == "data" else stream.id)
        with self._lock:
            pair = self._pairs.setdefault(request_id, _Pair())
            setattr(pair, kind, stream)
            complete = pair.data is not None and pair.error is not None
            if complete:
                del self._pairs[request_id]
        if complete:
            threading.Thread(
                target=self._serve, args=(pair, request_id), name=f"{self.label}-{request_id}", daemon=True
            ).start()

    def _serve(self, pair: _Pair, request_id: str) -> None:
        assert pair.data is not None and pair.error is not None
        data, error = pair.data, pair.error
        port_text = data.header("port") or error.header("port")
        try:
            port = int(port_text)
        except ValueError:
            self._fail(error, data, f"invalid port {port_text!r}")
            return
        if self.allowed_ports and port not in self.allowed_ports:
            self._fail(error, data, f"port {port} was not requested (requested: {list(self.allowed_ports)})")
            return
        try:
            pod = self.dial(port)
        except Exception as e:
            self._fail(error, data, f"error forwarding port {port} to pod: {e}")
            return
        log.debug("%s: request %s forwarding port %d", self.label, request_id, port)
        to_pod = threading.Thread(target=_copy_to_pod, args=(data.read, pod), daemon=True)
        to_pod.start()
        try:
            while chunk := pod.recv(READ_SIZE):
                data.write(chunk)
        except OSError as e:
            log.debug("%s: from pod: %s", self.label, e)
        finally:
            with contextlib.suppress(OSError):
                data.close()
            to_pod.join()
            pod.close()
            with contextlib.suppress(OSError):
                error.close()
            data.session.forget(data)
            error.session.forget(error)

    def _fail(self, error: spdy.Stream, data: spdy.Stream, message: str) -> None:
        log.info("%s: %s", self.label, message)
        with contextlib.suppress(OSError):
            error.write(message.encode())
            error.close()
            data.close()


def serve_websocket(conn: ChannelConnection, dial: Dial, ports: tuple[int, ...], label: str) -> None:
    """Serve one WebSocket port-forward session until every port's connection has ended."""
    threads = []
    for index, port in enumerate(ports):
        data_channel, error_channel = 2 * index, 2 * index + 1
        prefix = struct.pack("<H", port)
        conn.send(data_channel, prefix)
        conn.send(error_channel, prefix)
        threads.append(
            threading.Thread(
                target=_serve_websocket_port,
                args=(conn, dial, port, data_channel, error_channel, conn.readers[data_channel]),
                name=f"{label}-{port}",
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.close()


def _serve_websocket_port(
    conn: ChannelConnection, dial: Dial, port: int, data_channel: int, error_channel: int, reader: Pipe
) -> None:
    try:
        pod = dial(port)
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(error_channel, f"error forwarding port {port} to pod: {e}".encode())
        return
    to_pod = threading.Thread(target=_copy_to_pod, args=(reader.read, pod), daemon=True)
    to_pod.start()
    try:
        while chunk := pod.recv(READ_SIZE):
            conn.send(data_channel, chunk)
    except OSError as e:
        log.debug("port-forward %d: from pod: %s", port, e)
    finally:
        reader.close()
        to_pod.join(1.0)
        pod.close()
