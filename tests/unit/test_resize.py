"""In-place resize without a node: the subresource's update rule, the allocation (admission and what the
status shows), and the resize actions (in place, or a restart per resizePolicy), with a recording
runtime for `sync_resize`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from podhost.apiserver.patch import pod_spec_change, resize_update
from podhost.cri import api_pb2 as pb
from podhost.kubelet import allocation
from podhost.kubelet import status as st
from podhost.kubelet.allocation import (
    NodeCapacity,
    actual_resources,
    admit_resize,
    cpu_quantity,
    memory_quantity,
)
from podhost.kubelet.manifest import ManifestError, Resources, parse_pod
from podhost.kubelet.observation import Observation
from podhost.kubelet.podspec import linux_resources
from podhost.kubelet.resize import RETRY_SECONDS, compute_resizes, sync_resize

MI = 2**20
NOW = 1000.0
NODE = NodeCapacity(cpu_milli=2000, memory=4096 * MI)


def manifest(cpu: str = "100m", memory: str = "64Mi", policy: dict[str, str] | None = None) -> dict[str, Any]:
    both = {"cpu": cpu, "memory": memory}
    c: dict[str, Any] = {
        "name": "c",
        "image": "busybox",
        "resources": {"requests": both, "limits": dict(both)},
    }
    if policy:
        c["resizePolicy"] = [{"resourceName": r, "restartPolicy": p} for r, p in policy.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "uid": "u"},
        "spec": {"containers": [c]},
    }


def test_quantities_read_as_kube_apiserver_writes_them() -> None:
    assert [cpu_quantity(m) for m in (100, 200, 1000, 2500)] == ["100m", "200m", "1", "2500m"]
    assert [memory_quantity(b) for b in (64 * MI, 128 * MI, 2**30, 10**9, 1000, 1001)] == [
        "64Mi",
        "128Mi",
        "1Gi",
        "1G",
        "1k",
        "1001",
    ]


def test_resize_policy_is_validated() -> None:
    pod = parse_pod(manifest(policy={"cpu": "NotRequired", "memory": "RestartContainer"}))
    assert pod.containers[0].resize_policy == {"cpu": "NotRequired", "memory": "RestartContainer"}
    with pytest.raises(
        ManifestError, match=r'resizePolicy\[0\]\.restartPolicy: Unsupported value: "Sometimes"'
    ):
        parse_pod(manifest(policy={"cpu": "Sometimes"}))
    with pytest.raises(ManifestError, match=r'resizePolicy\[0\]\.resourceName: Unsupported value: "gpu"'):
        parse_pod(manifest(policy={"gpu": "NotRequired"}))


def test_the_subresource_takes_resources_only_and_keeps_the_qos_class() -> None:
    old = manifest()["spec"]
    new = copy.deepcopy(manifest(cpu="200m", memory="128Mi")["spec"])
    new["containers"][0]["image"] = "other"  # not taken: dropNonResizeUpdates
    spec, refusal = resize_update(old, new)
    assert refusal == ""
    assert spec["containers"][0]["image"] == "busybox"
    assert spec["containers"][0]["resources"]["limits"] == {"cpu": "200m", "memory": "128Mi"}
    burstable = copy.deepcopy(new)
    burstable["containers"][0]["resources"]["limits"]["cpu"] = "400m"
    _, refusal = resize_update(old, burstable)
    assert refusal == 'spec: Invalid value: "Burstable": Pod QOS Class may not change as a result of resizing'
    removed = copy.deepcopy(new)
    del removed["containers"][0]["resources"]["requests"]["memory"]
    _, refusal = resize_update(old, removed)
    assert (
        refusal
        == "spec.containers[0].resources.requests[memory]: Forbidden: resource removal is not supported"
    )
    # and a plain update of the same stays refused
    assert pod_spec_change(old, spec).startswith("spec: Forbidden: pod updates may not change fields")


def test_admission_allots_what_fits_and_says_why_not() -> None:
    pod = parse_pod(manifest(cpu="200m", memory="128Mi"))
    before = {"c": Resources(100, 100, 64 * MI, 64 * MI)}
    allotted, pending = admit_resize(pod, before, NODE)
    assert pending is None and allotted["c"] == pod.containers[0].resources
    huge = parse_pod(manifest(cpu="3", memory="128Mi"))
    allotted, pending = admit_resize(huge, before, NODE)
    assert allotted == before and pending is not None
    assert (pending.reason, pending.message) == (
        "Infeasible",
        "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000",
    )
    too_much = parse_pod(manifest(cpu="100m", memory="8Gi"))
    _, pending = admit_resize(too_much, before, NODE)
    assert pending is not None and pending.message == (
        f"Node didn't have enough capacity: memory, requested: {8 * 2**30}, capacity: {4096 * MI}"
    )
    fresh, pending = admit_resize(huge, {}, NODE)  # a container not allotted yet gets its spec
    assert pending is None and fresh["c"].cpu_limit_milli == 3000


def test_a_resize_that_fits_the_node_but_not_beside_the_other_pods_is_deferred() -> None:
    pod = parse_pod(manifest(cpu="500m", memory="128Mi"))
    before = {"c": Resources(100, 100, 64 * MI, 64 * MI)}
    others = allocation.allotted([Resources(cpu_request_milli=1600), Resources(memory_request=MI)])
    assert others == allocation.Allotted(cpu_milli=1600, memory=MI)
    allotted, pending = admit_resize(pod, before, NODE, others)
    assert allotted == before and pending is not None
    assert (pending.reason, pending.message) == (
        "Deferred",
        "Node didn't have enough resource: cpu, requested: 500, used: 1600, capacity: 2000",
    )
    allotted, pending = admit_resize(pod, before, NODE, allocation.Allotted(cpu_milli=1500))
    assert pending is None and allotted["c"].cpu_limit_milli == 500  # it fits exactly


def test_status_resources_are_read_back_from_cri_with_the_allocation_where_cri_cannot_tell() -> None:
    allotted = Resources(
        cpu_limit_milli=200, cpu_request_milli=200, memory_limit=128 * MI, memory_request=128 * MI
    )
    assert actual_resources(allotted, linux_resources(allotted)) == {
        "limits": {"cpu": "200m", "memory": "128Mi"},
        "requests": {"cpu": "200m", "memory": "128Mi"},
    }
    old = Resources(cpu_limit_milli=100, cpu_request_milli=100, memory_limit=64 * MI, memory_request=64 * MI)
    assert actual_resources(allotted, linux_resources(old)) == {  # not resized yet: what runs
        "limits": {"cpu": "100m", "memory": "64Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},  # a memory request is not a CRI value
    }
    assert allocation.requests(Resources()) == {}


def running(resources: Resources, cid: str = "c1") -> Observation:
    meta = pb.ContainerMetadata(name="c")
    status = pb.ContainerStatus(id=cid, metadata=meta, state=pb.CONTAINER_RUNNING)
    status.resources.linux.CopyFrom(linux_resources(resources))
    container = pb.Container(id=cid, pod_sandbox_id="sb", metadata=meta, state=pb.CONTAINER_RUNNING)
    sandbox = pb.PodSandbox(id="sb", state=pb.SANDBOX_READY)
    return Observation([sandbox], [container], {cid: status})


SMALL = Resources(cpu_limit_milli=100, cpu_request_milli=100, memory_limit=64 * MI, memory_request=64 * MI)
BIG = Resources(cpu_limit_milli=200, cpu_request_milli=200, memory_limit=128 * MI, memory_request=128 * MI)


@pytest.mark.parametrize(
    ("policy", "wanted", "restart", "decrease"),
    [
        ({}, BIG, False, False),
        ({"memory": "RestartContainer"}, BIG, True, False),
        ({"memory": "RestartContainer"}, Resources(200, 200, 64 * MI, 64 * MI), False, False),  # cpu only
        (
            {"cpu": "RestartContainer"},
            Resources(100, 100, 32 * MI, 32 * MI),
            False,
            True,
        ),  # memory only, down
    ],
)
def test_compute_resizes_in_place_or_by_restart(
    policy: dict[str, str], wanted: Resources, restart: bool, decrease: bool
) -> None:
    pod = parse_pod(manifest(policy=policy))
    (r,) = compute_resizes(pod, running(SMALL), {"c": wanted})
    assert (r.container_id, r.restart, r.memory_decrease) == ("c1", restart, decrease)
    assert r.resources == linux_resources(wanted) and r.spec.resources == wanted
    assert compute_resizes(pod, running(wanted), {"c": wanted}) == []  # done: nothing to do


@dataclass
class Recorder:
    """The PodRuntime calls sync_resize makes, recorded; `usage` is the container's memory working set."""

    usage: int = 0
    fail: str = ""
    calls: list[tuple[str, Any]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)  # the events' messages

    def event(self, type_: str, reason: str, message: str, container: str = "") -> None:
        self.calls.append(("event", reason))
        self.said.append(message)

    def kill_container(self, container_id: str, name: str, message: str, probe: str = "") -> None:
        self.calls.append(("event", "Killing"))
        self.said.append(message)
        self.calls.append(("stop", container_id))

    def memory_usage(self, container_id: str) -> int:
        return self.usage

    def update_container_resources(self, container_id: str, resources: pb.LinuxContainerResources) -> str:
        self.calls.append(("update", (container_id, resources.cpu_quota, resources.memory_limit_in_bytes)))
        return self.fail

    def update_pod_sandbox_resources(self, sandbox_id: str, resources: pb.LinuxContainerResources) -> None:
        self.calls.append(("sandbox", sandbox_id))


def conditions(status: st.StatusManager) -> dict[str, tuple[bool, str, str]]:
    return {t: (c.status, c.reason, c.message) for t, c in status.get().conditions.items()}


def test_sync_resize_updates_in_place_and_keeps_the_conditions() -> None:
    pod = parse_pod(manifest(cpu="200m", memory="128Mi"))
    history = {"c": st.ContainerHistory(attempt=0, allocated=SMALL)}
    runtime, status = Recorder(), st.StatusManager(lambda: None)
    result = sync_resize(pod, running(SMALL), history, runtime, status, NOW)  # type: ignore[arg-type]
    assert result.acted and result.restarts == []
    assert ("update", ("c1", 20000, 128 * MI)) in runtime.calls and ("sandbox", "sb") in runtime.calls
    assert history["c"].allocated == BIG
    assert conditions(status) == {"PodResizeInProgress": (True, "", "")}
    summary = '{"containers":[{"name":"c","resources":{"limits":{"cpu":"200m","memory":"128Mi"},'
    summary += '"requests":{"cpu":"200m","memory":"128Mi"}}}]}'
    assert ("event", "ResizeStarted") in runtime.calls and ("event", "ResizeCompleted") not in runtime.calls
    result = sync_resize(pod, running(BIG), history, runtime, status, NOW)  # type: ignore[arg-type]
    assert not result.acted and conditions(status) == {}
    assert (
        runtime.calls[-1] == ("event", "ResizeCompleted")
        and runtime.said[-1] == f"Pod resize completed: {summary}"
    )


def test_sync_resize_refuses_a_memory_limit_below_usage_and_reports_errors() -> None:
    pod = parse_pod(manifest(cpu="100m", memory="32Mi"))
    history = {"c": st.ContainerHistory(attempt=0, allocated=SMALL)}
    runtime, status = Recorder(usage=40 * MI), st.StatusManager(lambda: None)
    result = sync_resize(pod, running(SMALL), history, runtime, status, NOW)  # type: ignore[arg-type]
    assert not [c for c in runtime.calls if c[0] == "update"] and result.wake_at == [NOW + RETRY_SECONDS]
    in_progress = conditions(status)["PodResizeInProgress"]
    assert in_progress == (
        True,
        "Error",
        f"attempting to set container c's memory limit ({32 * MI}) below its current usage ({40 * MI})",
    )
    runtime = Recorder(usage=10 * MI, fail="updating container c1: runc update failed")
    sync_resize(pod, running(SMALL), history, runtime, status, NOW)  # type: ignore[arg-type]
    assert conditions(status)["PodResizeInProgress"] == (
        True,
        "Error",
        "updating container c1: runc update failed",
    )


def test_sync_resize_restarts_per_policy_and_infeasible_is_pending() -> None:
    pod = parse_pod(manifest(cpu="100m", memory="128Mi", policy={"memory": "RestartContainer"}))
    history = {"c": st.ContainerHistory(attempt=0, allocated=SMALL)}
    runtime, status = Recorder(), st.StatusManager(lambda: None)
    result = sync_resize(pod, running(SMALL), history, runtime, status, NOW)  # type: ignore[arg-type]
    (restart,) = result.restarts
    assert ("stop", "c1") in runtime.calls and restart.spec.resources.memory_limit == 128 * MI
    huge = parse_pod(manifest(cpu="100000", memory="64Mi"))
    runtime, status = Recorder(), st.StatusManager(lambda: None)
    history = {"c": st.ContainerHistory(attempt=0, allocated=SMALL)}
    result = sync_resize(huge, running(SMALL), history, runtime, status, NOW)  # type: ignore[arg-type]
    assert (
        not result.acted
        and runtime.calls == [("event", "ResizeInfeasible")]
        and history["c"].allocated == SMALL
    )
    pending = conditions(status)["PodResizePending"]
    assert pending[:2] == (True, "Infeasible") and pending[2].startswith(
        "Node didn't have enough capacity: cpu"
    )
    assert result.wake_at == []  # Infeasible waits for a new spec, not for time
    busy = allocation.Allotted(cpu_milli=allocation.node_capacity().cpu_milli)
    pod = parse_pod(manifest(cpu="200m", memory="64Mi"))
    result = sync_resize(pod, running(SMALL), history, runtime, status, NOW, lambda uid: busy)  # type: ignore[arg-type]
    assert conditions(status)["PodResizePending"][1] == "Deferred" and result.wake_at == [NOW + RETRY_SECONDS]
