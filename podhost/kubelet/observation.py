"""What a pod worker sees of its pod through CRI: the kubelet's kubecontainer.PodStatus (GetPodStatus).

`Observation` is the record the pure parts decide from (pod_actions, status, container_gc); `Observer`
makes one with CRI calls: ListPodSandbox and ListContainers by the `io.kubernetes.pod.uid` label, then
ContainerStatus for each container. An exited container never changes again, so its status is cached
until the container is gone; the pod IP is asked once per sandbox. It only reads: never a create, stop
or remove.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import NotFound
from podhost.kubelet.podspec import LABEL_POD_UID


def seconds(ns: int) -> float:
    """A CRI timestamp (nanoseconds) in seconds."""
    return ns / 1e9


@dataclass
class Observation:
    """One look at the pod through CRI. Sandboxes newest first; statuses for every container."""

    sandboxes: list[pb.PodSandbox]
    containers: list[pb.Container]
    statuses: dict[str, pb.ContainerStatus]
    sandbox_ip: str = ""

    @property
    def sandbox(self) -> pb.PodSandbox | None:
        return self.sandboxes[0] if self.sandboxes else None

    @property
    def ready_sandbox(self) -> pb.PodSandbox | None:
        """The newest sandbox when it is Ready (containers run only there)."""
        sandbox = self.sandbox
        return sandbox if sandbox is not None and sandbox.state == pb.SANDBOX_READY else None

    def of(self, name: str, sandbox_id: str | None = None) -> list[pb.Container]:
        """Containers named `name` (in one sandbox, when given), newest first."""
        found = [
            c
            for c in self.containers
            if c.metadata.name == name and (sandbox_id is None or c.pod_sandbox_id == sandbox_id)
        ]
        return sorted(found, key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)

    def latest(self, name: str, sandbox_id: str) -> tuple[pb.Container, pb.ContainerStatus] | None:
        """The newest container named `name` in the sandbox, with its status."""
        found = self.of(name, sandbox_id)
        return (found[0], self.statuses[found[0].id]) if found else None

    def running(self, names: Iterable[str]) -> list[tuple[str, pb.Container, pb.ContainerStatus]]:
        """The newest container of each name that is running in the Ready sandbox."""
        sandbox = self.ready_sandbox
        found = [(n, self.latest(n, sandbox.id)) for n in names] if sandbox is not None else []
        return [(n, *latest) for n, latest in found if latest and latest[1].state == pb.CONTAINER_RUNNING]

    def live(self) -> list[pb.Container]:
        """The containers that are running or created (what a kill must stop)."""
        states = (pb.CONTAINER_RUNNING, pb.CONTAINER_CREATED)
        return [c for c in self.containers if self.statuses[c.id].state in states]


class Observer:
    """Observes one pod through CRI, with the caches that spare it repeated calls."""

    def __init__(self, cri: CRIClient, pod_uid: str) -> None:
        self.cri, self.pod_uid = cri, pod_uid
        self._exited: dict[str, pb.ContainerStatus] = {}
        self._ip: dict[str, str] = {}  # the one sandbox whose IP was asked

    def observe(self) -> Observation:
        cri = self.cri
        selector = {LABEL_POD_UID: self.pod_uid}
        sandboxes = cri.list_pod_sandbox(pb.PodSandboxFilter(label_selector=selector))
        sandboxes.sort(key=lambda s: (s.metadata.attempt, s.created_at), reverse=True)
        containers = cri.list_containers(pb.ContainerFilter(label_selector=selector))
        statuses: dict[str, pb.ContainerStatus] = {}
        for c in containers:
            cached = self._exited.get(c.id)
            if cached is not None:
                statuses[c.id] = cached
                continue
            try:
                s = cri.container_status(c.id).status
            except NotFound:
                continue
            statuses[c.id] = s
            if s.state == pb.CONTAINER_EXITED:
                self._exited[c.id] = s
        containers = [c for c in containers if c.id in statuses]
        live = {c.id for c in containers}
        for cid in [k for k in self._exited if k not in live]:
            del self._exited[cid]
        obs = Observation(sandboxes, containers, statuses)
        if obs.ready_sandbox is not None:
            obs.sandbox_ip = self._sandbox_ip(obs.ready_sandbox.id)
        return obs

    def _sandbox_ip(self, sandbox_id: str) -> str:
        if sandbox_id not in self._ip:
            try:
                status = self.cri.pod_sandbox_status(sandbox_id).status
            except NotFound:
                return ""
            self._ip = {sandbox_id: status.network.ip}
        return self._ip[sandbox_id]
