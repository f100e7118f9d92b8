"""A test NRI plugin: connects to a podhost NRI socket, registers, records every event it gets, and
answers CreateContainer with whatever adjustment the test asks for.

It is the plugin side of the protocol (it serves the Plugin service on mux connection 1 and calls the
Runtime service on connection 2), built on podhost's own framing; the upstream Go stub is exercised by
critest outside CI (see the README's NRI section).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podhost.runtime.nri import api_pb2 as nri
from podhost.runtime.nri.protocol import (
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE,
    RUNTIME_SERVICE_CONN,
)
from podhost.runtime.nri.transport import UNIMPLEMENTED, UNKNOWN, Trunk, TtrpcError


@dataclass(frozen=True)
class Event:
    kind: str  # the method name: RunPodSandbox, CreateContainer, StopContainer, ...
    pod_id: str
    container_id: str = ""
    container_name: str = ""


_REQUESTS = {
    "RunPodSandbox": (nri.RunPodSandboxRequest, nri.RunPodSandboxResponse),
    "StopPodSandbox": (nri.StopPodSandboxRequest, nri.StopPodSandboxResponse),
    "RemovePodSandbox": (nri.RemovePodSandboxRequest, nri.RemovePodSandboxResponse),
    "CreateContainer": (nri.CreateContainerRequest, nri.CreateContainerResponse),
    "PostCreateContainer": (nri.PostCreateContainerRequest, nri.PostCreateContainerResponse),
    "StartContainer": (nri.StartContainerRequest, nri.StartContainerResponse),
    "PostStartContainer": (nri.PostStartContainerRequest, nri.PostStartContainerResponse),
    "UpdateContainer": (nri.UpdateContainerRequest, nri.UpdateContainerResponse),
    "PostUpdateContainer": (nri.PostUpdateContainerRequest, nri.PostUpdateContainerResponse),
    "StopContainer": (nri.StopContainerRequest, nri.StopContainerResponse),
    "RemoveContainer": (nri.RemoveContainerRequest, nri.RemoveContainerResponse),
}


class TestPlugin:
    __test__ = False  # not a pytest class

    def __init__(
        self,
        socket_path: Path,
        name: str,
        index: str = "50",
        events: int = 0,
        adjust: Callable[[nri.PodSandbox, nri.Container], nri.ContainerAdjustment] | None = None,
        fail: dict[str, str] | None = None,
        block: dict[str, threading.Event] | None = None,
    ) -> None:
        """`events`: the ConfigureResponse mask (0: all); `fail`: method → error message to answer with;
        `block`: method → an event the handler waits for before answering (a hung plugin)."""
        self.name, self.index, self.mask = name, index, events
        self.adjust, self.fail, self.block = adjust, fail or {}, block or {}
        self.events: list[Event] = []
        self.synced_pods: list[str] = []
        self.synced_containers: list[str] = []
        self.configured: nri.ConfigureRequest | None = None
        self.synchronized = threading.Event()
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(socket_path))
        self.trunk = Trunk(sock, {PLUGIN_SERVICE_CONN: self._serve}, self.disconnected.set, name)

    def connect(self, timeout: float = 10) -> TestPlugin:
        """Register and wait until podhost has synchronized this plugin."""
        self.trunk.start()
        request = nri.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.index)
        self.trunk.call(
            RUNTIME_SERVICE_CONN, RUNTIME_SERVICE, "RegisterPlugin", request, nri.Empty(), timeout
        )
        if not self.synchronized.wait(timeout):
            raise TimeoutError(f"plugin {self.name} was not synchronized within {timeout} s")
        return self

    def close(self) -> None:
        for gate in self.block.values():
            gate.set()
        self.trunk.close()

    def update_containers(self, updates: list[nri.ContainerUpdate]) -> nri.UpdateContainersResponse:
        request = nri.UpdateContainersRequest(update=updates)
        reply = nri.UpdateContainersResponse()
        self.trunk.call(RUNTIME_SERVICE_CONN, RUNTIME_SERVICE, "UpdateContainers", request, reply, 10)
        return reply

    def kinds(self, container_id: str = "", pod_id: str = "") -> list[str]:
        """The events seen so far for a container (or a pod's own events), in order."""
        with self._lock:
            return [
                e.kind
                for e in self.events
                if (container_id and e.container_id == container_id)
                or (pod_id and e.pod_id == pod_id and not e.container_id)
            ]

    def _serve(self, service: str, method: str, payload: bytes) -> bytes:
        if gate := self.block.get(method):
            gate.wait(30)
        if message := self.fail.get(method):
            raise TtrpcError(UNKNOWN, message)
        if method == "Configure":
            self.configured = nri.ConfigureRequest.FromString(payload)
            return nri.ConfigureResponse(events=self.mask).SerializeToString()
        if method == "Synchronize":
            sync = nri.SynchronizeRequest.FromString(payload)
            self.synced_pods = [p.id for p in sync.pods]
            self.synced_containers = [c.id for c in sync.containers]
            self.synchronized.set()
            return nri.SynchronizeResponse(more=sync.more).SerializeToString()
        if method == "Shutdown":
            return nri.Empty().SerializeToString()
        if method not in _REQUESTS:
            raise TtrpcError(UNIMPLEMENTED, f"{method} is not implemented")
        request_type, response_type = _REQUESTS[method]
        request = request_type.FromString(payload)
        container = getattr(request, "container", None)
        with self._lock:
            self.events.append(
                Event(
                    method,
                    request.pod.id,
                    container.id if container else "",
                    container.name if container else "",
                )
            )
        response = response_type()
        if method == "CreateContainer" and self.adjust is not None:
            response.adjust.CopyFrom(self.adjust(request.pod, request.container))
        return response.SerializeToString()
