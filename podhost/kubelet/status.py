"""Pod status as the kubelet reports it: phase, conditions and container statuses. Pure, no I/O.

The pod worker fills `ContainerStatus` records from what it observed through CRI and asks this module for
the phase (`pod_phase`, the kubelet's getPhase) and for the conditions' reasons and messages. Unlike the
kubelet, every condition that is False says what happened in its message ("pause (pid 4121) killed by
signal 9 (SIGKILL)", "containers with unready status: [web]: readiness probe failed: ...").
`to_dict` renders the Kubernetes shape (`status.containerStatuses[].state.waiting.reason`, ...).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
WAITING, TERMINATED = "waiting", "terminated"

POD_READY_TO_START_CONTAINERS = "PodReadyToStartContainers"
INITIALIZED = "Initialized"
CONTAINERS_READY = "ContainersReady"
READY = "Ready"
CONDITION_TYPES = (POD_READY_TO_START_CONTAINERS, INITIALIZED, CONTAINERS_READY, READY)


def rfc3339(ts: float) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    exit_code: int
    reason: str  # Completed, Error, OOMKilled, ...
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    container_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason}
        if self.message:
            d["message"] = self.message
        d["startedAt"], d["finishedAt"] = rfc3339(self.started_at), rfc3339(self.finished_at)
        if self.container_id:
            d["containerID"] = self.container_id
        return d


@dataclass
class ContainerStatus:
    name: str
    image: str
    state: str = WAITING  # waiting, running or terminated
    reason: str = "ContainerCreating"  # for waiting (and terminated, in `terminated`)
    message: str = ""
    started_at: float = 0.0  # running
    terminated: Terminated | None = None  # when state is terminated
    last_state: Terminated | None = None
    container_id: str = ""
    image_id: str = ""
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    log_path: str = ""
    previous_log_path: str = ""
    unready_reason: str = ""  # why not ready (probe failure), for the conditions' messages

    def to_dict(self, runtime: str = "cri") -> dict[str, Any]:
        state: dict[str, Any]
        if self.state == "running":
            state = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == TERMINATED and self.terminated is not None:
            state = {"terminated": self.terminated.to_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        d: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": {"terminated": self.last_state.to_dict()} if self.last_state else {},
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.container_id:
            d["containerID"] = f"{runtime}://{self.container_id}"
        return d


@dataclass
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""
    last_transition: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "status": "True" if self.status else "False",
            "lastTransitionTime": rfc3339(self.last_transition),
        }
        if self.reason:
            d["reason"] = self.reason
        if self.message:
            d["message"] = self.message
        return d


@dataclass
class PodStatus:
    phase: str = PENDING
    reason: str = ""
    message: str = ""
    pod_ip: str = ""
    sandbox_id: str = ""
    sandbox_attempt: int = 0
    start_time: float = 0.0
    conditions: dict[str, Condition] = field(default_factory=dict)
    init_container_statuses: list[ContainerStatus] = field(default_factory=list)
    container_statuses: list[ContainerStatus] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        c = self.conditions.get(READY)
        return bool(c and c.status)

    def set_condition(self, type_: str, status: bool, reason: str, message: str, now: float) -> None:
        """Set a condition; its transition time moves only when its status changes."""
        old = self.conditions.get(type_)
        since = old.last_transition if old is not None and old.status == status else now
        self.conditions[type_] = Condition(type_, status, reason, message, since)

    def to_dict(self, runtime: str = "cri") -> dict[str, Any]:
        """The v1 PodStatus shape; `runtime` prefixes container ids ("podhost://...")."""
        d: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [self.conditions[t].to_dict() for t in CONDITION_TYPES if t in self.conditions],
        }
        if self.reason:
            d["reason"] = self.reason
        if self.message:
            d["message"] = self.message
        if self.pod_ip:
            d["podIP"] = self.pod_ip
            d["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            d["startTime"] = rfc3339(self.start_time)
        if self.init_container_statuses:
            d["initContainerStatuses"] = [c.to_dict(runtime) for c in self.init_container_statuses]
        d["containerStatuses"] = [c.to_dict(runtime) for c in self.container_statuses]
        return d


def _counts_as_stopped(c: ContainerStatus) -> bool:
    return c.state == TERMINATED or (c.state == WAITING and c.last_state is not None)


def pod_phase(
    restart_policy: str, init: list[ContainerStatus], containers: list[ContainerStatus], initialized: bool
) -> str:
    """The kubelet's getPhase: from the containers' states and the restart policy."""
    for c in init:
        if (
            restart_policy == "Never"
            and c.state == TERMINATED
            and c.terminated is not None
            and c.terminated.exit_code != 0
        ):
            return FAILED
    if not initialized:
        return PENDING
    running = sum(c.state == "running" for c in containers)
    stopped = sum(_counts_as_stopped(c) for c in containers)
    waiting = len(containers) - running - stopped
    succeeded = sum(
        c.state == TERMINATED and c.terminated is not None and c.terminated.exit_code == 0 for c in containers
    )
    if waiting > 0:
        return PENDING
    if running > 0:
        return RUNNING
    if stopped > 0:
        if restart_policy == "Always":
            return RUNNING
        if succeeded == len(containers):
            return SUCCEEDED
        return RUNNING if restart_policy == "OnFailure" else FAILED
    return PENDING


def unready_message(containers: list[ContainerStatus]) -> str:
    """ "containers with unready status: [a b]" plus, per container, why (a probe's words, a wait)."""
    unready = [c for c in containers if not c.ready]
    names = " ".join(c.name for c in unready)
    why = []
    for c in unready:
        if c.unready_reason:
            why.append(f"{c.name}: {c.unready_reason}")
        elif c.state == WAITING:
            why.append(f"{c.name}: {c.reason}" + (f" ({c.message})" if c.message else ""))
        elif c.state == TERMINATED and c.terminated is not None:
            why.append(f"{c.name}: terminated ({c.terminated.reason}, exit code {c.terminated.exit_code})")
    return f"containers with unready status: [{names}]" + ("; " + "; ".join(why) if why else "")
