"""CRI streaming without root: SPDY framing, tokens, statuses, and whole sessions against local processes.

The fake runtime runs exec sessions as ordinary local processes (with a real pty for tty sessions) and
forwards ports to a local echo server, so the server, both transports and the client are exercised end to
end over real sockets; only the container is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from podhost.cli.cri import parse_port_mapping
from podhost.cri.streaming import client, remotecommand, spdy
from podhost.cri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest, validate_stdio
from podhost.cri.streaming.server import StreamingServer, negotiate, parse_head
from podhost.cri.streaming.tokens import TokenCache
from podhost.errors import InvalidArgument, RuntimeFailure, Unavailable
from podhost.runtime.container import ocirt
from podhost.runtime.container.stdio import ExecIO, set_winsize
from tests.wait import wait_for

# --- SPDY ------------------------------------------------------------------------------------------------


def test_spdy_dictionary_is_the_specs() -> None:
    # SPDY/3 section 2.6.10.1: 1423 bytes (digest of the spec's byte listing).
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


def test_header_blocks_share_one_compression_context_per_direction() -> None:
    compressor, decompressor = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    blocks = [
        {"streamtype": ["error"]},
        {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]},
        {"x-multi": ["a", "b"]},
    ]
    encoded = [compressor.block(h) for h in blocks]
    assert [decompressor.block(b) for b in encoded] == blocks
    # Later blocks refer back to earlier ones: they cannot be read by a fresh context.
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderDecompressor().block(encoded[1] + b"\x00garbage")


def test_frames_round_trip_through_the_parser_fed_byte_by_byte() -> None:
    compressor = spdy.HeaderCompressor()
    wire = b"".join(
        [
            spdy.syn_stream_frame(1, compressor.block({"streamtype": ["stdin"]}), priority=2),
            spdy.syn_reply_frame(1, compressor.block({})),
            spdy.data_frame(1, b"hello"),
            spdy.data_frame(1, b"", fin=True),
            spdy.rst_stream_frame(3, spdy.CANCEL),
            spdy.ping_frame(7),
            spdy.goaway_frame(5),
        ]
    )
    parser = spdy.FrameParser()
    frames = [f for byte in wire for f in parser.feed(bytes([byte]))]
    assert [(f.type, f.stream_id) for f in frames] == [
        (spdy.SYN_STREAM, 1), (spdy.SYN_REPLY, 1), (0, 1), (0, 1), (spdy.RST_STREAM, 3), (spdy.PING, 0),
        (spdy.GOAWAY, 5),
    ]  # fmt: skip
    assert frames[0].headers == {"streamtype": ["stdin"]}
    assert frames[2].data == b"hello" and not frames[2].fin and frames[3].fin
    assert frames[4].value == spdy.CANCEL and frames[5].value == 7
    # The wire format itself: control bit, version 3, type; flags and a 24-bit length.
    assert spdy.ping_frame(7) == bytes.fromhex("80030006 00000004 00000007")
    assert spdy.data_frame(5, b"ab", fin=True) == bytes.fromhex("00000005 01000002 6162")


def test_a_session_pair_carries_streams_both_ways() -> None:
    a, b = socket.socketpair()
    accepted: list[spdy.Stream] = []
    server = spdy.Session(a, client=False, on_stream=accepted.append)
    peer = spdy.Session(b, client=True)
    stream = peer.open_stream({"streamtype": ["data"]})
    stream.write(b"x" * 100_000)  # several DATA frames
    stream.close()
    wait_for("the server's handler", lambda: accepted, 10)  # the reply goes out before it has run
    assert accepted[0].header("streamtype") == "data"
    assert accepted[0].read_all(5) == b"x" * 100_000
    accepted[0].write(b"back")
    accepted[0].close()
    assert stream.read_all(5) == b"back"
    peer.close(linger=0.5)
    assert server.wait_closed(5)
    server.close(linger=0)


# --- tokens, statuses, small parsers ----------------------------------------------------------------------


def test_tokens_are_single_use_expire_and_are_bounded() -> None:
    now = [0.0]
    cache: TokenCache[str] = TokenCache(ttl=60, max_in_flight=2, clock=lambda: now[0])
    first = cache.insert("a")
    assert len(first) == 11 and "=" not in first  # 8 bytes, URL-safe base64 without padding
    assert cache.consume(first) == "a" and cache.consume(first) is None
    cache.insert("b")
    cache.insert("c")
    with pytest.raises(Unavailable):
        cache.insert("d")
    now[0] = 61.0
    late = cache.insert("e")  # the expired ones made room
    assert len(cache) == 1
    now[0] = 200.0
    assert cache.consume(late) is None


def test_exit_statuses_by_protocol_version() -> None:
    failed = remotecommand.Outcome(exit_code=3, command=("sh", "-c", "exit 3"))
    document = json.loads(remotecommand.error_stream_bytes(remotecommand.V5, failed))
    assert document["status"] == "Failure" and document["reason"] == "NonZeroExitCode"
    assert document["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    ok = remotecommand.error_stream_bytes(remotecommand.V4, remotecommand.Outcome(exit_code=0))
    assert json.loads(ok) == {"metadata": {}, "status": "Success"}
    assert remotecommand.error_stream_bytes(remotecommand.V3, remotecommand.Outcome(exit_code=0)) == b""
    for version in (remotecommand.V2, remotecommand.V3, remotecommand.V4, remotecommand.V5):
        data = remotecommand.error_stream_bytes(version, failed)
        assert client.exit_code_from_status(version, data) == 3
        assert client.exit_code_from_status(version, b"") == 0
        broken = remotecommand.error_stream_bytes(version, remotecommand.Outcome(error="runc said no"))
        with pytest.raises(RuntimeFailure, match="runc said no"):
            client.exit_code_from_status(version, broken)


def test_resize_stream_is_a_sequence_of_json_objects() -> None:
    decoder = remotecommand.ResizeDecoder()
    assert decoder.feed(b'{"Width":80,"Height":24}\n{"Width":1') == [(80, 24)]
    assert decoder.feed(b'00,"Height":30}{"Width":5,"Height":6}') == [(100, 30), (5, 6)]


def test_request_heads_and_negotiation() -> None:
    raw = (
        b"GET /exec/abc?x=1 HTTP/1.1\r\nHost: h\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\nUpgrade: SPDY/3.1\r\n\r\nrest"
    )
    head = parse_head(raw)
    assert head.path == "/exec/abc" and head.query == {"x": ["1"]}
    assert head.tokens("x-stream-protocol-version") == ["v4.channel.k8s.io", "v3.channel.k8s.io"]
    assert negotiate(["v9", "v3.channel.k8s.io"], remotecommand.SPDY_PROTOCOLS) == "v3.channel.k8s.io"
    assert negotiate(["v9"], remotecommand.SPDY_PROTOCOLS) is None
    with pytest.raises(ValueError):
        parse_head(b"nonsense\r\n\r\n")


def test_stdio_rules_and_port_mappings() -> None:
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        validate_stdio(True, True, True, True)
    with pytest.raises(InvalidArgument, match="one of stdin"):
        validate_stdio(False, False, False, False)
    assert parse_port_mapping("8080:80") == (8080, 80)
    assert parse_port_mapping("80") == (80, 80)
    assert parse_port_mapping(":80") == (0, 80)
    with pytest.raises(InvalidArgument):
        parse_port_mapping("x:80")


# --- whole sessions against local processes ---------------------------------------------------------------


class RecordingExecIO(ExecIO):
    resized: list[tuple[int, int]]

    def resize(self, width: int, height: int) -> None:
        super().resize(width, height)
        self.resized.append((width, height))


class LocalRuntime:
    """Exec runs the command on this machine; port-forward dials 127.0.0.1."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.sizes: list[tuple[int, int] | None] = []
        self.resized: list[tuple[int, int]] = []

    def exec_io(
        self, container_id: str, cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None
    ) -> ExecIO:
        self.sizes.append(size)
        files = [self.scratch / f"{container_id}.{n}" for n in ("process", "pid", "log")]
        if tty:
            master, slave = os.openpty()
            set_winsize(slave, *(size or (80, 24)))
            popen = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
            io_ = RecordingExecIO(ocirt.ExecProcess(popen, *files), True, master, container_id)
            io_.resized = self.resized
            return io_
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return ExecIO(ocirt.ExecProcess(popen, *files), False, None, container_id)

    def attach_io(self, container_id: str) -> ExecIO:
        raise RuntimeFailure(f"container {container_id} has no attach socket")

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StreamingServer]:
    srv = StreamingServer(LocalRuntime(tmp_path))
    srv.start()
    yield srv
    srv.close()


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_exec_streams_stdio_and_reports_the_exit_code(server: StreamingServer, transport: str) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"piped\n")
    os.close(write_fd)
    script = "read line; echo out:$line; echo err >&2; exit 7"
    url = server.get_exec(ExecRequest("c1", ("sh", "-c", script), stdin=True))
    code = client.stream(url, client.StreamOptions(stdin=read_fd, stdout=out, stderr=err), transport)
    os.close(read_fd)
    assert (code, out.getvalue(), err.getvalue()) == (7, b"out:piped\n", b"err\n")


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_tty_exec_gets_the_first_size_and_later_resizes(server: StreamingServer, transport: str) -> None:
    sizes = client.TerminalSizes()
    sizes.push(91, 27)
    out = io.BytesIO()
    read_fd, write_fd = os.pipe()
    url = server.get_exec(
        ExecRequest("c1", ("sh", "-c", "stty size; read x; stty size"), tty=True, stdin=True, stderr=False)
    )
    done: list[int] = []
    runner = threading.Thread(
        target=lambda: done.append(
            client.stream(
                url, client.StreamOptions(stdin=read_fd, stdout=out, tty=True, sizes=sizes), transport
            )
        )
    )
    runner.start()
    runtime = server.runtime
    assert isinstance(runtime, LocalRuntime)
    wait_for("the size, 27 91", lambda: b"27 91" in out.getvalue(), 10)
    assert runtime.sizes[-1] == (91, 27)  # the exec started with the client's size
    sizes.push(120, 40)
    wait_for(
        "the resize", lambda: (120, 40) in runtime.resized, 10
    )  # it travels apart from stdin: land it first
    os.write(write_fd, b"\n")
    runner.join(10)
    sizes.close()
    os.close(write_fd)
    os.close(read_fd)
    assert done == [0] and b"40 120" in out.getvalue()


def test_refusals_expired_tokens_and_unknown_protocols(server: StreamingServer) -> None:
    url = server.get_exec(ExecRequest("c1", ("true",)))
    assert client.stream(url, client.StreamOptions(stdout=io.BytesIO())) == 0
    with pytest.raises(RuntimeFailure, match="404"):  # used once already
        client.stream(url, client.StreamOptions(stdout=io.BytesIO()), "spdy")
    url = server.get_exec(ExecRequest("c1", ("true",)))
    with pytest.raises(RuntimeFailure, match="403"):
        client.upgrade(url, ["v1.nonsense.k8s.io"])
    # A start failure is a Failure status carrying the runtime's message.
    url = server.get_attach(AttachRequest("c9"))
    with pytest.raises(RuntimeFailure, match="no attach socket"):
        client.stream(url, client.StreamOptions(stdout=io.BytesIO()))


def test_port_forward_over_spdy_and_websocket(server: StreamingServer) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    forwarder = client.PortForwarder(server.get_port_forward(PortForwardRequest("p1", (port,))), [(0, port)])
    forwarder.start()
    try:
        for n in range(3):
            with socket.create_connection(("127.0.0.1", forwarder.local_ports[0]), timeout=5) as conn:
                conn.sendall(b"hi%d" % n)
                assert conn.recv(100) == b"echo:hi%d" % n
    finally:
        forwarder.close()
    url = server.get_port_forward(PortForwardRequest("p1", (port,))).replace("http://", "ws://")
    with connect(url, subprotocols=["v4.channel.k8s.io"], proxy=None) as ws:  # type: ignore[list-item]
        prefix = port.to_bytes(2, "little")
        assert {ws.recv(timeout=5), ws.recv(timeout=5)} == {b"\x00" + prefix, b"\x01" + prefix}
        ws.send(b"\x00ws")
        assert ws.recv(timeout=5) == b"\x00echo:ws"
    listener.close()


class _TunnelClient:
    """The client end of a WebSocket that tunnels SPDY (client-go's TunnelingConnection), written out by
    hand: `websockets` refuses the subprotocol's "/" in a response as it does in a request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def _exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def recv(self, bufsize: int) -> bytes:
        while True:
            try:
                first, second = self._exact(2)
            except EOFError:
                return b""
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._exact(2), "big")
            elif length == 127:
                length = int.from_bytes(self._exact(8), "big")
            payload = self._exact(length)
            opcode = first & 0x0F
            if opcode == 0x8:  # close
                return b""
            if opcode in (0x0, 0x2):
                return payload

    def sendall(self, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x82]) + (
            bytes([0x80 | n])
            if n < 126
            else bytes([0x80 | 126]) + n.to_bytes(2, "big")
            if n < 65536
            else bytes([0x80 | 127]) + n.to_bytes(8, "big")
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def shutdown(self, how: int) -> None:
        self.sock.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + (1000).to_bytes(2, "big"))

    def close(self) -> None:
        self.sock.close()


def test_port_forward_spdy_tunnelled_in_a_websocket(server: StreamingServer) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"echo:" + conn.recv(100))

    threading.Thread(target=echo, daemon=True).start()
    url = server.get_port_forward(PortForwardRequest("p1", ()))
    path = "/" + url.split("/", 3)[3]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n" in head, head
    session = spdy.Session(_TunnelClient(sock), client=True, name="tunnel-test")
    common = {"port": [str(port)], "requestid": ["0"]}
    error = session.open_stream({"streamtype": ["error"], **common})
    error.close()
    data = session.open_stream({"streamtype": ["data"], **common})
    data.write(b"tunnelled")
    assert data.read(5) == b"echo:tunnelled"
    data.close()
    assert data.read_all(5) == b"" and error.read_all(5) == b""  # the pod's side ended: both closed
    session.close(linger=1.0)
    listener.close()
