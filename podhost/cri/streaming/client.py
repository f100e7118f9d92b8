"""The client side of CRI streaming: run an exec/attach URL, forward ports through a port-forward URL.

What crictl (and kubectl through the kubelet) do with the URL a runtime returns, for `podhost cri exec -it`,
`cri attach`, `cri port-forward` and the pod manager's `podhost exec -it`. It works against any CRI runtime's
streaming server (podhost's, containerd's, CRI-O's):

- exec/attach over a WebSocket (`v5.channel.k8s.io`, falling back to v4) or SPDY/3.1 (`v4.channel.k8s.io`);
  the exit code comes back in the error stream's metav1.Status (`exit_code_from_status`);
- port-forward over SPDY (`portforward.k8s.io`): one session, two streams per local connection, as
  client-go's tools/portforward does (a WebSocket URL serves one connection only, a token being single-use).

Terminal handling for interactive use (raw mode, the window size and its changes via SIGWINCH) is here too,
so every command that gives a user a container's terminal behaves the same. The protocols themselves live
in podhost.cri.streaming.spdy / .websocket / .remotecommand; this module only drives them as a client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import signal
import socket
import sys
import termios
import threading
import tty as tty_module
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import BinaryIO
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from podhost.cri.streaming import portforward as pf_protocol
from podhost.cri.streaming import remotecommand as rc
from podhost.cri.streaming import spdy
from podhost.cri.streaming.websocket import CLOSE_CHANNEL
from podhost.errors import InvalidArgument, RuntimeFailure, Unavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
READ_SIZE = 32 * 1024
_EXIT_CODE_IN_TEXT = re.compile(r"exit code (\d+)")


# --- outcome -----------------------------------------------------------------------------------------------


def exit_code_from_status(version: str, data: bytes) -> int:
    """The exit code a session's error stream reports; RuntimeFailure for a failure that is not an exit."""
    text = data.decode(errors="replace").strip()
    if not text:
        return 0
    if rc.status_json(version):
        try:
            status = json.loads(text)
        except ValueError as e:
            raise RuntimeFailure(f"unreadable status from the streaming server: {text[:200]!r}") from e
        if status.get("status") == "Success":
            return 0
        if status.get("reason") == "NonZeroExitCode":
            for cause in status.get("details", {}).get("causes", []):
                if cause.get("reason") == "ExitCode":
                    return int(cause.get("message", "1"))
        raise RuntimeFailure(str(status.get("message") or text))
    if match := _EXIT_CODE_IN_TEXT.search(text):
        return int(match.group(1))
    raise RuntimeFailure(text)


# --- terminals ---------------------------------------------------------------------------------------------


def terminal_size(fd: int) -> tuple[int, int]:
    """(width, height) of the terminal on `fd`."""
    size = os.get_terminal_size(fd)
    return size.columns, size.lines


class TerminalSizes:
    """Sizes to send on the resize stream: the first one, then one per change."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()

    def push(self, width: int, height: int) -> None:
        self._queue.put((width, height))

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while (size := self._queue.get()) is not None:
            yield size


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the terminal on `fd` in raw mode (every key goes to the container's tty, which does the echo
    and line editing), and restore it however the block ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty_module.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@contextlib.contextmanager
def watch_terminal_size(fd: int) -> Iterator[TerminalSizes]:
    """The terminal's size now and after every SIGWINCH (install from the main thread)."""
    sizes = TerminalSizes()
    sizes.push(*terminal_size(fd))

    def on_winch(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            sizes.push(*terminal_size(fd))

    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        yield sizes
    finally:
        signal.signal(signal.SIGWINCH, previous)
        sizes.close()


# --- exec / attach -----------------------------------------------------------------------------------------


@dataclass
class StreamOptions:
    """What the client connects: `stdin` is a file descriptor to read (None: no stdin stream)."""

    stdin: int | None = None
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None
    tty: bool = False
    sizes: TerminalSizes | None = None


def _read_fd(fd: int) -> Iterator[bytes]:
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            return
        if not data:
            return
        yield data


def _write(out: BinaryIO | None, data: bytes) -> None:
    if out is not None:
        out.write(data)
        out.flush()


def stream(url: str, options: StreamOptions, transport: str = "websocket") -> int:
    """Run an exec/attach session at `url` until it ends; the remote exit code (0 for attach)."""
    if transport == "websocket":
        return _stream_websocket(url, options)
    if transport == "spdy":
        return _stream_spdy(url, options)
    raise InvalidArgument(f"unknown transport {transport!r} (websocket or spdy)")


def _stream_websocket(url: str, options: StreamOptions) -> int:
    parts = urlsplit(url)
    ws_url = parts._replace(scheme="wss" if parts.scheme == "https" else "ws").geturl()
    connected = False
    try:
        with connect(
            ws_url,
            subprotocols=[rc.V5, rc.V4],  # type: ignore[list-item]
            compression=None,
            proxy=None,  # the streaming server is the runtime's own; never through a proxy
            max_size=None,
            open_timeout=CONNECT_TIMEOUT_S,
        ) as conn:
            connected = True
            return _run_websocket(conn, options)
    except InvalidHandshake as e:  # e.g. a 404 for an expired or used token
        raise RuntimeFailure(f"streaming server refused {parts.path}: {e}") from e
    except (OSError, TimeoutError) as e:
        if connected:
            raise
        raise Unavailable(f"cannot reach the streaming server at {parts.netloc}: {e}") from e


def _run_websocket(conn: ClientConnection, options: StreamOptions) -> int:
    version = conn.subprotocol or ""
    error = bytearray()
    lock = threading.Lock()

    def send(channel: int, data: bytes) -> None:
        with lock:
            conn.send(bytes([channel]) + data)

    def pump_stdin(fd: int) -> None:
        try:
            for data in _read_fd(fd):
                send(rc.STDIN, data)
            if version == rc.V5:
                send(CLOSE_CHANNEL, bytes([rc.STDIN]))
        except (ConnectionClosed, OSError):
            pass

    def pump_sizes(sizes: TerminalSizes) -> None:
        try:
            for width, height in sizes:
                send(rc.RESIZE, json.dumps({"Width": width, "Height": height}).encode())
        except (ConnectionClosed, OSError):
            pass

    _start_pumps(options, pump_stdin, pump_sizes)
    while True:
        try:
            message = conn.recv()
        except ConnectionClosed:
            break
        if isinstance(message, str) or not message:
            continue
        channel, payload = message[0], message[1:]
        if channel == rc.STDOUT:
            _write(options.stdout, payload)
        elif channel == rc.STDERR:
            _write(options.stderr or options.stdout, payload)
        elif channel == rc.ERROR:
            error += payload
    return exit_code_from_status(version, bytes(error))


def _start_pumps(options: StreamOptions, pump_stdin, pump_sizes) -> None:  # type: ignore[no-untyped-def]
    if options.stdin is not None:
        threading.Thread(target=pump_stdin, args=(options.stdin,), name="stdin", daemon=True).start()
    if options.tty and options.sizes is not None:
        threading.Thread(target=pump_sizes, args=(options.sizes,), name="resize", daemon=True).start()


def upgrade(url: str, protocols: list[str]) -> tuple[socket.socket, str, bytes]:
    """Connect to `url` and upgrade to SPDY/3.1 offering `protocols`; (socket, chosen protocol, bytes
    already read past the response head)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise InvalidArgument(f"SPDY streaming over {parts.scheme!r} is not supported (plain http only)")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as e:
        raise Unavailable(f"cannot reach the streaming server at {parts.netloc}: {e.strerror or e}") from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = [
        f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: Upgrade",
        f"Upgrade: {spdy.UPGRADE_TOKEN}",
        *[f"X-Stream-Protocol-Version: {p}" for p in protocols],
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = b""
    try:
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(4096)
            if not chunk:
                break
            raw += chunk
    except OSError as e:
        sock.close()
        raise Unavailable(f"streaming server at {parts.netloc}: {e}") from e
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines_in = head.decode("latin-1").split("\r\n")
    status = lines_in[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        sock.close()
        body = rest.decode(errors="replace").strip()
        raise RuntimeFailure(f"streaming server refused {parts.path}: {' '.join(status[1:])} {body}".strip())
    chosen = ""
    for line in lines_in[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-stream-protocol-version":
            chosen = value.strip()
    sock.settimeout(None)
    return sock, chosen, rest


def _stream_spdy(url: str, options: StreamOptions) -> int:
    sock, version, rest = upgrade(url, list(rc.SPDY_PROTOCOLS))
    session = spdy.Session(sock, client=True, initial=rest, name="spdy-client")
    try:

        def open_stream(kind: str) -> spdy.Stream:
            return session.open_stream({"streamtype": [kind]})

        error = open_stream("error")
        error.close()  # the client only reads it
        stdin = open_stream("stdin") if options.stdin is not None else None
        outputs = [(open_stream("stdout"), options.stdout)] if options.stdout is not None else []
        if options.stderr is not None and not options.tty:
            outputs.append((open_stream("stderr"), options.stderr))
        resize = (
            open_stream("resize")
            if options.tty and options.sizes is not None and rc.supports_resize(version)
            else None
        )

        def pump_stdin(fd: int) -> None:
            assert stdin is not None
            try:
                for data in _read_fd(fd):
                    stdin.write(data)
                stdin.close()
            except OSError:
                pass

        def pump_sizes(sizes: TerminalSizes) -> None:
            if resize is None:
                return
            try:
                for width, height in sizes:
                    resize.write(json.dumps({"Width": width, "Height": height}).encode() + b"\n")
            except OSError:
                pass

        _start_pumps(options, pump_stdin, pump_sizes)

        def copy_out(source: spdy.Stream, out: BinaryIO | None) -> None:
            while data := source.read():
                _write(out, data)

        readers = [threading.Thread(target=copy_out, args=pair, daemon=True) for pair in outputs]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        status = error.read_all()
    finally:
        session.close(linger=0.5)
    return exit_code_from_status(version, status)


# --- port-forward ------------------------------------------------------------------------------------------


class PortForwarder:
    """Listens on `address`:<local> for every (local, remote) pair and forwards each connection through one
    SPDY port-forward session. A local port 0 takes a free port (see `local_ports` after `start`)."""

    def __init__(self, url: str, ports: list[tuple[int, int]], address: str = "127.0.0.1") -> None:
        self.url = url
        self.ports = ports
        self.address = address
        self.local_ports: list[int] = []
        self.errors: list[str] = []
        self._listeners: list[socket.socket] = []
        self._session: spdy.Session | None = None
        self._request_id = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        sock, _, rest = upgrade(self.url, [pf_protocol.SPDY_PROTOCOL])
        self._session = spdy.Session(sock, client=True, initial=rest, name="portforward-client")
        for local, remote in self.ports:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self.address, local))
            except OSError as e:
                listener.close()
                self.close()
                raise Unavailable(f"cannot listen on {self.address}:{local}: {e.strerror}") from e
            listener.listen(16)
            self._listeners.append(listener)
            self.local_ports.append(listener.getsockname()[1])
            threading.Thread(target=self._accept, args=(listener, remote), daemon=True).start()

    def wait(self) -> None:
        """Until the session ends (the server went away) or `close()`."""
        assert self._session is not None
        self._session.wait_closed()

    def close(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._session is not None:
            self._session.close(linger=0.5)

    def _accept(self, listener: socket.socket, remote: int) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn, remote), daemon=True).start()

    def _forward(self, conn: socket.socket, remote: int) -> None:
        assert self._session is not None
        with self._lock:
            request_id, self._request_id = self._request_id, self._request_id + 1
        headers = {"port": [str(remote)], "requestid": [str(request_id)]}
        try:
            error = self._session.open_stream({"streamtype": ["error"], **headers})
            error.close()
            data = self._session.open_stream({"streamtype": ["data"], **headers})
        except (OSError, ConnectionError) as e:
            log.warning("port-forward %d: %s", remote, e)
            conn.close()
            return

        def report_error() -> None:
            if message := error.read_all().decode(errors="replace"):
                self.errors.append(message)
                log.warning("port-forward %d: %s", remote, message)
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

        def to_remote() -> None:
            try:
                while chunk := conn.recv(READ_SIZE):
                    data.write(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                data.close()

        threads = [threading.Thread(target=f, daemon=True) for f in (report_error, to_remote)]
        for thread in threads:
            thread.start()
        try:
            while chunk := data.read():
                conn.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        threads[1].join()
        threads[0].join(5.0)
        conn.close()
        self._session.forget(data)
        self._session.forget(error)


# --- a user's terminal -------------------------------------------------------------------------------------


def run_interactive(url: str, *, stdin: bool, tty: bool, transport: str = "websocket") -> int:
    """Run an exec/attach session on this process's stdio, as `crictl exec -it` does: with `tty` and a
    terminal on stdin, the terminal goes raw for the session and its size follows the window (SIGWINCH).
    The remote exit code is returned; the terminal is restored however the session ends."""
    stdin_fd = sys.stdin.fileno() if stdin else None
    out, err = sys.stdout.buffer, sys.stderr.buffer
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = tty and sys.stdin.isatty()
    options = StreamOptions(stdin=stdin_fd, stdout=out, stderr=None if tty else err, tty=tty)
    if not terminal:
        return stream(url, options, transport)
    fd = sys.stdin.fileno()
    with watch_terminal_size(fd) as sizes, raw_terminal(fd):
        options.sizes = sizes
        return stream(url, options, transport)
