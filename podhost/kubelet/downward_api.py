"""The downward API: a pod's own fields and its containers' resources as text (pure).

For env (`fieldRef`, `resourceFieldRef`) and for downwardAPI volume files alike, as the kubelet formats
them (pkg/api/v1/resource `ExtractResourceValueByContainerName`, pkg/fieldpath): labels and annotations
as sorted `key="value"` lines, a resource divided by its divisor and rounded up; a limit that is not set
is the node's allocatable amount, an unset request is 0 (the API defaults a request to its limit).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from podhost.kubelet.manifest import ContainerSpec, Pod, ResourceFieldRef, parse_quantity

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


@dataclass(frozen=True)
class NodeInfo:
    """What the downward API tells of the node: its name, its IP, and its allocatable CPU and memory."""

    name: str = "localhost"
    host_ip: str = ""
    cpu_milli: int = 1000
    memory: int = 0


def this_node(name: str, host_ip: str) -> NodeInfo:
    """The machine's CPUs and memory (MemTotal) as the node's allocatable, with `name` and `host_ip`."""
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return NodeInfo(name, host_ip, (os.cpu_count() or 1) * 1000, memory)


@dataclass(frozen=True)
class PodFacts:
    """What the downward API reads beyond the manifest: the pod's IPs once its sandbox has them."""

    node: NodeInfo = field(default_factory=NodeInfo)
    pod_ips: tuple[str, ...] = ()


def format_map(values: dict[str, str]) -> str:
    """fieldpath.FormatMap: `key="value"` lines in key order (the value quoted as Go's %q), no final
    newline."""
    return "\n".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(values.items()))


class FieldError(ValueError):
    pass


def field_value(pod: Pod, path: str, facts: PodFacts) -> str:
    """The value of a fieldRef `path` for `pod` (validated by the manifest reader already)."""
    if m := _SUBSCRIPT.match(path):
        values = pod.labels if m.group(1) == "labels" else pod.annotations
        return values.get(m.group(2), "")
    values_of = {
        "metadata.name": lambda: pod.name,
        "metadata.namespace": lambda: pod.namespace,
        "metadata.uid": lambda: pod.uid,
        "metadata.labels": lambda: format_map(pod.labels),
        "metadata.annotations": lambda: format_map(pod.annotations),
        "spec.nodeName": lambda: facts.node.name,
        "spec.serviceAccountName": lambda: pod.service_account_name,
        "status.hostIP": lambda: facts.node.host_ip,
        "status.hostIPs": lambda: facts.node.host_ip,
        "status.podIP": lambda: facts.pod_ips[0] if facts.pod_ips else "",
        "status.podIPs": lambda: ",".join(facts.pod_ips),
    }
    if path not in values_of:
        raise FieldError(f"unsupported fieldPath: {path}")
    return values_of[path]()


def resource_value(pod: Pod, ref: ResourceFieldRef, container: ContainerSpec | None, node: NodeInfo) -> str:
    """The value of a resourceFieldRef: the named container's (or `container`'s) resource, in units of
    the divisor, rounded up."""
    if ref.container_name:
        named = [c for c in [*pod.init_containers, *pod.containers] if c.name == ref.container_name]
        if not named:
            raise FieldError(f"container {ref.container_name} not found")
        container = named[0]
    if container is None:
        raise FieldError("resourceFieldRef needs a container name")
    res = container.resources
    cpu = ref.resource.endswith(".cpu")
    if ref.resource == "limits.cpu":
        value = res.cpu_limit_milli or node.cpu_milli
    elif ref.resource == "requests.cpu":
        value = res.cpu_request_milli or res.cpu_limit_milli
    elif ref.resource == "limits.memory":
        value = res.memory_limit or node.memory
    elif ref.resource == "requests.memory":
        value = res.memory_request or res.memory_limit
    else:
        raise FieldError(f"unsupported container resource: {ref.resource}")
    # both in the same unit (millicores, or bytes), as the API's quantities compare them
    divisor = parse_quantity(ref.divisor or "1", "divisor.cpu" if cpu else "divisor")
    return str(math.ceil(value / divisor)) if divisor else "0"
