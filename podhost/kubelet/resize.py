"""In-place resize (KEP-1287): bring running containers to the resources allocated to them, through CRI.

`compute_resizes` is pure (the resize part of the kubelet's computePodActions, computePodResizeAction): for
each running container of the Ready sandbox it compares the allocation (allocation.py) with what the runtime
reports the container runs with (ContainerStatus.resources.linux: cpu shares, quota and period, memory
limit). A difference is a resize; it restarts the container when the container's `resizePolicy` says
RestartContainer for a resource that changed, and is UpdateContainerResources otherwise, with no restart.

`sync_resize` carries that out for the pod worker (kuberuntime_manager.go doPodResizeAction), and keeps the
two conditions of 1.33+: PodResizePending (the spec asks for what is not allocated: reason Infeasible, and
the kubelet's message) and PodResizeInProgress (allocated, not yet what runs; reason Error with the
message when a resize could not be made), and tells the pod's events as the kubelet of 1.35+ does:
ResizeStarted and ResizeCompleted ("Pod resize started: {"containers":[...]}"), ResizeInfeasible. A memory limit below the container's current usage is not
applied (the kubelet's best-effort check of 1.34+, against the working set): the resize stays in progress
with that error until the usage or the spec changes. After a resize that was made, UpdatePodSandboxResources
tells the runtime the pod's new total (kuberuntime.update_pod_sandbox_resources).

Where podhost differs: a container that restarts for another reason while a resize is Infeasible is made
with the spec's resources, not the allocation's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace

from podhost.cri import api_pb2 as pb
from podhost.kubelet import allocation
from podhost.kubelet.events import NORMAL, WARNING
from podhost.kubelet.kuberuntime import PodRuntime
from podhost.kubelet.manifest import RESTART_CONTAINER, ContainerSpec, Pod, Resources
from podhost.kubelet.observation import Observation
from podhost.kubelet.pod_actions import ContainerToStart
from podhost.kubelet.podspec import linux_resources
from podhost.kubelet.status import ContainerHistory, StatusManager

#: How long a resize that could not be made (a memory limit below usage, a runtime error) waits for the
#: next try, as the kubelet's pod worker resyncs the pod.
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class ContainerResize:
    spec: ContainerSpec  # with the allocated resources
    container_id: str
    resources: pb.LinuxContainerResources  # what it is to run with
    restart: bool  # a changed resource's resizePolicy is RestartContainer
    memory_decrease: bool  # the memory limit goes down: checked against the usage first


def _cpu(r: pb.LinuxContainerResources) -> tuple[int, int, int]:
    return r.cpu_shares, r.cpu_quota, r.cpu_period


def compute_resizes(pod: Pod, obs: Observation, allocated: Mapping[str, Resources]) -> list[ContainerResize]:
    """The running containers whose resources differ from their allocation, and how to resize each."""
    sandbox = obs.ready_sandbox
    if sandbox is None:
        return []
    out = []
    for spec in pod.containers:
        latest = obs.latest(spec.name, sandbox.id)
        alloc = allocated.get(spec.name)
        if alloc is None or latest is None or latest[1].state != pb.CONTAINER_RUNNING:
            continue
        status = latest[1]
        if not status.HasField("resources") or not status.resources.HasField("linux"):
            continue  # a runtime that does not report them: nothing to compare with
        want, have = linux_resources(alloc), status.resources.linux
        changed = {
            "cpu": _cpu(want) != _cpu(have),
            "memory": want.memory_limit_in_bytes != have.memory_limit_in_bytes,
        }
        if not any(changed.values()):
            continue
        restart = any(spec.resize_policy.get(r) == RESTART_CONTAINER for r, c in changed.items() if c)
        decrease = (
            changed["memory"]
            and want.memory_limit_in_bytes > 0
            and (not have.memory_limit_in_bytes or want.memory_limit_in_bytes < have.memory_limit_in_bytes)
        )
        out.append(ContainerResize(replace(spec, resources=alloc), latest[0].id, want, restart, decrease))
    return out


def pod_resources(allocated: Mapping[str, Resources]) -> pb.LinuxContainerResources:
    """The pod's total, for UpdatePodSandboxResources: the sums of its containers' (the kubelet's pod
    cgroup values)."""
    total = Resources(
        cpu_limit_milli=sum(r.cpu_limit_milli for r in allocated.values())
        if all(r.cpu_limit_milli for r in allocated.values())
        else 0,
        cpu_request_milli=sum(allocation.cpu_request(r) for r in allocated.values()),
        memory_limit=sum(r.memory_limit for r in allocated.values())
        if all(r.memory_limit for r in allocated.values())
        else 0,
    )
    return linux_resources(total)


def resize_summary(pod: Pod, allocated: Mapping[str, Resources]) -> str:
    """The containers' allocated resources as the resize events show them (JSON, Go's key order)."""
    containers = [
        {"name": c.name, "resources": allocation.resource_requirements(allocated[c.name])}
        for c in pod.containers
        if c.name in allocated
    ]
    return json.dumps({"containers": containers}, separators=(",", ":"))


@dataclass
class ResizeResult:
    restarts: list[ContainerToStart] = field(default_factory=list)  # stopped: the worker starts them anew
    acted: bool = False
    wake_at: list[float] = field(default_factory=list)  # a resize that could not be made is tried again


def sync_resize(
    pod: Pod,
    obs: Observation,
    history: MutableMapping[str, ContainerHistory],
    runtime: PodRuntime,
    status: StatusManager,
    now: float,
    allotted: Callable[[str], allocation.Allotted] = allocation.nothing_allotted,
) -> ResizeResult:
    """Admit the spec's resources (the allocation, kept in `history`) beside what the node's other pods
    are allotted (`allotted(the pod's uid)`), resize what runs to them, and set the resize conditions."""
    result = ResizeResult()
    before = {n: h.allocated for n, h in history.items() if h.allocated is not None}
    allocated, pending = allocation.admit_resize(pod, before, allocation.node_capacity(), allotted(pod.uid))
    for name, res in allocated.items():
        history.setdefault(name, ContainerHistory()).allocated = res
    conditions = status.get().conditions
    if before and allocated != {n: before.get(n) for n in allocated}:
        runtime.event(NORMAL, "ResizeStarted", f"Pod resize started: {resize_summary(pod, allocated)}", "")
    if pending is not None:
        told = conditions.get(allocation.POD_RESIZE_PENDING)
        if told is None or told.message != pending.message:
            said = f"Pod resize {pending.reason}: {pending.message}"
            runtime.event(WARNING, f"Resize{pending.reason}", said, "")
        status.set_condition(allocation.POD_RESIZE_PENDING, True, pending.reason, pending.message, now)
        if pending.reason == allocation.DEFERRED:  # it may fit once another pod is gone or smaller
            result.wake_at.append(now + RETRY_SECONDS)
    else:
        status.clear_condition(allocation.POD_RESIZE_PENDING)
    errors, resized = [], False
    resizes = compute_resizes(pod, obs, allocated)
    for r in resizes:
        name = r.spec.name
        if r.restart:
            runtime.kill_container(r.container_id, name, f"Container {name} resize requires restart")
            result.restarts.append(ContainerToStart(r.spec, "resize requires restart (resizePolicy)"))
            continue
        if (
            r.memory_decrease
            and (usage := runtime.memory_usage(r.container_id)) > r.resources.memory_limit_in_bytes
        ):
            errors.append(
                f"attempting to set container {name}'s memory limit ({r.resources.memory_limit_in_bytes}) "
                f"below its current usage ({usage})"
            )
            continue
        if error := runtime.update_container_resources(r.container_id, r.resources):
            errors.append(error)
        else:
            resized = True
    if resized and (sandbox := obs.ready_sandbox) is not None:
        runtime.update_pod_sandbox_resources(sandbox.id, pod_resources(allocated))
    if errors:
        status.set_condition(allocation.POD_RESIZE_IN_PROGRESS, True, "Error", "; ".join(errors), now)
        result.wake_at.append(now + RETRY_SECONDS)
    elif resizes:
        status.set_condition(allocation.POD_RESIZE_IN_PROGRESS, True, "", "", now)
    elif allocation.POD_RESIZE_IN_PROGRESS in conditions:
        status.clear_condition(allocation.POD_RESIZE_IN_PROGRESS)
        runtime.event(
            NORMAL, "ResizeCompleted", f"Pod resize completed: {resize_summary(pod, allocated)}", ""
        )
    result.acted = resized or bool(result.restarts)
    return result
