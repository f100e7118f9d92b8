"""pods/exec, pods/attach and pods/portforward: the kubelet's way, over the CRI streaming server.

Theory of operation (the kubelet's pkg/kubelet/server/server.go: getExec, getAttach, getPortForward).
The request names a pod and, for exec and attach, a container and the streams it wants
(`PodExecOptions`, `PodAttachOptions` as query parameters). This module resolves the pod to the CRI
ids the pod manager observed, asks the runtime over CRI for a streaming URL (Exec, Attach, PortForward:
what the kubelet's GetExec and kin do), then replays the client's upgrade request to that URL and copies
bytes both ways until either side hangs up (the kubelet's UpgradeAwareHandler, without redirects).

So the protocols kubectl may ask for are the CRI streaming server's (podhost.cri.streaming): WebSocket
`v5.channel.k8s.io` down to v2 for exec and attach, SPDY/3.1 with `X-Stream-Protocol-Version` for
older clients, and for port-forward SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`, what
kubectl 1.31+ asks first) or plain SPDY. One implementation serves crictl, a kubelet and kubectl; this
module parses no stream protocol at all.

Taking the connection over from aiohttp: the handler answers nothing itself. It installs a payload
parser on the connection (`RequestHandler.set_parser`, as aiohttp's own WebSocketResponse does), so
every byte the client sends after the request head goes upstream, writes the upstream's bytes (its 101
first) straight to the TLS transport, and at the end closes the connection and returns a response that
writes nothing. Errors found before the takeover (no such pod, container not running) are ordinary
`Status` answers, which kubectl prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from podhost.apiserver import logs
from podhost.apiserver.status import BadRequest
from podhost.cri import api_pb2 as pb
from podhost.errors import NotFound, Unavailable
from podhost.kubelet.podspec import LABEL_POD_UID

if TYPE_CHECKING:
    from podhost.kubelet.manager import PodManager

log = logging.getLogger(__name__)

SUBRESOURCES = ("exec", "attach", "portforward")
#: Above this many bytes waiting to be written to one side, reading from the other side pauses.
HIGH_WATER = 1 << 20
READ_SIZE = 64 * 1024
#: Request headers not replayed upstream: hop-by-hop ones that the replay sets itself.
_NOT_REPLAYED = {"host", "content-length", "transfer-encoding", "authorization"}


def _flag(q: Any, name: str, default: bool = False) -> bool:
    value = q.get(name)
    if value is None:
        return default
    return str(value).lower() in ("true", "1")


@dataclass(frozen=True)
class StreamOptions:
    """PodExecOptions / PodAttachOptions from the query (core/v1 types.go)."""

    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, q: Any) -> StreamOptions:
        command = tuple(q.getall("command", [])) if hasattr(q, "getall") else tuple(q.get("command", ()))
        return cls(
            container=str(q.get("container", "")),
            command=command,
            stdin=_flag(q, "stdin"),
            stdout=_flag(q, "stdout"),
            stderr=_flag(q, "stderr"),
            tty=_flag(q, "tty"),
        )

    def validate(self, exec_: bool) -> None:
        """kube-apiserver's validation of PodExecOptions / PodAttachOptions."""
        if exec_ and not self.command:
            raise BadRequest("you must specify at least 1 command")
        if not (self.stdin or self.stdout or self.stderr):
            raise BadRequest("you must specify at least one of stdin, stdout, stderr")


def ports_from_query(q: Any) -> list[int]:
    """PodPortForwardOptions.ports (kube-apiserver); SPDY clients send none and name a port per stream."""
    values = q.getall("ports", []) if hasattr(q, "getall") else q.get("ports", [])
    ports = []
    for value in values:
        for part in str(value).split(","):
            try:
                port = int(part)
            except ValueError:
                raise BadRequest(f"invalid port {part!r}") from None
            if not 0 < port < 65536:
                raise BadRequest(f"port {port} must be in the range 1 to 65535")
            ports.append(port)
    return ports


def _phase_check(pod: dict[str, Any], verb: str) -> None:
    phase = pod.get("status", {}).get("phase", "")
    if phase in ("Succeeded", "Failed"):
        what = "exec into" if verb == "exec" else "attach to"
        raise BadRequest(f"cannot {what} a container in a completed pod; current phase is {phase}")


def stream_url(
    manager: PodManager, pod: dict[str, Any], verb: str, q: Any
) -> str:  # runs in the executor: CRI calls block
    """Resolve the request to CRI ids and ask the runtime for the streaming URL (the kubelet's GetExec,
    GetAttach, GetPortForward)."""
    meta = pod.get("metadata", {})
    namespace, name = meta.get("namespace", "default"), meta.get("name", "")
    _phase_check(pod, verb)
    if verb == "portforward":
        uid = meta.get("uid", "")
        sandboxes = manager.cri.list_pod_sandbox(
            pb.PodSandboxFilter(
                label_selector={LABEL_POD_UID: uid},
                state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY),
            )
        )
        if not sandboxes:
            raise BadRequest(f'pod "{name}" has no running sandbox to forward ports into')
        newest = max(sandboxes, key=lambda s: s.created_at)
        return manager.cri.port_forward(newest.id, ports_from_query(q))
    options = StreamOptions.from_query(q)
    options.validate(verb == "exec")
    container = logs.default_container(pod, options.container)
    where = manager.locate(namespace, name, container)
    if not where.get("container_id"):
        raise BadRequest(f'container not found ("{container}")')
    if not where.get("running"):
        raise BadRequest(f'container "{container}" in pod "{name}" is not running')
    container_id = str(where["container_id"]).split("://")[-1]
    if verb == "exec":
        return manager.cri.exec(
            pb.ExecRequest(
                container_id=container_id,
                cmd=list(options.command),
                tty=options.tty,
                stdin=options.stdin,
                stdout=options.stdout,
                stderr=options.stderr,
            )
        )
    return manager.cri.attach(
        pb.AttachRequest(
            container_id=container_id,
            tty=options.tty,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
        )
    )


def replayed_head(request: web.BaseRequest, url: str) -> bytes:
    """The client's request head, aimed at the streaming URL: same method and upgrade headers."""
    target = urlsplit(url)
    path = target.path + (f"?{target.query}" if target.query else "")
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {target.netloc}"]
    for name, value in request.raw_headers:
        if name.decode("latin-1").lower() not in _NOT_REPLAYED:
            lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Taken(web.StreamResponse):
    """What a handler returns once it took the connection over: aiohttp must write nothing more."""

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class _Upstream:
    """aiohttp's payload parser for a taken-over connection: the client's bytes go to the upstream
    writer; reading from the client pauses while the upstream is slow."""

    def __init__(
        self, writer: asyncio.StreamWriter, client: asyncio.Transport, on_eof: Callable[[], None]
    ) -> None:
        self.writer = writer
        self.client = client
        self.on_eof = on_eof
        self._draining = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.writer.is_closing():
            return False, b""
        self.writer.write(data)
        if not self._draining and self.writer.transport.get_write_buffer_size() > HIGH_WATER:
            self._draining = True
            self.client.pause_reading()
            asyncio.get_running_loop().create_task(self._drain())
        return False, b""

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        self._draining = False
        with contextlib.suppress(Exception):
            self.client.resume_reading()

    def feed_eof(self) -> None:
        self.on_eof()


async def proxy(request: web.Request, url: str, label: str) -> web.StreamResponse:
    """Replay `request` to the streaming server at `url` and copy bytes both ways until one side ends."""
    target = urlsplit(url)
    try:
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
    except OSError as e:
        raise Unavailable(f"the streaming server at {target.netloc} does not answer: {e}") from None
    client = request.transport
    if client is None:  # the client is already gone
        writer.close()
        return _Taken()
    client_gone = asyncio.Event()

    def hang_up() -> None:
        client_gone.set()
        writer.close()

    writer.write(replayed_head(request, url))
    request.protocol.set_parser(_Upstream(writer, client, hang_up))  # type: ignore[arg-type]
    log.debug("kube-api: %s: proxying to %s", label, target.netloc)
    try:
        while not client_gone.is_set():
            try:
                data = await reader.read(READ_SIZE)
            except ConnectionError:
                break
            if not data or client.is_closing():
                break
            client.write(data)
            if client.get_write_buffer_size() > HIGH_WATER:
                await request.writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
        request.protocol.force_close()  # flushes what is buffered (TLS close_notify), then closes
    log.debug("kube-api: %s: ended", label)
    return _Taken()


async def serve(
    request: web.Request,
    run: Callable[..., Any],
    get_pod: Callable[[str, str], dict[str, Any]],
    manager: PodManager,
    namespace: str,
    name: str,
    verb: str,
) -> web.StreamResponse:
    """pods/{exec,attach,portforward}: resolve, ask CRI for the URL, take the connection over."""
    if request.method not in ("GET", "POST"):
        raise BadRequest(f"{request.method} is not supported on pods/{verb}")
    pod = await run(get_pod, namespace, name)
    try:
        url = await run(stream_url, manager, pod, verb, request.query)
    except NotFound as e:
        raise BadRequest(str(e)) from None
    return await proxy(request, url, f"{verb} {namespace}/{name}")
