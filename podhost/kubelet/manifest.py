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
class Probe:
    """One probe (core/v1 Probe): exactly one handler, with the API's defaults for timing."""

    handler: str  # "exec", "httpGet" or "tcpSocket"
    command: list[str] = field(default_factory=list)  # exec
    port: int | str = 0  # httpGet, tcpSocket: a number or a container port name
    host: str = ""  # httpGet, tcpSocket: default the pod IP
    path: str = "/"  # httpGet
    scheme: str = "HTTP"  # httpGet
    http_headers: list[tuple[str, str]] = field(default_factory=list)
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str = ""  # image volumes only: the directory of the image to mount (CRI image_sub_path)


@dataclass
class Volume:
    """A pod volume: `emptyDir` (a directory that lives as long as the pod), `hostPath`, or `image` (an
    image's files, read-only: KEP-4639, CRI `Mount.image`)."""

    name: str
    kind: str  # "emptyDir", "hostPath" or "image"
    path: str = ""  # hostPath
    host_path_type: str = ""  # hostPath: "", Directory, DirectoryOrCreate, File, FileOrCreate, Socket...
    reference: str = ""  # image: the image reference
    pull_policy: str = ""  # image: Always, IfNotPresent, Never ("": IfNotPresent, as for :latest-less tags)


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
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None


#: Where a Pod with `hostUsers: false` keeps the first host id of its user namespace (podhost's own key).
USERNS_ANNOTATION = "podhost.io/userns-host-id"
#: The ids a pod's user namespace gets, as the kubelet gives them (KEP-127): 65536, at a multiple of it.
USERNS_LENGTH = 65536


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
    dns_policy: str = "ClusterFirst"
    dns_config: dict[str, Any] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    termination_grace_period_seconds: int = 30
    sysctls: dict[str, str] = field(default_factory=dict)
    #: spec.securityContext: the defaults every container inherits, and the pod's extra groups.
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    fs_group: int | None = None
    supplemental_groups_policy: str = ""  # "", Merge or Strict
    #: spec.hostUsers (false: the pod gets its own user namespace, its root mapped to `userns_host_id`).
    host_users: bool = True
    userns_host_id: int = 0  # the first host id of the pod's 65536 ids; 0 until the pod manager picks


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
        mount = VolumeMount(
            name=vr.get("name", str, required=True),
            mount_path=vr.get("mountPath", str, required=True),
            read_only=vr.get("readOnly", bool, False),
            sub_path=vr.get("subPath", str, ""),
        )
        if mount.sub_path.startswith("/") or ".." in mount.sub_path.split("/"):
            raise ManifestError(f"{path}.volumeMounts[{i}].subPath: must be a relative path without '..'")
        if not mount.mount_path.startswith("/"):
            raise ManifestError(f"{path}.volumeMounts[{i}].mountPath: must be an absolute path")
        vr.done()
        c.volume_mounts.append(mount)
    for key, attr in (
        ("livenessProbe", "liveness_probe"),
        ("readinessProbe", "readiness_probe"),
        ("startupProbe", "startup_probe"),
    ):
        if r.get(key, dict) is not None:
            setattr(c, attr, _probe(r.child(key), single_success=key != "readinessProbe"))
    r.done()
    return c


_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket")


def _port(value: Any, path: str) -> int | str:
    """A probe or service target port: a number 1-65535 or an IANA_SVC_NAME (a container port's name)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value < 65536:
            raise ManifestError(f"{path}: must be between 1 and 65535")
        return value
    if isinstance(value, str) and value:
        if value.isdigit():
            return _port(int(value), path)
        if _DNS1123_LABEL.match(value) and len(value) <= 15:
            return value
    raise ManifestError(f"{path}: expected a port number or a port name, got {value!r}")


_PROBE_TIMING = (
    ("initialDelaySeconds", "initial_delay_seconds", 0),
    ("periodSeconds", "period_seconds", 1),
    ("timeoutSeconds", "timeout_seconds", 1),
    ("successThreshold", "success_threshold", 1),
    ("failureThreshold", "failure_threshold", 1),
)


def _probe(r: _Reader, single_success: bool) -> Probe:
    timing: dict[str, int] = {}
    for key, attr, minimum in _PROBE_TIMING:
        value = r.get(key, int)
        if value is not None:
            if value < minimum:
                raise ManifestError(f"{r.path}.{key}: must be at least {minimum}")
            timing[attr] = value
    handlers = [h for h in _PROBE_HANDLERS if r.data.get(h) is not None]
    if len(handlers) != 1:
        if not handlers:
            r.done()  # an unsupported handler (grpc) is named here
        raise ManifestError(f"{r.path}: exactly one of exec, httpGet, tcpSocket is required")
    probe = Probe(handler=handlers[0], **timing)  # type: ignore[arg-type]
    h = r.child(probe.handler)
    if probe.handler == "exec":
        probe.command = h.str_list("command")
        if not probe.command:
            raise ManifestError(f"{h.path}.command: required")
    else:
        probe.port = _port(h.get("port", (int, str), required=True), f"{h.path}.port")
        probe.host = h.get("host", str, "")
    if probe.handler == "httpGet":
        probe.path = h.get("path", str, "/") or "/"
        probe.scheme = h.get("scheme", str, "HTTP")
        if probe.scheme != "HTTP":
            raise ManifestError(f"{h.path}.scheme: only HTTP is supported by podhost")
        for i, header in enumerate(h.get("httpHeaders", list, [])):
            hr = _Reader(header, f"{h.path}.httpHeaders[{i}]")
            probe.http_headers.append((hr.get("name", str, required=True), hr.get("value", str, "")))
            hr.done()
    h.done()
    if single_success and probe.success_threshold != 1:
        raise ManifestError(f"{r.path}.successThreshold: must be 1 for liveness and startup probes")
    r.done()
    return probe


_PULL_POLICIES = ("", "Always", "IfNotPresent", "Never")
_HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket")


def _volume(data: Any, path: str) -> Volume:
    r = _Reader(data, path)
    name = r.get("name", str, required=True)
    if not _DNS1123_LABEL.match(name):
        raise ManifestError(f"{path}.name: {name!r} must be a DNS-1123 label")
    kinds = [k for k in ("emptyDir", "hostPath", "image") if k in r.data]
    if len(kinds) != 1:
        r.get("emptyDir", dict)
        r.get("hostPath", dict)
        r.get("image", dict)
        r.done()  # names an unsupported volume type (configMap, secret, ...) first
        raise ManifestError(f"{path}: exactly one of emptyDir, hostPath, image is required")
    volume = Volume(name=name, kind=kinds[0])
    v = r.child(volume.kind)
    if volume.kind == "hostPath":
        volume.path = v.get("path", str, required=True)
        if not volume.path.startswith("/"):
            raise ManifestError(f"{path}.hostPath.path: must be an absolute path")
        volume.host_path_type = v.get("type", str, "")
        if volume.host_path_type not in _HOST_PATH_TYPES:
            raise ManifestError(f"{path}.hostPath.type: unsupported value {volume.host_path_type!r}")
    if volume.kind == "image":
        volume.reference = v.get("reference", str, required=True)
        volume.pull_policy = v.get("pullPolicy", str, "")
        if volume.pull_policy not in _PULL_POLICIES:
            raise ManifestError(f"{path}.image.pullPolicy: unsupported value {volume.pull_policy!r}")
    v.done()  # emptyDir.medium and sizeLimit are refused: podhost backs emptyDir with plain disk only
    r.done()
    return volume


def parse_pod(doc: dict[str, Any]) -> Pod:
    """One Pod document (already loaded from YAML) to a validated `Pod`."""
    r = _Reader(doc, "")
    api, kind = r.get("apiVersion", str, required=True), r.get("kind", str, required=True)
    if api != "v1" or kind != "Pod":
        raise ManifestError(f"kind: podhost runs v1 Pods, not {api}/{kind}")
    name, namespace, uid, labels, annotations = _metadata(r)
    pod = Pod(name=name, namespace=namespace, uid=uid, labels=labels, annotations=annotations)
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
    pod.host_users = spec.get("hostUsers", bool, True)
    if not pod.host_users and pod.host_network:
        raise ManifestError("spec.hostUsers: Forbidden: when `hostUsers` is false, hostNetwork must be false")
    if not pod.host_users and USERNS_ANNOTATION in pod.annotations:
        try:
            pod.userns_host_id = int(pod.annotations[USERNS_ANNOTATION])
        except ValueError as e:
            raise ManifestError(f"metadata.annotations[{USERNS_ANNOTATION!r}]: not a host id") from e
    pod.hostname = spec.get("hostname", str, "")
    # spec.subdomain is left unread, so `done()` refuses it by name: the kubelet honours it with a hosts
    # file of its own (hostname.subdomain.<namespace>.svc.<cluster domain>) mounted over every container's
    # /etc/hosts, and podhost's pod manager has none; the runtime writes /etc/hosts from the CRI hostname.
    pod.dns_policy = spec.get("dnsPolicy", str, "ClusterFirst")
    if pod.dns_policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        raise ManifestError(f"spec.dnsPolicy: unsupported value {pod.dns_policy!r}")
    dns = spec.child("dnsConfig")
    pod.dns_config = {
        "nameservers": dns.str_list("nameservers"),
        "searches": dns.str_list("searches"),
        "options": [],
    }
    for i, option in enumerate(dns.get("options", list, [])):
        orr = _Reader(option, f"spec.dnsConfig.options[{i}]")
        pod.dns_config["options"].append(
            {"name": orr.get("name", str, required=True), "value": str(orr.get("value", (str, int), ""))}
        )
        orr.done()
    dns.done()
    if not any(pod.dns_config.values()):
        pod.dns_config = {}
    if pod.dns_policy == "None" and not pod.dns_config.get("nameservers"):
        raise ManifestError("spec.dnsConfig.nameservers: required when dnsPolicy is None")
    pod.volumes = [_volume(v, f"spec.volumes[{i}]") for i, v in enumerate(spec.get("volumes", list, []))]
    volume_kinds: dict[str, str] = {}
    for i, v in enumerate(pod.volumes):
        if v.name in volume_kinds:
            raise ManifestError(f"spec.volumes[{i}].name: duplicate volume name {v.name!r}")
        volume_kinds[v.name] = v.kind
    for kind, group in (("initContainers", pod.init_containers), ("containers", pod.containers)):
        for ci, c in enumerate(group):
            for mi, m in enumerate(c.volume_mounts):
                if m.name not in volume_kinds:
                    raise ManifestError(
                        f"spec.{kind}[{ci}].volumeMounts[{mi}].name: no volume named {m.name!r}"
                    )
                if m.sub_path and volume_kinds[m.name] != "image":
                    raise ManifestError(
                        f"spec.{kind}[{ci}].volumeMounts[{mi}].subPath: podhost supports it for image "
                        "volumes only"
                    )
    pod.termination_grace_period_seconds = spec.get("terminationGracePeriodSeconds", int, 30)
    psc = spec.child("securityContext")
    pod.run_as_user, pod.run_as_group = psc.get("runAsUser", int), psc.get("runAsGroup", int)
    pod.fs_group = psc.get("fsGroup", int)
    groups = psc.get("supplementalGroups", list, [])
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in groups):
        raise ManifestError("spec.securityContext.supplementalGroups: must be a list of group ids")
    pod.supplemental_groups = list(groups)
    pod.supplemental_groups_policy = psc.get("supplementalGroupsPolicy", str, "")
    if pod.supplemental_groups_policy not in ("", "Merge", "Strict"):
        raise ManifestError(
            "spec.securityContext.supplementalGroupsPolicy: Unsupported value: "
            f'"{pod.supplemental_groups_policy}": supported values: "Merge", "Strict"'
        )
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


# --- Services --------------------------------------------------------------------------------------------


@dataclass
class ServicePort:
    port: int
    target_port: int | str  # a number, or the name of a container port
    protocol: str = "TCP"
    name: str = ""


@dataclass
class Service:
    """A v1 Service as podhost keeps it: a selector and ports, for its endpoints (there is no proxy)."""

    name: str
    namespace: str = "default"
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)
    ports: list[ServicePort] = field(default_factory=list)


def _metadata(r: _Reader) -> tuple[str, str, str, dict[str, str], dict[str, str]]:
    meta = r.child("metadata")
    name = meta.get("name", str, required=True)
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise ManifestError(f"metadata.name: {name!r} must be a DNS-1123 subdomain")
    namespace = meta.get("namespace", str, "default")
    if not _DNS1123_LABEL.match(namespace):
        raise ManifestError(f"metadata.namespace: {namespace!r} must be a DNS-1123 label")
    uid = meta.get("uid", str, "")
    labels, annotations = meta.str_map("labels"), meta.str_map("annotations")
    meta.done(ignore=("creationTimestamp", "resourceVersion", "generateName", "managedFields"))
    return name, namespace, uid, labels, annotations


def parse_service(doc: dict[str, Any]) -> Service:
    """One v1 Service document to a validated `Service` (selector and ports; ClusterIP or headless)."""
    r = _Reader(doc, "")
    api, kind = r.get("apiVersion", str, required=True), r.get("kind", str, required=True)
    if api != "v1" or kind != "Service":
        raise ManifestError(f"kind: expected v1/Service, not {api}/{kind}")
    name, namespace, uid, labels, annotations = _metadata(r)
    svc = Service(name=name, namespace=namespace, uid=uid, labels=labels, annotations=annotations)
    spec = r.child("spec")
    svc.selector = spec.str_map("selector")
    kind_ = spec.get("type", str, "ClusterIP")
    if kind_ != "ClusterIP":
        raise ManifestError(f"spec.type: podhost keeps endpoints only; {kind_!r} is not supported")
    cluster_ip = spec.get("clusterIP", str, "")
    if cluster_ip not in ("", "None"):
        raise ManifestError("spec.clusterIP: podhost allocates no cluster IPs; leave it out or use None")
    port_names: set[str] = set()
    for i, port in enumerate(spec.get("ports", list, [])):
        pr = _Reader(port, f"spec.ports[{i}]")
        number = pr.get("port", int, required=True)
        if not 0 < number < 65536:
            raise ManifestError(f"spec.ports[{i}].port: must be between 1 and 65535")
        target = pr.get("targetPort", (int, str))
        sp = ServicePort(
            port=number,
            target_port=number if target is None else _port(target, f"spec.ports[{i}].targetPort"),
            protocol=pr.get("protocol", str, "TCP"),
            name=pr.get("name", str, ""),
        )
        if sp.protocol not in ("TCP", "UDP", "SCTP"):
            raise ManifestError(f"spec.ports[{i}].protocol: unsupported value {sp.protocol!r}")
        if sp.name in port_names:
            raise ManifestError(f"spec.ports[{i}].name: duplicate port name {sp.name!r}")
        port_names.add(sp.name)
        pr.done()
        svc.ports.append(sp)
    if len(svc.ports) > 1 and "" in port_names:
        raise ManifestError("spec.ports: every port needs a name when there is more than one")
    spec.done(ignore=("sessionAffinity", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"))
    r.done(ignore=("status",))
    return svc


def parse_object(doc: dict[str, Any], where: str = "") -> Pod | Service:
    """A Pod or a Service; errors are prefixed with `where` ("file.yaml (document 2)") when given."""
    try:
        if doc.get("kind") == "Service":
            return parse_service(doc)
        return parse_pod(doc)
    except ManifestError as e:
        if not where:
            raise
        raise ManifestError(f"{where}: {e}") from None


def load_objects(text: str, source: str = "") -> list[Pod | Service]:
    """Every Pod and Service of a YAML stream, all validated before any is returned (so a broken
    document means nothing is applied); the same object twice is an error."""
    objects: list[Pod | Service] = []
    seen: set[tuple[str, str, str]] = set()
    docs = load_documents(text)
    for i, doc in enumerate(docs):
        where = f"{source} (document {i + 1})" if len(docs) > 1 else source
        obj = parse_object(doc, where)
        key = (type(obj).__name__, obj.namespace, obj.name)
        if key in seen:
            raise ManifestError(f"{where or 'manifest'}: {key[0].lower()} {obj.name!r} appears twice")
        seen.add(key)
        objects.append(obj)
    return objects
