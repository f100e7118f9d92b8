"""The streaming server: the HTTP endpoint behind the URLs that CRI Exec, Attach and PortForward return.

As in the kubelet's `cri/streaming/server.go` (which containerd and CRI-O embed): `get_exec` and kin
put the validated request in a token cache and answer `http://<address>:<port>/<verb>/<token>`; the
client (crictl, the kubelet's proxy, `podhost cri exec -it`) then GETs that URL asking to upgrade the
connection, either to SPDY/3.1 (`X-Stream-Protocol-Version` names the sub-protocol) or to a WebSocket
(`Sec-WebSocket-Protocol`). The token is consumed on first use. The server listens on loopback by
default (Config.stream_address / stream_port, 0 = a free port) and binds nothing else.

One thread per connection: it reads the request head, routes it, answers the upgrade and then runs the
session (podhost.cri.streaming.remotecommand or .portforward) to its end. The runtime behind it is a
`StreamRuntime`; the server never touches containers itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from podhost.cri.streaming import portforward, remotecommand, spdy, websocket
from podhost.cri.streaming.requests import (
    AttachRequest,
    ExecRequest,
    PortForwardRequest,
    ProcessIO,
    StreamRequest,
    StreamRuntime,
)
from podhost.cri.streaming.tokens import TokenCache
from podhost.errors import RuntimeFailure

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
PROTOCOL_HEADER = "x-stream-protocol-version"


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined by ", "
    raw: bytes  # the head and whatever followed it

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def tokens(self, name: str) -> list[str]:
        return [t.strip() for t in self.headers.get(name, "").split(",") if t.strip()]


def parse_head(raw: bytes) -> HttpRequest:
    """The request line and headers of an HTTP/1.1 request head (ends with CRLF CRLF)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return HttpRequest(parts[0], parts[1], headers, raw)


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first protocol the client offered that this side speaks (httpstream.Handshake)."""
    return next((p for p in offered if p in supported), None)


def _response(status: str, body: str = "", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    data = body.encode()
    lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class StreamingServer:
    """Serves exec/attach/port-forward URLs for one runtime. `start()` binds; `close()` stops accepting."""

    def __init__(
        self, runtime: StreamRuntime, address: str = "127.0.0.1", port: int = 0, token_ttl: float = 60.0
    ) -> None:
        self.runtime = runtime
        self.address = address
        self.port = port
        self.cache: TokenCache[StreamRequest] = TokenCache(ttl=token_ttl)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.address, self.port))
        except OSError as e:
            listener.close()
            raise RuntimeFailure(
                f"streaming server: cannot listen on {self.address}:{self.port}: {e.strerror}"
            ) from e
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="streaming-accept", daemon=True)
        self._thread.start()
        log.info("streaming server listening on %s", self.base_url)

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(2.0)

    # --- URLs (what the CRI servicer answers) ------------------------------------------------------

    def get_exec(self, request: ExecRequest) -> str:
        return f"{self.base_url}/exec/{self.cache.insert(request)}"

    def get_attach(self, request: AttachRequest) -> str:
        return f"{self.base_url}/attach/{self.cache.insert(request)}"

    def get_port_forward(self, request: PortForwardRequest) -> str:
        return f"{self.base_url}/portforward/{self.cache.insert(request)}"

    # --- connections -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                break
            threading.Thread(
                target=self._handle, args=(sock, peer), name="streaming-conn", daemon=True
            ).start()

    def _handle(self, sock: socket.socket, peer: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            request = self._read_head(sock)
            if request is not None:
                self._route(sock, request)
        except Exception:
            log.exception("streaming: connection from %s failed", peer)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _read_head(self, sock: socket.socket) -> HttpRequest | None:
        sock.settimeout(HEAD_TIMEOUT_S)
        raw = b""
        while b"\r\n\r\n" not in raw:
            try:
                chunk = sock.recv(4096)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            raw += chunk
            if len(raw) > MAX_HEAD_BYTES:
                sock.sendall(_response("431 Request Header Fields Too Large"))
                return None
        sock.settimeout(None)
        try:
            return parse_head(raw)
        except ValueError as e:
            sock.sendall(_response("400 Bad Request", str(e)))
            return None

    def _route(self, sock: socket.socket, http: HttpRequest) -> None:
        parts = http.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            sock.sendall(_response("404 Not Found", "not found\n"))
            return
        verb, token = parts
        request = self.cache.consume(token)
        wanted = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}[verb]
        if not isinstance(request, wanted):
            sock.sendall(_response("404 Not Found", "invalid or expired token\n"))
            return
        if http.method not in ("GET", "POST"):  # client-go dials port-forward with POST, exec with either
            sock.sendall(_response("405 Method Not Allowed", f"{http.method} is not served\n"))
            return
        if isinstance(request, PortForwardRequest):
            self._port_forward(sock, http, request)
        elif isinstance(request, ExecRequest | AttachRequest):
            self._remotecommand(sock, http, request)

    # --- exec / attach -----------------------------------------------------------------------------

    def _starter(self, request: ExecRequest | AttachRequest):  # type: ignore[no-untyped-def]
        runtime = self.runtime

        def start(size: tuple[int, int] | None) -> ProcessIO:
            if isinstance(request, ExecRequest):
                return runtime.exec_io(
                    request.container_id, list(request.cmd), request.tty, request.stdin, size
                )
            io = runtime.attach_io(request.container_id)
            if size is not None:
                io.resize(*size)
            return io

        return start

    def _remotecommand(
        self, sock: socket.socket, http: HttpRequest, request: ExecRequest | AttachRequest
    ) -> None:
        kind = "exec" if isinstance(request, ExecRequest) else "attach"
        label = f"{kind} {request.container_id[:13]}"
        command = request.cmd if isinstance(request, ExecRequest) else ()
        channels: remotecommand.Channels
        if websocket.is_websocket_upgrade(http.headers):
            conn = websocket.accept(sock, http.raw, remotecommand.WEBSOCKET_PROTOCOLS, 5, label)
            if conn is None:
                return
            conn.start()
            ready = (
                remotecommand.STDOUT
                if request.stdout
                else remotecommand.STDERR
                if request.stderr
                else remotecommand.ERROR
            )
            conn.send(ready, b"")  # "the streams are open" (kubelet's createWebSocketStreams)
            channels = remotecommand.WebSocketChannels(conn, request.stdin, request.tty)
        elif http.headers.get("upgrade", "").lower() == spdy.UPGRADE_TOKEN.lower():
            version = negotiate(http.tokens(PROTOCOL_HEADER), remotecommand.SPDY_PROTOCOLS)
            if version is None:
                sock.sendall(
                    _response(
                        "403 Forbidden",
                        f"no supported stream protocol in {http.tokens(PROTOCOL_HEADER)}\n",
                        {"X-Accepted-Stream-Protocol-Versions": ", ".join(remotecommand.SPDY_PROTOCOLS)},
                    )
                )
                return
            spdy_channels = self._spdy_upgrade(sock, http, version, label)
            expected = {remotecommand.ERROR}
            expected |= {
                k
                for k, on in ((remotecommand.STDIN, request.stdin), (remotecommand.STDOUT, request.stdout))
                if on
            }
            if request.stderr and not request.tty:
                expected.add(remotecommand.STDERR)
            if request.tty and remotecommand.supports_resize(version):
                expected.add(remotecommand.RESIZE)
            if not spdy_channels.wait_for(expected, remotecommand.STREAM_CREATION_TIMEOUT_S):
                log.warning("%s: the client did not open its streams in time", label)
                assert spdy_channels.session is not None
                spdy_channels.session.close()
                return
            channels = spdy_channels
        else:
            sock.sendall(_response("400 Bad Request", "expected an upgrade to SPDY/3.1 or websocket\n"))
            return
        remotecommand.run_session(channels, self._starter(request), command, label)

    def _spdy_upgrade(
        self, sock: socket.socket, http: HttpRequest, version: str, label: str
    ) -> remotecommand.SpdyChannels:
        sock.sendall(
            _response_upgrade(
                {"Connection": "Upgrade", "Upgrade": spdy.UPGRADE_TOKEN, "X-Stream-Protocol-Version": version}
            )
        )
        channels = remotecommand.SpdyChannels(version)
        leftover = http.raw.split(b"\r\n\r\n", 1)[1]
        channels.session = spdy.Session(
            sock, client=False, on_stream=channels.add, initial=leftover, name=label
        )
        return channels

    # --- port-forward ------------------------------------------------------------------------------

    def _port_forward(self, sock: socket.socket, http: HttpRequest, request: PortForwardRequest) -> None:
        label = f"portforward {request.pod_sandbox_id[:13]}"
        runtime = self.runtime

        def dial(port: int) -> socket.socket:
            return runtime.port_forward(request.pod_sandbox_id, port)

        if websocket.is_websocket_upgrade(http.headers):
            if portforward.TUNNEL_PROTOCOL in websocket.offered_subprotocols(http.headers):
                protocol = websocket.handshake(sock, http.raw, (portforward.TUNNEL_PROTOCOL,), label)
                if protocol is None:
                    return
                tunnel = websocket.TunnelConnection(sock, protocol, label)
                tunnel.start()
                _serve_spdy_port_forward(tunnel, dial, request.ports, b"", label)
                return
            try:
                ports = tuple(int(p) for p in http.query.get("port", [])) or request.ports
            except ValueError:
                sock.sendall(_response("400 Bad Request", "port must be a number\n"))
                return
            if not ports:
                sock.sendall(_response("400 Bad Request", "no port to forward\n"))
                return
            conn = websocket.accept(sock, http.raw, portforward.WEBSOCKET_PROTOCOLS, 2 * len(ports), label)
            if conn is None:
                return
            conn.start()
            portforward.serve_websocket(conn, dial, ports, label)
            return
        if http.headers.get("upgrade", "").lower() != spdy.UPGRADE_TOKEN.lower():
            sock.sendall(_response("400 Bad Request", "expected an upgrade to SPDY/3.1 or websocket\n"))
            return
        offered = http.tokens(PROTOCOL_HEADER)
        if negotiate(offered, (portforward.SPDY_PROTOCOL,)) is None:
            sock.sendall(
                _response(
                    "403 Forbidden",
                    f"no supported stream protocol in {offered}\n",
                    {"X-Accepted-Stream-Protocol-Versions": portforward.SPDY_PROTOCOL},
                )
            )
            return
        sock.sendall(
            _response_upgrade(
                {
                    "Connection": "Upgrade",
                    "Upgrade": spdy.UPGRADE_TOKEN,
                    "X-Stream-Protocol-Version": portforward.SPDY_PROTOCOL,
                }
            )
        )
        leftover = http.raw.split(b"\r\n\r\n", 1)[1]
        _serve_spdy_port_forward(sock, dial, request.ports, leftover, label)


def _serve_spdy_port_forward(
    conn: spdy.Connection, dial: portforward.Dial, ports: tuple[int, ...], leftover: bytes, label: str
) -> None:
    """One SPDY port-forward session, over the upgraded socket or a WebSocket tunnel, until the client
    hangs up."""
    forwarder = portforward.SpdyPortForward(dial, ports, label)
    session = spdy.Session(conn, client=False, on_stream=forwarder.add, initial=leftover, name=label)
    session.wait_closed()  # the client hung up (or went away)
    session.close(linger=0.5)
    log.info("%s: session ended", label)


def _response_upgrade(headers: dict[str, str]) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
