"""Kubernetes v1 Pod manifests: YAML in, typed and validated `Pod` records out.

Every error names the field the way kubectl does (`spec.containers[1].image: required`), and a field
podhost does not support is an error naming it, never silently dropped: a pod that runs differently from
what its manifest says is worse than one that does not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from podhost.errors import InvalidArgument

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


class ManifestError(InvalidArgument):
    """A manifest problem; the message starts with the field path."""


@dataclass
class ContainerPort:
    container_port: int
    host_port: int = 0
    protocol: str = "TCP"
    name: str = ""
    host_ip: str = ""


@dataclass
class Resources:
    cpu_limit_milli: int = 0
    cpu_request_milli: int = 0
    memory_limit: int = 0
    memory_request: int = 0


@dataclass
class ContainerSpec:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    ports: list[ContainerPort] = field(default_factory=list)
    working_dir: str = ""
    resources: Resources = field(default_factory=Resources)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    privileged: bool = False
    read_only_root_filesystem: bool = False
    allow_privilege_escalation: bool | None = None
    capabilities_add: list[str] = field(default_factory=list)
    capabilities_drop: list[str] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    liveness_probe: dict[str, Any] | None = None
    readiness_probe: dict[str, Any] | None = None
    startup_probe: dict[str, Any] | None = None


@dataclass
class Pod:
    name: str
    namespace: str = "default"
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    containers: list[ContainerSpec] = field(default_factory=list)
    init_containers: list[ContainerSpec] = field(default_factory=list)
    restart_policy: str = "Always"
    share_process_namespace: bool = False
    host_network: bool = False
    hostname: str = ""
    subdomain: str = ""
    dns_policy: str = "ClusterFirst"
    dns_config: dict[str, Any] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    termination_grace_period_seconds: int = 30
    sysctls: dict[str, str] = field(default_factory=dict)


def parse_quantity(value: Any, path: str) -> int:
    """A Kubernetes quantity in base units (bytes, or millicores when `path` ends in cpu)."""
    text = str(value).strip()
    m = _QUANTITY.match(text)
    if not m:
        raise ManifestError(f"{path}: invalid quantity {text!r}")
    number, _, suffix = m.groups()
    suffix = suffix or ""
    if path.endswith(".cpu"):
        if suffix == "m":
            return int(float(number))
        if suffix:
            raise ManifestError(f"{path}: invalid cpu quantity {text!r}")
        return int(float(number) * 1000)
    if suffix == "m":
        return int(float(number) / 1000)
    return int(float(number) * _SUFFIX[suffix])


class _Reader:
    """Walks one mapping, tracking its path, and refuses keys nobody read (unsupported fields)."""

    def __init__(self, data: Any, path: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: expected an object, got {type(data).__name__}")
        self.data, self.path = data, path
        self.seen: set[str] = set()

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False
    ) -> Any:
        self.seen.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise ManifestError(f"{self._p(key)}: required")
            return default
        value = self.data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ManifestError(f"{self._p(key)}: expected {names}, got {type(value).__name__}")
        return value

    def str_list(self, key: str) -> list[str]:
        items = self.get(key, list, [])
        for i, item in enumerate(items):
            if not isinstance(item, str | int | float):
                raise ManifestError(f"{self._p(key)}[{i}]: expected string")
        return [str(x) for x in items]

    def str_map(self, key: str) -> dict[str, str]:
        items = self.get(key, dict, {})
        return {str(k): str(v) for k, v in items.items()}

    def child(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict, {}), self._p(key))

    def done(self, ignore: tuple[str, ...] = ()) -> None:
        unknown = [k for k in self.data if k not in self.seen and k not in ignore]
        if unknown:
            raise ManifestError(f"{self._p(unknown[0])}: field is not supported by podhost")


def _container(data: Any, path: str, names: set[str]) -> ContainerSpec:
    r = _Reader(data, path)
    name = r.get("name", str, required=True)
    if not _DNS1123_LABEL.match(name):
        raise ManifestError(f"{path}.name: {name!r} must be a DNS-1123 label")
    if name in names:
        raise ManifestError(f"{path}.name: duplicate container name {name!r}")
    names.add(name)
    c = ContainerSpec(name=name, image=r.get("image", str, required=True))
    if not c.image.strip():
        raise ManifestError(f"{path}.image: required")
    c.command, c.args = r.str_list("command"), r.str_list("args")
    c.working_dir = r.get("workingDir", str, "")
    c.stdin, c.stdin_once, c.tty = (
        r.get("stdin", bool, False),
        r.get("stdinOnce", bool, False),
        r.get("tty", bool, False),
    )
    r.get("imagePullPolicy", str, "")  # accepted: podhost resolves images from its store either way
    r.get("terminationMessagePath", str, "")
    r.get("terminationMessagePolicy", str, "")
    for i, env in enumerate(r.get("env", list, [])):
        er = _Reader(env, f"{path}.env[{i}]")
        c.env.append((er.get("name", str, required=True), str(er.get("value", (str, int, float, bool), ""))))
        er.done()
    for i, port in enumerate(r.get("ports", list, [])):
        pr = _Reader(port, f"{path}.ports[{i}]")
        cp = ContainerPort(
            container_port=pr.get("containerPort", int, required=True),
            host_port=pr.get("hostPort", int, 0),
            protocol=pr.get("protocol", str, "TCP"),
            name=pr.get("name", str, ""),
            host_ip=pr.get("hostIP", str, ""),
        )
        if not 0 < cp.container_port < 65536:
            raise ManifestError(f"{path}.ports[{i}].containerPort: must be between 1 and 65535")
        if cp.protocol not in ("TCP", "UDP", "SCTP"):
            raise ManifestError(f"{path}.ports[{i}].protocol: unsupported value {cp.protocol!r}")
        pr.done()
        c.ports.append(cp)
    res = r.child("resources")
    for kind in ("limits", "requests"):
        q = res.child(kind)
        cpu, mem = q.get("cpu", (str, int, float)), q.get("memory", (str, int, float))
        q.done()
        limit = kind == "limits"
        if cpu is not None:
            milli = parse_quantity(cpu, f"{path}.resources.{kind}.cpu")
            setattr(c.resources, "cpu_limit_milli" if limit else "cpu_request_milli", milli)
        if mem is not None:
            value = parse_quantity(mem, f"{path}.resources.{kind}.memory")
            if value <= 0:
                raise ManifestError(f"{path}.resources.{kind}.memory: must be positive")
            setattr(c.resources, "memory_limit" if limit else "memory_request", value)
    res.done()
    sc = r.child("securityContext")
    c.run_as_user, c.run_as_group = sc.get("runAsUser", int), sc.get("runAsGroup", int)
    c.privileged = sc.get("privileged", bool, False)
    c.read_only_root_filesystem = sc.get("readOnlyRootFilesystem", bool, False)
    c.allow_privilege_escalation = sc.get("allowPrivilegeEscalation", bool)
    caps = sc.child("capabilities")
    c.capabilities_add, c.capabilities_drop = caps.str_list("add"), caps.str_list("drop")
    caps.done()
    sc.done()
    for i, vm in enumerate(r.get("volumeMounts", list, [])):
        vr = _Reader(vm, f"{path}.volumeMounts[{i}]")
        c.volume_mounts.append(
            {
                "name": vr.get("name", str, required=True),
                "mountPath": vr.get("mountPath", str, required=True),
                "readOnly": vr.get("readOnly", bool, False),
            }
        )
        vr.done()
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        value = r.get(probe, dict)
        if value is not None:
            setattr(c, re.sub(r"([A-Z])", r"_\1", probe).lower(), value)
    r.done()
    return c


def parse_pod(doc: dict[str, Any]) -> Pod:
    """One Pod document (already loaded from YAML) to a validated `Pod`."""
    r = _Reader(doc, "")
    api, kind = r.get("apiVersion", str, required=True), r.get("kind", str, required=True)
    if api != "v1" or kind != "Pod":
        raise ManifestError(f"kind: podhost runs v1 Pods, not {api}/{kind}")
    meta = r.child("metadata")
    pod = Pod(name=meta.get("name", str, required=True))
    if not _DNS1123_SUBDOMAIN.match(pod.name) or len(pod.name) > 253:
        raise ManifestError(f"metadata.name: {pod.name!r} must be a DNS-1123 subdomain")
    pod.namespace = meta.get("namespace", str, "default")
    pod.uid = meta.get("uid", str, "")
    pod.labels, pod.annotations = meta.str_map("labels"), meta.str_map("annotations")
    meta.done(ignore=("creationTimestamp", "resourceVersion", "generateName", "managedFields"))
    spec = r.child("spec")
    names: set[str] = set()
    containers = spec.get("containers", list, required=True)
    if not containers:
        raise ManifestError("spec.containers: must have at least one container")
    pod.init_containers = [
        _container(c, f"spec.initContainers[{i}]", names)
        for i, c in enumerate(spec.get("initContainers", list, []))
    ]
    pod.containers = [_container(c, f"spec.containers[{i}]", names) for i, c in enumerate(containers)]
    pod.restart_policy = spec.get("restartPolicy", str, "Always")
    if pod.restart_policy not in ("Always", "OnFailure", "Never"):
        raise ManifestError(f"spec.restartPolicy: unsupported value {pod.restart_policy!r}")
    pod.share_process_namespace = spec.get("shareProcessNamespace", bool, False)
    pod.host_network = spec.get("hostNetwork", bool, False)
    pod.hostname, pod.subdomain = spec.get("hostname", str, ""), spec.get("subdomain", str, "")
    pod.dns_policy = spec.get("dnsPolicy", str, "ClusterFirst")
    if pod.dns_policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        raise ManifestError(f"spec.dnsPolicy: unsupported value {pod.dns_policy!r}")
    pod.dns_config = spec.get("dnsConfig", dict, {})
    pod.volumes = spec.get("volumes", list, [])
    pod.termination_grace_period_seconds = spec.get("terminationGracePeriodSeconds", int, 30)
    psc = spec.child("securityContext")
    for i, s in enumerate(psc.get("sysctls", list, [])):
        sr = _Reader(s, f"spec.securityContext.sysctls[{i}]")
        pod.sysctls[sr.get("name", str, required=True)] = str(sr.get("value", (str, int), required=True))
        sr.done()
    psc.done()
    spec.done(
        ignore=(
            "schedulerName",
            "nodeName",
            "serviceAccountName",
            "enableServiceLinks",
            "priority",
            "tolerations",
            "preemptionPolicy",
        )
    )
    r.done(ignore=("status",))
    return pod


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every object in a YAML stream; `kind: List` documents are flattened."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"manifest is not valid YAML: {e}") from e
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ManifestError(f"document {i}: expected an object")
        if doc.get("kind") == "List":
            out.extend(doc.get("items") or [])
        else:
            out.append(doc)
    return out
