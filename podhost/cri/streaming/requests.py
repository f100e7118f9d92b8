"""What the streaming server serves and what it needs from the runtime.

The three request kinds are CRI's ExecRequest, AttachRequest and PortForwardRequest as the servicer
validated them (container and sandbox ids already resolved to full ids). `StreamRuntime` is the surface
the server drives: podhost's `Runtime` facade provides it, and tests provide fakes without root.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Protocol

from podhost.errors import InvalidArgument


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    ports: tuple[int, ...] = field(default_factory=tuple)


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


def validate_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    """The kubelet streaming server's checks of an Exec/Attach request (cri/streaming/server.go)."""
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


class ProcessIO(Protocol):
    """A running exec or attach session's stdio (podhost.runtime.container.stdio)."""

    tty: bool

    def read_output(self) -> tuple[int, bytes] | None: ...

    def write_stdin(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, width: int, height: int) -> None: ...

    def wait(self) -> int | None: ...

    def error(self) -> str: ...

    def abort(self) -> None:
        """The client is gone: stop the session's process (exec) or let go of the container (attach).
        Safe while another thread is in `read_output`, which then returns None; `close` still follows."""

    def close(self) -> None: ...


class StreamRuntime(Protocol):
    def exec_io(
        self, container_id: str, cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None
    ) -> ProcessIO: ...

    def attach_io(self, container_id: str) -> ProcessIO: ...

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket: ...
