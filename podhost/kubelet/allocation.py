"""Resource allocation of in-place resize (KEP-1287): what a container is allotted, whether a resize fits
the node, and how requests and limits read in the pod's status. Pure, no I/O.

The kubelet's allocation manager (pkg/kubelet/allocation) keeps, per container, the resources it
*allocated* (admitted), apart from the spec (what was asked) and from what runs (what the runtime
reports in ContainerStatus.resources). A resize (`kubectl patch pod --subresource resize`) changes the
spec; `admit_resize` allots it when the pod's requests still fit the node, or leaves the allocation as it
was and says why in the PodResizePending condition (reason Infeasible: more than the node has at all;
Deferred: more than is left beside what the node's other pods are allotted, so it may fit later).
The pod worker then brings the running containers to the allocation (podhost.kubelet.resize).

The status (`status.containerStatuses[]`): `allocatedResources` are the allocated requests; `resources`
are what runs, as the kubelet reads them back from CRI (cpu request from cpu.shares, cpu limit from the
quota, memory limit from the memory limit), with the allocated values where CRI cannot tell them apart
(shares round: 100m and 101m are both 102 shares) or cannot carry them (a memory request).

Where podhost differs: the allocation lives in the pod worker's memory (the kubelet checkpoints it), so a
daemon restart allots the spec as it is then (and a pod not synced since counts as allotted nothing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from podhost.cri import api_pb2 as pb
from podhost.kubelet.manifest import Pod, Resources
from podhost.kubelet.podspec import cpu_shares

POD_RESIZE_PENDING = "PodResizePending"
POD_RESIZE_IN_PROGRESS = "PodResizeInProgress"
INFEASIBLE, DEFERRED = "Infeasible", "Deferred"

_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
_DECIMAL = (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3))


@dataclass(frozen=True)
class NodeCapacity:
    cpu_milli: int
    memory: int


@cache
def node_capacity() -> NodeCapacity:
    """This machine's CPUs and memory (the Node's capacity, which podhost also reports as allocatable)."""
    memory = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return NodeCapacity((os.cpu_count() or 1) * 1000, memory)


def cpu_quantity(milli: int) -> str:
    """Millicores as kube-apiserver writes the quantity: "2", "200m"."""
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(size: int) -> str:
    """Bytes as a canonical quantity: "128Mi", "1G", "1000"."""
    for suffix, unit in (*_BINARY, *_DECIMAL):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def cpu_request(res: Resources) -> int:
    """The cpu request, defaulted to the limit as the API server defaults it."""
    return res.cpu_request_milli or res.cpu_limit_milli


def memory_request(res: Resources) -> int:
    return res.memory_request or res.memory_limit


def requests(res: Resources) -> dict[str, str]:
    """The requests as the status's `allocatedResources` shows them."""
    out = {}
    if cpu_request(res):
        out["cpu"] = cpu_quantity(cpu_request(res))
    if memory_request(res):
        out["memory"] = memory_quantity(memory_request(res))
    return out


def resource_requirements(res: Resources) -> dict[str, dict[str, str]]:
    """A container's requests and limits in the v1 shape (what the resize events show)."""
    limits = {}
    if res.cpu_limit_milli:
        limits["cpu"] = cpu_quantity(res.cpu_limit_milli)
    if res.memory_limit:
        limits["memory"] = memory_quantity(res.memory_limit)
    out: dict[str, dict[str, str]] = {}
    if limits:
        out["limits"] = limits
    if wanted := requests(res):
        out["requests"] = wanted
    return out


def actual_resources(allocated: Resources, linux: pb.LinuxContainerResources) -> dict[str, Any]:
    """`status.containerStatuses[].resources`: what the runtime reports for a running container, read
    back as the kubelet does, limited to what the allocation has."""
    req: dict[str, str] = {}
    lim: dict[str, str] = {}
    if cpu_request(allocated):
        wanted = cpu_request(allocated)
        milli = (
            wanted if linux.cpu_shares == cpu_shares(wanted) else -(-linux.cpu_shares * 1000 // 1024)
        )  # ceil
        req["cpu"] = cpu_quantity(milli)
    if memory_request(allocated):
        req["memory"] = memory_quantity(memory_request(allocated))
    if allocated.cpu_limit_milli and linux.cpu_quota > 0 and linux.cpu_period > 0:
        wanted = allocated.cpu_limit_milli
        exact = linux.cpu_quota == wanted * linux.cpu_period // 1000
        lim["cpu"] = cpu_quantity(wanted if exact else linux.cpu_quota * 1000 // linux.cpu_period)
    if allocated.memory_limit and linux.memory_limit_in_bytes > 0:
        lim["memory"] = memory_quantity(linux.memory_limit_in_bytes)
    out: dict[str, Any] = {}
    if lim:
        out["limits"] = lim
    if req:
        out["requests"] = req
    return out


@dataclass(frozen=True)
class Allotted:
    """What the node's other pods are allotted: the sums of their containers' cpu and memory requests."""

    cpu_milli: int = 0
    memory: int = 0


NOTHING = Allotted()


def nothing_allotted(pod_uid: str) -> Allotted:
    """For a node with one pod manager that does not say what its other pods are allotted."""
    return NOTHING


def allotted(allocations: list[Resources]) -> Allotted:
    return Allotted(sum(cpu_request(r) for r in allocations), sum(memory_request(r) for r in allocations))


@dataclass(frozen=True)
class Pending:
    """Why a resize waits: PodResizePending's reason (Infeasible, Deferred) and message."""

    reason: str
    message: str


def admit_resize(
    pod: Pod, allocated: Mapping[str, Resources], capacity: NodeCapacity, others: Allotted = NOTHING
) -> tuple[dict[str, Resources], Pending | None]:
    """The allocation after the pod's spec is considered (the kubelet's handlePodResourcesResize): the
    spec's resources once they fit the node beside `others` (the other pods' allocations), else the
    allocation as it was and why not. A container the allocation has not seen yet (a new pod) is allotted
    its spec."""
    desired = {c.name: replace(c.resources) for c in pod.containers}
    current = {name: replace(allocated.get(name, res)) for name, res in desired.items()}
    if current == desired:
        return current, None
    cpu = sum(cpu_request(r) for r in desired.values())
    memory = sum(memory_request(r) for r in desired.values())
    if capacity.memory and memory > capacity.memory:
        message = f"memory, requested: {memory}, capacity: {capacity.memory}"
    elif cpu > capacity.cpu_milli:
        message = f"cpu, requested: {cpu}, capacity: {capacity.cpu_milli}"
    else:
        for name, wanted, used, total in (
            ("cpu", cpu, others.cpu_milli, capacity.cpu_milli),
            ("memory", memory, others.memory, capacity.memory),
        ):
            if total and wanted + used > total:  # the scheduler's fit words, as the kubelet's admission
                detail = f"{name}, requested: {wanted}, used: {used}, capacity: {total}"
                return current, Pending(DEFERRED, f"Node didn't have enough resource: {detail}")
        return desired, None
    return current, Pending(INFEASIBLE, f"Node didn't have enough capacity: {message}")
