"""Server-side printing: meta.k8s.io Tables with kubectl's columns and status rules. Pure.

kubectl asks `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the cells it gets, so the
rules live here, as they live in kube-apiserver's `pkg/printers/internalversion/printers.go`:
`pod_row` is its printPod (ContainerCreating / ImagePullBackOff / CrashLoopBackOff / Completed straight
from the containers' states, Init:N/M, Terminating, `3 (12s ago)` restarts), `human_duration` is
apimachinery's HumanDuration. Columns with priority 1 are the ones `-o wide` adds.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

Row = list[Any]
Column = tuple[str, str, int, str]  # name, type, priority, description


def parse_time(value: str) -> float:
    if not value:
        return 0.0
    try:
        return (
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
        )
    except ValueError:
        return 0.0


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def since(timestamp: str, now: float) -> str:
    """translateTimestampSince: "<unknown>" for no time."""
    t = parse_time(timestamp)
    return human_duration(now - t) if t else "<unknown>"


# --- pods -------------------------------------------------------------------------------------------------

POD_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", "string", 0, "The aggregate status of the containers in this pod."),
    (
        "Restarts",
        "string",
        0,
        "The number of times the containers in this pod have been restarted and when "
        "the last container in this pod has restarted.",
    ),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
    ("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster."),
    ("Node", "string", 1, "NodeName is the node the pod is bound to."),
    (
        "Nominated Node",
        "string",
        1,
        "nominatedNodeName is set when this pod preempts other pods on the node.",
    ),
    (
        "Readiness Gates",
        "string",
        1,
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
]


def _restartable(spec: dict[str, Any]) -> bool:
    return spec.get("restartPolicy") == "Always"


def _condition_true(status: dict[str, Any], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in status.get("conditions") or [])


def _terminated_at(cs: dict[str, Any]) -> float:
    last = (cs.get("lastState") or {}).get("terminated")
    return parse_time(last.get("finishedAt", "")) if last else 0.0


def pod_row(pod: dict[str, Any], now: float) -> Row:
    """kubectl's printPod."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    total = len(spec.get("containers") or []) + sum(_restartable(c) for c in init_specs.values())
    ready = restarts = sidecar_restarts = 0
    last_restart = sidecar_last_restart = 0.0
    reason = status.get("reason") or status.get("phase") or ""
    if any(
        c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated"
        for c in status.get("conditions") or []
    ):
        reason = "SchedulingGated"
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount", 0))
        last_restart = max(last_restart, _terminated_at(cs))
        sidecar = _restartable(init_specs.get(cs.get("name"), {}))
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount", 0))
            sidecar_last_restart = max(sidecar_last_restart, _terminated_at(cs))
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += bool(cs.get("ready"))
            continue
        if term is not None:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode', 0)}"
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing or _condition_true(status, "Initialized"):
        restarts, last_restart = sidecar_restarts, sidecar_last_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount", 0))
            last_restart = max(last_restart, _terminated_at(cs))
            state = cs.get("state") or {}
            term, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = (
                    f"Signal:{term['signal']}"
                    if term.get("signal")
                    else f"ExitCode:{term.get('exitCode', 0)}"
                )
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart:
        restarts_text = f"{restarts} ({human_duration(now - last_restart)} ago)"
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        true = sum(_condition_true(status, g.get("conditionType", "")) for g in gates)
        gates_text = f"{true}/{len(gates)}"
    return [
        meta.get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_text,
        since(meta.get("creationTimestamp", ""), now),
        (ips[0].get("ip") if ips else "") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


# --- the other kinds ----------------------------------------------------------------------------------------

NODE_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Status", "string", 0, "The status of the node"),
    ("Roles", "string", 0, "The roles of the node"),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
    ("Version", "string", 0, "Kubelet Version reported by the node."),
    ("Internal-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider."),
    ("External-IP", "string", 1, "List of addresses reachable to the node. Queried from cloud provider."),
    (
        "OS-Image",
        "string",
        1,
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7).",
    ),
    ("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r'."),
    (
        "Container-Runtime",
        "string",
        1,
        "ContainerRuntime Version reported by the node through runtime remote API.",
    ),
]


def node_row(node: dict[str, Any], now: float) -> Row:
    meta, status = node.get("metadata", {}), node.get("status", {})
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in meta.get("labels") or {} if k.startswith(prefix))
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [
        meta.get("name", ""),
        state,
        ",".join(roles) or "<none>",
        since(meta.get("creationTimestamp", ""), now),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP") or "<none>",
        addresses.get("ExternalIP") or "<none>",
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NAMESPACE_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Status", "string", 0, "The status of the namespace"),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
]


def namespace_row(ns: dict[str, Any], now: float) -> Row:
    meta = ns.get("metadata", {})
    return [
        meta.get("name", ""),
        ns.get("status", {}).get("phase", ""),
        since(meta.get("creationTimestamp", ""), now),
    ]


EVENT_COLUMNS: list[Column] = [
    ("Last Seen", "string", 0, "Time when last event occurred"),
    ("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
    (
        "Reason",
        "string",
        0,
        "This should be a short, machine understandable string that gives the reason "
        "for this event being generated.",
    ),
    ("Object", "string", 0, "The object that this event is about."),
    ("Subobject", "string", 1, "The subobject that this event is about."),
    ("Source", "string", 1, "The component reporting this event."),
    ("Message", "string", 0, "A human-readable description of the status of this operation."),
    ("First Seen", "string", 1, "Time when first event occurred"),
    ("Count", "string", 1, "The number of times this event has occurred."),
    ("Name", "string", 1, "Name must be unique within a namespace."),
]


def event_row(ev: dict[str, Any], now: float) -> Row:
    obj = ev.get("involvedObject", {})
    source = ev.get("source", {})
    return [
        since(ev.get("lastTimestamp", ""), now),
        ev.get("type", ""),
        ev.get("reason", ""),
        f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
        obj.get("fieldPath", ""),
        ", ".join(x for x in (source.get("component"), source.get("host")) if x),
        str(ev.get("message", "")).strip(),
        since(ev.get("firstTimestamp", ""), now),
        str(ev.get("count", 1)),
        ev.get("metadata", {}).get("name", ""),
    ]


SERVICE_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Type", "string", 0, "type determines how the Service is exposed."),
    ("Cluster-IP", "string", 0, "clusterIP is the IP address of the service."),
    (
        "External-IP",
        "string",
        0,
        "externalIPs is a list of IP addresses for which nodes in the cluster will "
        "also accept traffic for this service.",
    ),
    ("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
    (
        "Selector",
        "string",
        1,
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
]


def service_row(svc: dict[str, Any], now: float) -> Row:
    spec = svc.get("spec", {})
    ports = [
        f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if not p.get("nodePort")
        else f"{p.get('port')}:{p.get('nodePort')}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    ]
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        svc.get("metadata", {}).get("name", ""),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "None",
        ",".join(spec.get("externalIPs") or []) or "<none>",
        ",".join(ports) or "<none>",
        since(svc.get("metadata", {}).get("creationTimestamp", ""), now),
        selector or "<none>",
    ]


ENDPOINTS_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Endpoints", "string", 0, "Endpoints of the service"),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
]


def endpoints_row(ep: dict[str, Any], now: float) -> Row:
    pairs = [
        f"{a.get('ip')}:{p.get('port')}"
        for s in ep.get("subsets") or []
        for p in s.get("ports") or []
        for a in s.get("addresses") or []
    ]
    shown = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [
        ep.get("metadata", {}).get("name", ""),
        shown or "<none>",
        since(ep["metadata"].get("creationTimestamp", ""), now),
    ]


CONFIGMAP_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Data", "string", 0, "Data contains the configuration data."),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
]


def configmap_row(cm: dict[str, Any], now: float) -> Row:
    count = len(cm.get("data") or {}) + len(cm.get("binaryData") or {})
    meta = cm.get("metadata", {})
    return [meta.get("name", ""), count, since(meta.get("creationTimestamp", ""), now)]


SECRET_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Type", "string", 0, "Used to facilitate programmatic handling of secret data."),
    ("Data", "string", 0, "Data contains the secret data."),
    ("Age", "string", 0, "CreationTimestamp is the time the object was created."),
]


def secret_row(secret: dict[str, Any], now: float) -> Row:
    """Never the data: only how many keys it has."""
    meta = secret.get("metadata", {})
    return [
        meta.get("name", ""),
        secret.get("type", "Opaque"),
        len(secret.get("data") or {}),
        since(meta.get("creationTimestamp", ""), now),
    ]


DEFAULT_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a namespace."),
    ("Created At", "date", 0, "CreationTimestamp is the time the object was created."),
]


def default_row(obj: dict[str, Any], now: float) -> Row:
    meta = obj.get("metadata", {})
    return [meta.get("name", ""), meta.get("creationTimestamp", "")]


PRINTERS: dict[str, tuple[list[Column], Callable[[dict[str, Any], float], Row]]] = {
    "Pod": (POD_COLUMNS, pod_row),
    "Node": (NODE_COLUMNS, node_row),
    "Namespace": (NAMESPACE_COLUMNS, namespace_row),
    "Event": (EVENT_COLUMNS, event_row),
    "Service": (SERVICE_COLUMNS, service_row),
    "Endpoints": (ENDPOINTS_COLUMNS, endpoints_row),
    "ConfigMap": (CONFIGMAP_COLUMNS, configmap_row),
    "Secret": (SECRET_COLUMNS, secret_row),
}


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    kind: str,
    objects: list[dict[str, Any]],
    now: float,
    *,
    resource_version: str = "",
    include_object: str = "Metadata",
    headers: bool = True,
    api_version: str = "meta.k8s.io/v1",
) -> dict[str, Any]:
    """A Table of `objects` (all of `kind`); `include_object` is None, Metadata or Object, as the
    `includeObject` query parameter asks."""
    columns, row = PRINTERS.get(kind, (DEFAULT_COLUMNS, default_row))
    rows = []
    for obj in objects:
        r: dict[str, Any] = {"cells": row(obj, now)}
        if include_object == "Object":
            r["object"] = obj
        elif include_object != "None":
            r["object"] = partial_metadata(obj)
        rows.append(r)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": d, "priority": p}
            for n, t, p, d in columns
        ]
        if headers
        else [],
        "rows": rows,
    }
