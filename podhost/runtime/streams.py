"""Streaming sessions on the runtime side: which container or sandbox a session may use, and its stdio.

The CRI layer's streaming server (podhost.cri.streaming) owns URLs, tokens and wire protocols; it asks
this module, through the `Runtime` facade, for an interactive exec, an attach to a container's stdio or a
connection to a port inside a pod. Like containerd, a session needs a running container (exec, attach)
or a ready sandbox (port-forward), checked both when the URL is made and when the client connects.
"""

from __future__ import annotations

import json
import logging
import socket

from podhost.config import Config
from podhost.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from podhost.runtime.container import spec, stdio
from podhost.runtime.container.service import ContainerService
from podhost.runtime.model import Container, ContainerState, PodSandbox, PodSandboxState
from podhost.runtime.network import portforward
from podhost.runtime.sandbox.service import SandboxService

log = logging.getLogger(__name__)


class StreamSessions:
    def __init__(self, config: Config, containers: ContainerService, sandboxes: SandboxService) -> None:
        self.config = config
        self.containers = containers
        self.sandboxes = sandboxes

    def running_container(self, container_id: str) -> Container:
        container = self.containers.status(self.containers.resolve(container_id).id)
        if container.state != ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(
                f"container {container.id[:13]} is not running ({container.state.value})"
            )
        return container

    def ready_sandbox(self, sandbox_id: str) -> PodSandbox:
        sandbox = self.sandboxes.resolve(sandbox_id)
        if sandbox.state != PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id[:13]} is not ready")
        return sandbox

    def exec_io(
        self, container_id: str, cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None
    ) -> stdio.ExecIO:
        if not cmd:
            raise InvalidArgument("exec: cmd is required")
        container = self.running_container(container_id)
        bundle = self.config.container_run_dir(container.id)
        try:
            oci = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"container {container.id[:13]}: reading its spec: {e}") from e
        process = spec.exec_process(oci, cmd, tty)
        runtime = self.containers.runtime(container.runtime_handler, container.id)
        return stdio.start_exec(
            runtime, container.id, process, bundle, tty=tty, stdin=stdin, size=size or (80, 24)
        )

    def attach_io(self, container_id: str) -> stdio.AttachIO:
        container = self.running_container(container_id)
        return stdio.open_attach(
            self.containers.socket_dir,
            container.id,
            self.config.container_run_dir(container.id),
            tty=container.config.tty,
            stdin_once=container.config.stdin_once,
        )

    def port_forward(self, sandbox_id: str, port: int) -> socket.socket:
        sandbox = self.ready_sandbox(sandbox_id)
        if sandbox.config.host_network:
            sock = portforward.connect("", port)
        else:
            with self.sandboxes.pod_netns(sandbox) as netns:
                if not netns:
                    raise FailedPrecondition(f"pod sandbox {sandbox.id[:13]}: its pause has exited")
                sock = portforward.connect(netns, port)
        log.debug("sandbox %s: port-forward connection to port %d", sandbox.id[:13], port)
        return sock
