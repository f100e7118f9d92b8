"""Pure renderers: the pod manager's state in the shapes kube-apiserver serves. No I/O beyond `node_facts`.

The pod manager already renders pods, services and endpoints close to v1; what a one-node API server adds
is written here, once:
- a Pod is bound to this node (`spec.nodeName`, `status.hostIP`), so `PodScheduled` is True from its
  creation, and `status.qosClass` is derived from its resources as the API server does; the manager's own
  bookkeeping (sandbox id, log paths) is not part of the Kubernetes object and is left out;
- the Node is this machine (capacity from /proc and the state filesystem, `containerRuntimeVersion:
  podhost://<version>`);
- Namespaces are the conventional four plus every one a pod or service uses (podhost keeps no namespace
  objects: a namespace exists while something is in it);
- Events are the recorder's, named `<object>.<hash>` so their names stay stable while their count grows.
"""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost import __version__
from podhost.kubelet.status import rfc3339

SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
#: Kept from the manager's rendering only for podhost's own views; not v1 fields.
_PRIVATE_STATUS = ("sandbox",)
_PRIVATE_CONTAINER_STATUS = ("logPath",)


def stable_uid(*parts: str) -> str:
    """A uid for an object podhost does not store (namespace, node, event): the same on every start."""
    return str(uuid.UUID(bytes=hashlib.sha256("\0".join(parts).encode()).digest()[:16]))


@dataclass(frozen=True)
class NodeFacts:
    """This machine, as the Node object describes it; read once at start."""

    name: str
    internal_ip: str
    cpus: int
    memory_kib: int
    ephemeral_storage_kib: int
    kernel: str
    os_image: str
    architecture: str
    boot_id: str
    machine_id: str
    created: float
    kubernetes_version: str


def node_facts(state_dir: Path, internal_ip: str, kubernetes_version: str, created: float) -> NodeFacts:
    meminfo = Path("/proc/meminfo").read_text().split("\n")
    mem_kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    vfs = os.statvfs(state_dir)
    os_image = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_image = line.split("=", 1)[1].strip('"')
    except OSError:
        pass

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return NodeFacts(
        name=platform.node().lower() or "localhost",
        internal_ip=internal_ip,
        cpus=os.cpu_count() or 1,
        memory_kib=mem_kib,
        ephemeral_storage_kib=vfs.f_blocks * vfs.f_frsize // 1024,
        kernel=platform.release(),
        os_image=os_image,
        architecture=arch,
        boot_id=read("/proc/sys/kernel/random/boot_id"),
        machine_id=read("/etc/machine-id"),
        created=created,
        kubernetes_version=kubernetes_version,
    )


def node_object(facts: NodeFacts, ready_since: float) -> dict[str, Any]:
    capacity = {
        "cpu": str(facts.cpus),
        "memory": f"{facts.memory_kib}Ki",
        "ephemeral-storage": f"{facts.ephemeral_storage_kib}Ki",
        "pods": "110",
    }
    since = rfc3339(ready_since)
    conditions = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "podhost's pod manager is posting ready status"),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "uid": stable_uid("node", facts.name, facts.machine_id),
            "creationTimestamp": rfc3339(facts.created),
            "labels": {
                "kubernetes.io/hostname": facts.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": facts.architecture,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": facts.architecture,
                "node-role.kubernetes.io/control-plane": "",
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": since,
                    "lastTransitionTime": since,
                }
                for t, s, r, m in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": facts.internal_ip},
                {"type": "Hostname", "address": facts.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": facts.machine_id,
                "systemUUID": facts.machine_id,
                "bootID": facts.boot_id,
                "kernelVersion": facts.kernel,
                "osImage": facts.os_image,
                "containerRuntimeVersion": f"podhost://{__version__}",
                "kubeletVersion": f"v{facts.kubernetes_version}",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": facts.architecture,
            },
        },
    }


def namespace_object(name: str, created: float) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": stable_uid("namespace", name),
            "creationTimestamp": rfc3339(created),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def qos_class(spec: dict[str, Any]) -> str:
    """BestEffort, Burstable or Guaranteed, from the containers' cpu and memory requests and limits."""
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests_any = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            requests_any = True
        for r in ("cpu", "memory"):
            limit = limits.get(r)
            if limit is None or str(requests.get(r, limit)) != str(limit):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_object(managed: dict[str, Any], node: NodeFacts) -> dict[str, Any]:
    """The manager's pod rendering as a v1 Pod bound to `node`."""
    pod = copy.deepcopy(managed)
    spec = pod.setdefault("spec", {})
    spec.setdefault("nodeName", node.name)
    status = pod.setdefault("status", {})
    for key in _PRIVATE_STATUS:
        status.pop(key, None)
    for group in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(group) or []:
            for key in _PRIVATE_CONTAINER_STATUS:
                cs.pop(key, None)
    created = pod.get("metadata", {}).get("creationTimestamp", "")
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": created})
    status["conditions"] = conditions
    status["hostIP"] = node.internal_ip
    status["hostIPs"] = [{"ip": node.internal_ip}]
    status["qosClass"] = qos_class(spec)
    deleting = pod.get("metadata", {}).get("deletionTimestamp")
    if deleting:
        pod["metadata"].setdefault(
            "deletionGracePeriodSeconds", int(spec.get("terminationGracePeriodSeconds", 30))
        )
    return pod


def event_object(event: dict[str, Any], pod_uids: dict[tuple[str, str], str], node: str) -> dict[str, Any]:
    """One recorder event (`podhost.kubelet.events.Event.to_dict()`) as a v1 Event."""
    kind, _, rest = str(event["object"]).partition("/")
    name, _, container = rest.partition("/")
    ns = str(event["namespace"])
    digest = hashlib.sha256(
        f"{ns}\0{event['object']}\0{event['reason']}\0{event['message']}\0{event['first_timestamp']}".encode()
    ).hexdigest()[:16]
    involved: dict[str, Any] = {
        "kind": kind.capitalize() if kind != "pod" else "Pod",
        "namespace": ns,
        "name": name,
        "apiVersion": "v1",
    }
    uid = pod_uids.get((ns, name)) if kind == "pod" else None
    if uid:
        involved["uid"] = uid
    if container:
        involved["fieldPath"] = f"spec.containers{{{container}}}"
    first, last = rfc3339(float(event["first_timestamp"])), rfc3339(float(event["last_timestamp"]))
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{digest}",
            "namespace": ns,
            "uid": stable_uid("event", ns, name, digest),
            "creationTimestamp": first,
        },
        "involvedObject": involved,
        "reason": event["reason"],
        "message": event["message"],
        "type": event["type"],
        "count": int(event["count"]),
        "firstTimestamp": first,
        "lastTimestamp": last,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    }
