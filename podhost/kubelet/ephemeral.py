"""Ephemeral containers (KEP-277): which debug containers the pod worker starts next. Pure.

`kubectl debug -it POD --image=IMAGE --target=CONTAINER` adds an ephemeral container to a running pod
through the pod's `ephemeralcontainers` subresource (podhost.apiserver.resources); the kubelet's
computePodActions then starts every ephemeral container of the spec that has no container yet, before the
init containers (so a pod whose init container fails can still be debugged), and SyncPod starts it as any
other: CreateContainer in the pod's sandbox (its network, IPC and UTS namespaces are the pod's), with CRI
pid mode TARGET and the target container's id when `targetContainerName` is set, so it sees the target's
processes (`ps ax` shows nginx's master process), then StartContainer.

An ephemeral container is never restarted: once made (its attempt is remembered, also after its sandbox
went away), it is not made again, whatever its exit. Only a failed create or start is retried, after the
retry back-off, as for any container; a target that has no container yet holds the start until it has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from podhost.cri import api_pb2 as pb
from podhost.kubelet.backoff import Backoff
from podhost.kubelet.manifest import Pod
from podhost.kubelet.observation import Observation
from podhost.kubelet.pod_actions import ContainerToStart
from podhost.kubelet.status import ContainerHistory


@dataclass
class EphemeralStarts:
    starts: list[ContainerToStart] = field(default_factory=list)
    wake_at: list[float] = field(default_factory=list)  # when a held start (a failed one's retry) is due


def ephemeral_containers_to_start(
    pod: Pod, obs: Observation, history: Mapping[str, ContainerHistory], retry: Backoff, now: float
) -> EphemeralStarts:
    """The ephemeral containers of `pod` to start now, as observed in `obs`; `history` says which were
    made already (their attempt), `retry` holds the ones whose create or start failed."""
    out = EphemeralStarts()
    sandbox = obs.ready_sandbox
    if sandbox is None:
        return out
    for spec in pod.ephemeral_containers:
        latest = obs.latest(spec.name, sandbox.id)
        if latest is not None:
            if latest[1].state == pb.CONTAINER_CREATED:  # made, never started (a daemon restart between)
                reason = "ephemeral container created, not started"
                out.starts.append(ContainerToStart(spec, reason, container_id=latest[0].id))
            continue
        made = history.get(spec.name)
        if made is not None and made.attempt >= 0:
            continue  # it ran: ephemeral containers are never restarted
        target_id = ""
        if spec.target_container_name:
            target = obs.latest(spec.target_container_name, sandbox.id)
            if target is None:
                continue  # its target has no container yet: its start wakes the worker
            target_id = target[0].id
        until = retry.until(spec.name)
        if now < until:
            out.wake_at.append(until)
            continue
        out.starts.append(ContainerToStart(spec, "ephemeral container not created yet", target_id=target_id))
    return out
