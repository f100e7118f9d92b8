"""Kubernetes v1 Pod and Service manifests: YAML in, typed and validated records out.

One validator, in three steps (`_validate`), for every manifest (static pods, applied files and the API
server's writes alike): Kubernetes' own schema first (`podhost.kubeapi.schema`: an unknown field is
refused as kube-apiserver's strict decoding refuses it, `unknown field "spec.containers[0].comand"`;
then types and required fields), then `_SUPPORTED`, the table of what podhost runs (a field it does not
run is refused by name, `spec.nodeSelector: not supported on this node`, never silently dropped: a pod
that runs differently from what its manifest says is worse than one that does not run), then the value
checks of the typed view below, each error naming its field as kubectl does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from podhost.errors import InvalidArgument
from podhost.kubeapi import schema as sch

if TYPE_CHECKING:
    from podhost.kubelet.configobjects import ConfigObject

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
class Action:
    """What a probe or a lifecycle hook does (core/v1 ProbeHandler, LifecycleHandler): exactly one handler.
    Probes and hooks share these fields, and one runner (probes.py) for each kind of action."""

    handler: str  # "exec", "httpGet", "tcpSocket" or "grpc" (probes); "exec", "httpGet" or "sleep" (hooks)
    command: list[str] = field(default_factory=list)  # exec
    port: int | str = 0  # httpGet, tcpSocket, grpc: a number (or, but for grpc, a container port's name)
    host: str = ""  # httpGet, tcpSocket: default the pod IP (grpc has none: always the pod IP)
    path: str = "/"  # httpGet
    scheme: str = "HTTP"  # httpGet
    http_headers: list[tuple[str, str]] = field(default_factory=list)
    service: str = ""  # grpc: the service name sent in grpc.health.v1.HealthCheckRequest


@dataclass
class Probe(Action):
    """One probe (core/v1 Probe), with the API's defaults for timing."""

    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    #: liveness and startup probes: the grace period of the kill their failure causes (else the pod's)
    termination_grace_period_seconds: int | None = None


@dataclass
class LifecycleHandler(Action):
    """A postStart or preStop hook (core/v1 LifecycleHandler): exec, httpGet or sleep."""

    seconds: int = 0  # sleep


@dataclass
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool = False
    #: image volumes: the image's directory (CRI image_sub_path); configMap, secret, downwardAPI and
    #: projected volumes: a file or directory of the volume, bound as it is at container creation (so it
    #: does not follow later updates, as upstream).
    sub_path: str = ""


@dataclass
class ResourceFieldRef:
    """resourceFieldRef: a container's limits.cpu, requests.memory, ... in units of `divisor`."""

    resource: str
    container_name: str = ""
    divisor: str = ""  # a quantity as written ("" means 1)


@dataclass
class KeyToPath:
    """An `items` entry: object key -> file path in the volume, with its own mode (None: defaultMode)."""

    key: str
    path: str
    mode: int | None = None


@dataclass
class DownwardAPIFile:
    """A downwardAPI item: a file whose content is a pod field (`field_path`) or a container resource."""

    path: str
    field_path: str = ""
    resource: ResourceFieldRef | None = None
    mode: int | None = None


@dataclass
class VolumeProjection:
    """One source of a config volume: a configMap or secret (`name`, `items`, `optional`) or downward API
    `files`. A configMap, secret or downwardAPI volume is a projected volume with one source."""

    kind: str  # "configMap", "secret" or "downwardAPI"
    name: str = ""
    items: list[KeyToPath] = field(default_factory=list)
    optional: bool = False
    files: list[DownwardAPIFile] = field(default_factory=list)


#: The volume kinds the kubelet writes with its atomic writer (pkg/volume/util/atomic_writer.go).
CONFIG_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
#: The file mode of a config volume's files unless defaultMode says otherwise (v1 defaults: 0644).
DEFAULT_MODE = 0o644


@dataclass
class Volume:
    """A pod volume: `emptyDir` (a directory that lives as long as the pod; with medium Memory a tmpfs),
    `hostPath`, `image` (an image's files, read-only: KEP-4639, CRI `Mount.image`), or one of the config
    volumes (`CONFIG_VOLUMES`), whose files the pod manager writes from API objects and the pod itself."""

    name: str
    kind: str  # "emptyDir", "hostPath", "image", "configMap", "secret", "downwardAPI" or "projected"
    path: str = ""  # hostPath
    host_path_type: str = ""  # hostPath: "", Directory, DirectoryOrCreate, File, FileOrCreate, Socket...
    reference: str = ""  # image: the image reference
    pull_policy: str = ""  # image: Always, IfNotPresent, Never ("": IfNotPresent, as for :latest-less tags)
    medium: str = ""  # emptyDir: "" (the node's disk) or "Memory" (a tmpfs)
    size_limit: int = 0  # emptyDir: bytes (0: none)
    default_mode: int = DEFAULT_MODE  # config volumes
    sources: list[VolumeProjection] = field(default_factory=list)  # config volumes

    @property
    def tmpfs(self) -> bool:
        """Backed by memory, as the kubelet's plugins wrap them (an emptyDir of medium Memory): secret,
        downwardAPI and projected volumes, and emptyDir medium Memory; a configMap volume is on disk."""
        if self.kind == "emptyDir":
            return self.medium == "Memory"
        return self.kind in ("secret", "downwardAPI", "projected")


@dataclass
class EnvVarSource:
    """env[].valueFrom: one of configMapKeyRef / secretKeyRef (`name`, `key`, `optional`), fieldRef
    (`field_path`) or resourceFieldRef (`resource`)."""

    kind: str  # "configMapKeyRef", "secretKeyRef", "fieldRef" or "resourceFieldRef"
    name: str = ""
    key: str = ""
    optional: bool = False
    field_path: str = ""
    resource: ResourceFieldRef | None = None


@dataclass
class EnvVar:
    name: str
    value: str = ""
    value_from: EnvVarSource | None = None


@dataclass
class EnvFromSource:
    """envFrom[]: every key of a configMap or secret (`kind` configMapRef / secretRef), prefixed."""

    kind: str
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class RestartRule:
    """One of a container's `restartPolicyRules` (KEP-5307, KEP-5532): on an exit whose code is `In`
    (or `NotIn`) `values`, do `action` (Restart, or RestartAllContainers)."""

    action: str
    operator: str
    values: tuple[int, ...] = ()

    def matches(self, exit_code: int) -> bool:
        return (exit_code in self.values) == (self.operator == "In")


RESTART = "Restart"
RESTART_ALL_CONTAINERS = "RestartAllContainers"


@dataclass
class ContainerSpec:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: list[EnvVar] = field(default_factory=list)
    env_from: list[EnvFromSource] = field(default_factory=list)
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
    post_start: LifecycleHandler | None = None  # lifecycle.postStart
    pre_stop: LifecycleHandler | None = None  # lifecycle.preStop
    #: resizePolicy: resource name (cpu, memory) -> NotRequired or RestartContainer (absent: NotRequired).
    resize_policy: dict[str, str] = field(default_factory=dict)
    #: An ephemeral container's targetContainerName: it joins that container's PID namespace.
    target_container_name: str = ""
    #: The container's own restartPolicy ("" when unset: the pod's decides); Always on an init container
    #: makes it a sidecar (a restartable init container).
    restart_policy: str = ""
    restart_policy_rules: list[RestartRule] = field(default_factory=list)


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
    #: spec.ephemeralContainers (added through the ephemeralcontainers subresource only; never restarted).
    ephemeral_containers: list[ContainerSpec] = field(default_factory=list)
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
    #: spec.serviceAccountName, for the downward API ("default", as the ServiceAccount admission sets it).
    service_account_name: str = "default"
    readiness_gates: list[str] = field(default_factory=list)  # spec.readinessGates[].conditionType

    @property
    def sidecars(self) -> list[ContainerSpec]:
        """The restartable init containers (native sidecars), in order."""
        return [c for c in self.init_containers if c.restart_policy == "Always"]

    def is_sidecar(self, spec: ContainerSpec) -> bool:
        return spec.restart_policy == "Always" and any(c is spec for c in self.init_containers)


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


# --- what podhost runs ---------------------------------------------------------------------------------

#: The fields podhost runs, per upstream definition a manifest reaches. A field the schema has and this
#: table has not is refused by name ("not supported on this node", unlike an "unknown field", which the
#: schema does not have at all), never dropped: a pod that runs differently from what its manifest says is
#: worse than one that does not run.
_SUPPORTED: dict[str, str] = {
    "Pod": "apiVersion kind metadata spec",
    "Service": "apiVersion kind metadata spec",
    "ConfigMap": "apiVersion kind metadata data binaryData immutable",
    "Secret": "apiVersion kind metadata data stringData type immutable",
    "ObjectMeta": "name namespace uid labels annotations",
    "PodSpec": "containers initContainers restartPolicy shareProcessNamespace hostNetwork hostUsers hostname "
    "dnsPolicy dnsConfig volumes terminationGracePeriodSeconds securityContext ephemeralContainers "
    "readinessGates",
    "PodReadinessGate": "conditionType",
    "Container": "name image command args workingDir stdin stdinOnce tty env envFrom ports resources "
    "securityContext volumeMounts livenessProbe readinessProbe startupProbe lifecycle resizePolicy "
    "restartPolicy restartPolicyRules",
    "ContainerRestartRule": "action exitCodes",
    "ContainerRestartRuleOnExitCodes": "operator values",
    "ContainerResizePolicy": "resourceName restartPolicy",
    # What the API allows an ephemeral container (the rest is Forbidden first: `_ephemeral_forbidden`).
    "EphemeralContainer": "name image command args workingDir stdin stdinOnce tty env envFrom resources "
    "securityContext volumeMounts targetContainerName",
    "EnvVar": "name value valueFrom",
    "EnvVarSource": "configMapKeyRef secretKeyRef fieldRef resourceFieldRef",
    "ConfigMapKeySelector": "name key optional",
    "SecretKeySelector": "name key optional",
    "ObjectFieldSelector": "apiVersion fieldPath",
    "ResourceFieldSelector": "containerName resource divisor",
    "EnvFromSource": "configMapRef secretRef prefix",
    "ConfigMapEnvSource": "name optional",
    "SecretEnvSource": "name optional",
    "ContainerPort": "containerPort hostPort protocol name hostIP",
    "ResourceRequirements": "limits requests",
    "SecurityContext": "runAsUser runAsGroup privileged readOnlyRootFilesystem allowPrivilegeEscalation "
    "capabilities",
    "Capabilities": "add drop",
    "VolumeMount": "name mountPath readOnly subPath",
    "Probe": "exec httpGet tcpSocket grpc initialDelaySeconds periodSeconds timeoutSeconds successThreshold "
    "failureThreshold terminationGracePeriodSeconds",
    "GRPCAction": "port service",
    "Lifecycle": "postStart preStop",  # stopSignal: not yet
    "LifecycleHandler": "exec httpGet sleep",  # tcpSocket: the kubelet accepts it and fails it at run time
    "SleepAction": "seconds",
    "ExecAction": "command",
    "HTTPGetAction": "port host path scheme httpHeaders",
    "HTTPHeader": "name value",
    "TCPSocketAction": "port host",
    "Volume": "name emptyDir hostPath image configMap secret downwardAPI projected",
    "EmptyDirVolumeSource": "medium sizeLimit",
    "ConfigMapVolumeSource": "name items defaultMode optional",
    "SecretVolumeSource": "secretName items defaultMode optional",
    "KeyToPath": "key path mode",
    "DownwardAPIVolumeSource": "items defaultMode",
    "DownwardAPIVolumeFile": "path fieldRef resourceFieldRef mode",
    "ProjectedVolumeSource": "sources defaultMode",
    # serviceAccountToken, clusterTrustBundle, podCertificate: refused by name (no token issuer here)
    "VolumeProjection": "configMap secret downwardAPI",
    "ConfigMapProjection": "name items optional",
    "SecretProjection": "name items optional",
    "DownwardAPIProjection": "items",
    "HostPathVolumeSource": "path type",
    "ImageVolumeSource": "reference pullPolicy",
    "PodDNSConfig": "nameservers searches options",
    "PodDNSConfigOption": "name value",
    "PodSecurityContext": "runAsUser runAsGroup fsGroup supplementalGroups supplementalGroupsPolicy sysctls",
    "Sysctl": "name value",
    "ServiceSpec": "selector type clusterIP ports",
    "ServicePort": "port targetPort protocol name",
}
#: Accepted and not used: what the API server and its defaults set, status, and settings that change
#: nothing here (podhost resolves images from its store whatever the pull policy).
_IGNORED: dict[str, str] = {
    "Pod": "status",
    "Service": "status",
    "ObjectMeta": "creationTimestamp resourceVersion generateName managedFields",
    "PodSpec": "schedulerName nodeName serviceAccountName enableServiceLinks priority tolerations "
    "preemptionPolicy",
    "Container": "imagePullPolicy terminationMessagePath terminationMessagePolicy",
    "EphemeralContainer": "imagePullPolicy terminationMessagePath terminationMessagePolicy",
    "ServiceSpec": "sessionAffinity ipFamilies ipFamilyPolicy internalTrafficPolicy",
}
#: Maps whose keys are names podhost must know (resource names).
_MAP_KEYS: dict[str, str] = {
    "ResourceRequirements.limits": "cpu memory",
    "ResourceRequirements.requests": "cpu memory",
}


def _unsupported(value: Any, schema: dict[str, Any], path: str) -> str:
    """The path of the first field in `value` that podhost does not run, or ""."""
    name = sch.ref_name(schema).rpartition(".")[2]
    schema = sch.resolve(schema)
    props = schema.get("properties")
    if isinstance(value, dict) and props is not None:
        fields, ignored = _SUPPORTED.get(name, "").split(), _IGNORED.get(name, "").split()
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if item is None or key in ignored:
                continue
            if key not in fields:
                return where
            keys = _MAP_KEYS.get(f"{name}.{key}")
            extra = [k for k in item if k not in keys.split()] if keys is not None else []
            found = f"{where}.{extra[0]}" if extra else _unsupported(item, props[key], where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _unsupported(item, sch.items_schema(schema), f"{path}[{i}]")
            if found:
                return found
    return ""


def _validate(doc: Any, kind: str) -> None:
    """The one check of a manifest against Kubernetes' own schema (`kubeapi.schema`: unknown fields as
    kube-apiserver's strict decoding names them, types, required fields), then against what podhost runs."""
    if not isinstance(doc, dict):
        raise ManifestError(f"expected an object, got {type(doc).__name__}")
    definition = sch.CORE + kind
    unknown = sch.unknown_fields(doc, definition)
    if unknown:
        raise ManifestError(", ".join(f'unknown field "{f}"' for f in unknown))
    invalid = sch.invalid_fields(doc, definition)
    if invalid:
        raise ManifestError(invalid[0])
    forbidden = _ephemeral_forbidden(doc) if kind == "Pod" else ""
    if forbidden:
        raise ManifestError(forbidden)
    unsupported = _unsupported(doc, sch.definition(definition), "")
    if unsupported:
        raise ManifestError(f"{unsupported}: not supported on this node")


#: The EphemeralContainer fields the API forbids (validation's allowedEphemeralContainerFields: "fields such
#: as Lifecycle, probes, resources and ports" that pod services could come to rely on).
EPHEMERAL_FORBIDDEN = (
    "ports",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resizePolicy",
    "restartPolicy",
    "restartPolicyRules",
)


def _ephemeral_forbidden(doc: dict[str, Any]) -> str:
    """kube-apiserver's refusal of a field an ephemeral container may not have ("" when none): a field
    is set when it is not Go's zero value (`resources: {}`, which kubectl debug sends, is not set)."""
    spec = doc.get("spec")
    ephemeral = spec.get("ephemeralContainers") if isinstance(spec, dict) else None
    for i, ec in enumerate(ephemeral if isinstance(ephemeral, list) else []):
        path = f"spec.ephemeralContainers[{i}]"
        for key in EPHEMERAL_FORBIDDEN:
            value = ec.get(key) if isinstance(ec, dict) else None
            if value not in (None, {}, []) and not (isinstance(value, dict) and not any(value.values())):
                return f"{path}.{key}: Forbidden: cannot be set for an Ephemeral Container"
        for j, m in enumerate((ec.get("volumeMounts") if isinstance(ec, dict) else None) or []):
            for key in ("subPath", "subPathExpr"):
                if isinstance(m, dict) and m.get(key):
                    return (
                        f"{path}.volumeMounts[{j}].{key}: Forbidden: cannot be set for an Ephemeral Container"
                    )
    return ""


class _Reader:
    """One mapping of a manifest that `_validate` passed (so every value has its upstream type and every
    field is one podhost runs), with its path for the errors of the checks left to make here."""

    def __init__(self, data: Any, path: str) -> None:
        self.data: dict[str, Any] = data or {}
        self.path = path

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = None, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise ManifestError(f"{self._p(key)}: Required value")
            return default
        return value

    def child(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), self._p(key))

    def children(self, key: str) -> list[_Reader]:
        return [_Reader(item, f"{self._p(key)}[{i}]") for i, item in enumerate(self.data.get(key) or [])]


def _container(r: _Reader, names: set[str]) -> ContainerSpec:
    path, name = r.path, r.get("name", required=True)
    if not _DNS1123_LABEL.match(name):
        raise ManifestError(f"{path}.name: {name!r} must be a DNS-1123 label")
    if name in names:
        raise ManifestError(f"{path}.name: duplicate container name {name!r}")
    names.add(name)
    c = ContainerSpec(name=name, image=r.get("image", "", required=True))
    if not c.image.strip():
        raise ManifestError(f"{path}.image: Required value")
    c.command, c.args, c.working_dir = r.get("command", []), r.get("args", []), r.get("workingDir", "")
    c.stdin, c.stdin_once, c.tty = r.get("stdin", False), r.get("stdinOnce", False), r.get("tty", False)
    c.env = [_env_var(e) for e in r.children("env")]
    c.env_from = [_env_from(e) for e in r.children("envFrom")]
    for pr in r.children("ports"):
        cp = ContainerPort(
            container_port=pr.get("containerPort"),
            host_port=pr.get("hostPort", 0),
            protocol=pr.get("protocol", "TCP"),
            name=pr.get("name", ""),
            host_ip=pr.get("hostIP", ""),
        )
        if not 0 < cp.container_port < 65536:
            raise ManifestError(f"{pr.path}.containerPort: must be between 1 and 65535")
        if cp.protocol not in ("TCP", "UDP", "SCTP"):
            raise ManifestError(f"{pr.path}.protocol: unsupported value {cp.protocol!r}")
        c.ports.append(cp)
    res = r.child("resources")
    for kind in ("limits", "requests"):
        q, limit = res.get(kind, {}), kind == "limits"
        if q.get("cpu") is not None:
            milli = parse_quantity(q["cpu"], f"{path}.resources.{kind}.cpu")
            setattr(c.resources, "cpu_limit_milli" if limit else "cpu_request_milli", milli)
        if q.get("memory") is not None:
            value = parse_quantity(q["memory"], f"{path}.resources.{kind}.memory")
            if value <= 0:
                raise ManifestError(f"{path}.resources.{kind}.memory: must be positive")
            setattr(c.resources, "memory_limit" if limit else "memory_request", value)
    sc = r.child("securityContext")
    c.run_as_user, c.run_as_group = sc.get("runAsUser"), sc.get("runAsGroup")
    c.privileged = sc.get("privileged", False)
    c.read_only_root_filesystem = sc.get("readOnlyRootFilesystem", False)
    c.allow_privilege_escalation = sc.get("allowPrivilegeEscalation")
    caps = sc.child("capabilities")
    c.capabilities_add, c.capabilities_drop = caps.get("add", []), caps.get("drop", [])
    for vr in r.children("volumeMounts"):
        mount = VolumeMount(
            name=vr.get("name"),
            mount_path=vr.get("mountPath"),
            read_only=vr.get("readOnly", False),
            sub_path=vr.get("subPath", ""),
        )
        if mount.sub_path.startswith("/") or ".." in mount.sub_path.split("/"):
            raise ManifestError(f"{vr.path}.subPath: must be a relative path without '..'")
        if not mount.mount_path.startswith("/"):
            raise ManifestError(f"{vr.path}.mountPath: must be an absolute path")
        c.volume_mounts.append(mount)
    for pr in r.children("resizePolicy"):
        resource, policy = pr.get("resourceName", ""), pr.get("restartPolicy", "")
        if resource not in ("cpu", "memory"):
            raise ManifestError(
                f'{pr.path}.resourceName: Unsupported value: "{resource}": supported values: "cpu", "memory"'
            )
        if policy not in RESIZE_POLICIES:
            raise ManifestError(
                f'{pr.path}.restartPolicy: Unsupported value: "{policy}": supported values: '
                '"NotRequired", "RestartContainer"'
            )
        if resource in c.resize_policy:
            raise ManifestError(f'{pr.path}.resourceName: Duplicate value: "{resource}"')
        c.resize_policy[resource] = policy
    c.target_container_name = r.get("targetContainerName", "")
    for key, attr in (
        ("livenessProbe", "liveness_probe"),
        ("readinessProbe", "readiness_probe"),
        ("startupProbe", "startup_probe"),
    ):
        if r.get(key) is not None:
            setattr(c, attr, _probe(r.child(key), single_success=key != "readinessProbe"))
    hooks = r.child("lifecycle")
    if hooks.get("postStart") is not None:
        c.post_start = _hook(hooks.child("postStart"))
    if hooks.get("preStop") is not None:
        c.pre_stop = _hook(hooks.child("preStop"))
    c.restart_policy = r.get("restartPolicy", "")
    c.restart_policy_rules = [_restart_rule(rr) for rr in r.children("restartPolicyRules")]
    return c


#: ContainerResizePolicy.restartPolicy: the container is resized in place, or restarted to be.
NOT_REQUIRED, RESTART_CONTAINER = "NotRequired", "RestartContainer"
RESIZE_POLICIES = (NOT_REQUIRED, RESTART_CONTAINER)


_RESTART_POLICIES = ("Always", "OnFailure", "Never")
_RULE_ACTIONS = (RESTART, RESTART_ALL_CONTAINERS)


def _restart_rule(r: _Reader) -> RestartRule:
    """One ContainerRestartRule, checked as kube-apiserver checks it (action, exitCodes, operator)."""
    action = r.get("action", "")
    if action not in _RULE_ACTIONS:
        raise ManifestError(
            f'{r.path}.action: Unsupported value: "{action}": supported values: "Restart", "RestartAllContainers"'
        )
    codes = r.child("exitCodes")
    if r.get("exitCodes") is None:
        raise ManifestError(f"{codes.path}: Required value")
    operator, values = codes.get("operator", ""), codes.get("values", [])
    if operator not in ("In", "NotIn"):
        raise ManifestError(
            f'{codes.path}.operator: Unsupported value: "{operator}": supported values: "In", "NotIn"'
        )
    if len(values) > 255:
        raise ManifestError(f"{codes.path}.values: Too many: {len(values)}: must have at most 255 items")
    if len(set(values)) != len(values):
        raise ManifestError(f"{codes.path}.values: Duplicate value: {sorted(values)}")
    return RestartRule(action, operator, tuple(values))


def _check_restart_policy(c: ContainerSpec, path: str, init: bool) -> None:
    """A container's restartPolicy and rules as kube-apiserver allows them (KEP-753, KEP-5307, KEP-5532):
    rules need an explicit restartPolicy; a regular init container runs no probes; a sidecar's rules may
    only restart every container."""
    if c.restart_policy and c.restart_policy not in _RESTART_POLICIES:
        raise ManifestError(
            f'{path}.restartPolicy: Unsupported value: "{c.restart_policy}": supported values: '
            '"Always", "OnFailure", "Never"'
        )
    if c.restart_policy_rules and not c.restart_policy:
        raise ManifestError(f"{path}.restartPolicy: Required value: must be set when restartPolicyRules are")
    if len(c.restart_policy_rules) > 20:
        raise ManifestError(f"{path}.restartPolicyRules: Too many: must have at most 20 items")
    sidecar = init and c.restart_policy == "Always"
    if sidecar and any(rule.action == RESTART for rule in c.restart_policy_rules):
        raise ManifestError(
            f"{path}.restartPolicyRules: Forbidden: a sidecar (restartPolicy Always) is always restarted"
        )
    if init and not sidecar:
        for key, probe in (
            ("livenessProbe", c.liveness_probe),
            ("readinessProbe", c.readiness_probe),
            ("startupProbe", c.startup_probe),
        ):
            if probe is not None:
                raise ManifestError(
                    f"{path}.{key}: Forbidden: may not be set for init containers without restartPolicy=Always"
                )


_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
_HOOK_HANDLERS = ("exec", "httpGet", "sleep")


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
        value = r.get(key)
        if value is not None:
            if value < minimum:
                raise ManifestError(f"{r.path}.{key}: must be at least {minimum}")
            timing[attr] = value
    handlers = [h for h in _PROBE_HANDLERS if r.data.get(h) is not None]
    if len(handlers) != 1:
        raise ManifestError(f"{r.path}: exactly one of exec, httpGet, tcpSocket, grpc is required")
    probe = Probe(handler=handlers[0], **timing)  # type: ignore[arg-type]
    _action(r.child(probe.handler), probe)
    if single_success and probe.success_threshold != 1:
        raise ManifestError(f"{r.path}.successThreshold: must be 1 for liveness and startup probes")
    grace = r.get("terminationGracePeriodSeconds")
    if grace is not None:
        where = f"{r.path}.terminationGracePeriodSeconds"
        if not single_success:  # the kube-apiserver's words (validateContainers)
            raise ManifestError(f"{where}: Invalid value: {grace}: must not be set for readinessProbes")
        if grace <= 0:
            raise ManifestError(f"{where}: Invalid value: {grace}: must be greater than 0")
        probe.termination_grace_period_seconds = grace
    return probe


def _action(h: _Reader, action: Action) -> None:
    """The fields of one handler (`action.handler` names it) of a probe or a hook."""
    if action.handler == "exec":
        action.command = h.get("command", [])
        if not action.command:
            raise ManifestError(f"{h.path}.command: Required value")
    elif action.handler == "grpc":
        port = h.get("port")
        if not 0 < port < 65536:  # an int32 by the schema: no port names here
            raise ManifestError(f"{h.path}.port: must be between 1 and 65535")
        action.port, action.service = port, h.get("service", "")
    elif action.handler in ("httpGet", "tcpSocket"):
        action.port = _port(h.get("port"), f"{h.path}.port")
        action.host = h.get("host", "")
    if action.handler == "httpGet":
        action.path = h.get("path", "/") or "/"
        action.scheme = h.get("scheme", "HTTP")
        if action.scheme not in ("HTTP", "HTTPS"):
            raise ManifestError(
                f'{h.path}.scheme: Unsupported value: "{action.scheme}": supported values: "HTTP", "HTTPS"'
            )
        action.http_headers = [(hr.get("name"), hr.get("value", "")) for hr in h.children("httpHeaders")]


def _hook(r: _Reader) -> LifecycleHandler:
    """lifecycle.postStart or lifecycle.preStop: one handler (the kube-apiserver's validateHandler)."""
    handlers = [h for h in _HOOK_HANDLERS if r.data.get(h) is not None]
    if not handlers:
        raise ManifestError(f"{r.path}: Required value: must specify a handler type")
    if len(handlers) > 1:
        raise ManifestError(f"{r.path}.{handlers[1]}: Forbidden: may not specify more than 1 handler type")
    hook = LifecycleHandler(handler=handlers[0])
    if hook.handler == "sleep":
        hook.seconds = r.child("sleep").get("seconds", required=True)
    else:
        _action(r.child(hook.handler), hook)
    return hook


def _check_sleep_hooks(pod: Pod) -> None:
    """A sleep hook lasts no longer than the grace period (validateSleepAction, with 1.34's zero allowed)."""
    grace = pod.termination_grace_period_seconds
    for kind, group in (("initContainers", pod.init_containers), ("containers", pod.containers)):
        for i, c in enumerate(group):
            for key, hook in (("postStart", c.post_start), ("preStop", c.pre_stop)):
                if hook is not None and hook.handler == "sleep" and not 0 <= hook.seconds <= grace:
                    raise ManifestError(
                        f"spec.{kind}[{i}].lifecycle.{key}.sleep: Invalid value: {hook.seconds}: must be "
                        f"non-negative and less than terminationGracePeriodSeconds ({grace})"
                    )


_PULL_POLICIES = ("", "Always", "IfNotPresent", "Never")
_HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket")


_VOLUME_KINDS = ("emptyDir", "hostPath", "image", *CONFIG_VOLUMES)


def _volume(r: _Reader) -> Volume:
    path, name = r.path, r.get("name")
    if not _DNS1123_LABEL.match(name):
        raise ManifestError(f"{path}.name: {name!r} must be a DNS-1123 label")
    kinds = [k for k in _VOLUME_KINDS if r.data.get(k) is not None]
    if len(kinds) != 1:
        raise ManifestError(f"{path}: exactly one of {', '.join(_VOLUME_KINDS)} is required")
    volume = Volume(name=name, kind=kinds[0])
    v = r.child(volume.kind)
    if volume.kind == "emptyDir":
        volume.medium = v.get("medium", "")
        if volume.medium not in ("", "Memory"):
            raise ManifestError(
                f'{path}.emptyDir.medium: Unsupported value: "{volume.medium}": supported values: "", "Memory"'
            )
        if v.get("sizeLimit") is not None:
            volume.size_limit = parse_quantity(v.get("sizeLimit"), f"{path}.emptyDir.sizeLimit")
    if volume.kind in CONFIG_VOLUMES:
        _config_volume(volume, v)
    if volume.kind == "hostPath":
        volume.path = v.get("path")
        if not volume.path.startswith("/"):
            raise ManifestError(f"{path}.hostPath.path: must be an absolute path")
        volume.host_path_type = v.get("type", "")
        if volume.host_path_type not in _HOST_PATH_TYPES:
            raise ManifestError(f"{path}.hostPath.type: unsupported value {volume.host_path_type!r}")
    if volume.kind == "image":
        volume.reference = v.get("reference", required=True)
        volume.pull_policy = v.get("pullPolicy", "")
        if volume.pull_policy not in _PULL_POLICIES:
            raise ManifestError(f"{path}.image.pullPolicy: unsupported value {volume.pull_policy!r}")
    return volume


# --- configuration: env from objects and fields, config volumes ------------------------------------------

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: fieldRef paths an env var may read (the API's validEnvDownwardAPIFieldPathExpressions), subscripted
#: labels and annotations aside.
ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
#: fieldRef paths a downwardAPI volume file may hold (validVolumeDownwardAPIFieldPathExpressions).
VOLUME_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
)
_SUBSCRIPTED = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
RESOURCES = ("limits.cpu", "limits.memory", "requests.cpu", "requests.memory")


def config_key_error(key: str) -> str:
    """Why `key` is not a valid ConfigMap / Secret key (IsConfigMapKey), or ""."""
    if not key or len(key) > 253 or not _CONFIG_KEY.match(key):
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    if key in (".", "..") or key.startswith(".."):
        return "must not be '.' or '..' or start with '..'"
    return ""


def _supported(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        choices = ", ".join(f'"{a}"' for a in allowed)
        raise ManifestError(f'{where}: Unsupported value: "{value}": supported values: {choices}')


def _field_ref(r: _Reader, allowed: tuple[str, ...]) -> str:
    if r.get("apiVersion", "v1") != "v1":
        raise ManifestError(f'{r.path}.apiVersion: Unsupported value: "{r.get("apiVersion")}"')
    field_path = r.get("fieldPath", "")
    if not _SUBSCRIPTED.match(field_path):
        _supported(field_path, allowed, f"{r.path}.fieldPath")
    return str(field_path)


def _resource_ref(r: _Reader, container_required: bool) -> ResourceFieldRef:
    ref = ResourceFieldRef(
        resource=r.get("resource", ""),
        container_name=r.get("containerName", ""),
        divisor=str(r.get("divisor") or ""),
    )
    _supported(ref.resource, RESOURCES, f"{r.path}.resource")
    if container_required and not ref.container_name:
        raise ManifestError(f"{r.path}.containerName: Required value")
    if ref.divisor:
        where = f"{r.path}.divisor" + (".cpu" if ref.resource.endswith("cpu") else "")
        if parse_quantity(ref.divisor, where) <= 0:
            raise ManifestError(f"{r.path}.divisor: Invalid value: {ref.divisor!r}: must be positive")
    return ref


def _env_var(r: _Reader) -> EnvVar:
    name = r.get("name", "")
    if not name or "=" in name or not (name.isascii() and name.isprintable()):
        raise ManifestError(
            f"{r.path}.name: Invalid value: {name!r}: a valid environment variable name "
            "must consist only of printable ASCII characters other than '='"
        )
    var = EnvVar(name=name, value=r.get("value", ""))
    if r.get("valueFrom") is None:
        return var
    if var.value:
        raise ManifestError(
            f'{r.path}.valueFrom: Invalid value: "": may not be specified when `value` is not empty'
        )
    src = r.child("valueFrom")
    kinds = [
        k
        for k in ("configMapKeyRef", "secretKeyRef", "fieldRef", "resourceFieldRef")
        if src.get(k) is not None
    ]
    if len(kinds) != 1:
        raise ManifestError(
            f'{src.path}: Invalid value: "": must specify exactly one of: `fieldRef`, '
            "`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
        )
    ref = src.child(kinds[0])
    var.value_from = EnvVarSource(kind=kinds[0])
    if kinds[0] == "fieldRef":
        var.value_from.field_path = _field_ref(ref, ENV_FIELD_PATHS)
    elif kinds[0] == "resourceFieldRef":
        var.value_from.resource = _resource_ref(ref, container_required=False)
    else:
        var.value_from.name = ref.get("name", required=True)
        var.value_from.key = ref.get("key", required=True)
        var.value_from.optional = bool(ref.get("optional", False))
        if problem := config_key_error(var.value_from.key):
            raise ManifestError(f"{ref.path}.key: Invalid value: {var.value_from.key!r}: {problem}")
    return var


def _env_from(r: _Reader) -> EnvFromSource:
    kinds = [k for k in ("configMapRef", "secretRef") if r.get(k) is not None]
    if len(kinds) != 1:
        raise ManifestError(
            f'{r.path}: Invalid value: "": must specify one of: `configMapRef` or `secretRef`'
        )
    ref = r.child(kinds[0])
    return EnvFromSource(
        kind=kinds[0],
        name=ref.get("name", required=True),
        prefix=r.get("prefix", ""),
        optional=bool(ref.get("optional", False)),
    )


def _mode(r: _Reader, key: str) -> int | None:
    mode = r.get(key)
    if mode is not None and not 0 <= mode <= 0o777:
        raise ManifestError(
            f"{r.path}.{key}: Invalid value: {mode}: must be a number between 0 and 0777 (octal), both inclusive"
        )
    return mode  # type: ignore[no-any-return]


def _file_path(r: _Reader, key: str = "path") -> str:
    path = r.get(key, required=True)
    if path.startswith("/") or ".." in path.split("/") or path.startswith(".."):
        raise ManifestError(f"{r.path}.{key}: Invalid value: {path!r}: must be a relative path without '..'")
    return str(path)


def _projection(kind: str, r: _Reader, name_key: str = "name") -> VolumeProjection:
    source = VolumeProjection(kind=kind)
    if kind == "downwardAPI":
        for item in r.children("items"):
            file = DownwardAPIFile(path=_file_path(item), mode=_mode(item, "mode"))
            refs = [k for k in ("fieldRef", "resourceFieldRef") if item.get(k) is not None]
            if len(refs) != 1:
                raise ManifestError(
                    f'{item.path}: Invalid value: "": fieldRef and resourceFieldRef can not be specified simultaneously'
                    if refs
                    else f"{item.path}: Required value: one of fieldRef and resourceFieldRef is required"
                )
            if refs[0] == "fieldRef":
                file.field_path = _field_ref(item.child("fieldRef"), VOLUME_FIELD_PATHS)
            else:
                file.resource = _resource_ref(item.child("resourceFieldRef"), container_required=True)
            source.files.append(file)
        return source
    source.name = r.get(name_key, required=True)
    source.optional = bool(r.get("optional", False))
    for item in r.children("items"):
        key = item.get("key", required=True)
        if problem := config_key_error(key):
            raise ManifestError(f"{item.path}.key: Invalid value: {key!r}: {problem}")
        source.items.append(KeyToPath(key=key, path=_file_path(item), mode=_mode(item, "mode")))
    return source


def _config_volume(volume: Volume, v: _Reader) -> None:
    """A configMap, secret, downwardAPI or projected volume's sources and defaultMode."""
    mode = _mode(v, "defaultMode")
    volume.default_mode = DEFAULT_MODE if mode is None else mode
    if volume.kind == "projected":
        for s in v.children("sources"):
            kinds = [k for k in ("configMap", "secret", "downwardAPI") if s.get(k) is not None]
            if len(kinds) != 1:
                raise ManifestError(
                    f'{s.path}: Invalid value: "": may not specify more than 1 volume type per source'
                    if kinds
                    else f"{s.path}: Required value: must specify exactly 1 volume type"
                )
            volume.sources.append(_projection(kinds[0], s.child(kinds[0])))
    else:
        name_key = "secretName" if volume.kind == "secret" else "name"
        volume.sources.append(_projection(volume.kind, v, name_key))


def _kind(doc: Any, kind: str, refusal: str) -> _Reader:
    """`doc` checked (`_validate`) as a v1 `kind`, for reading."""
    if isinstance(doc, dict):
        api, got = doc.get("apiVersion"), doc.get("kind")
        for key, value in (("apiVersion", api), ("kind", got)):
            if not value:
                raise ManifestError(f"{key}: Required value")
        if api != "v1" or got != kind:
            raise ManifestError(f"kind: {refusal}, not {api}/{got}")
    _validate(doc, kind)
    return _Reader(doc, "")


def parse_pod(doc: dict[str, Any]) -> Pod:
    """One Pod document (already loaded from YAML) to a validated `Pod`."""
    r = _kind(doc, "Pod", "podhost runs v1 Pods")
    name, namespace, uid, labels, annotations = _metadata(r)
    pod = Pod(name=name, namespace=namespace, uid=uid, labels=labels, annotations=annotations)
    spec = r.child("spec")
    names: set[str] = set()
    if not spec.get("containers"):
        raise ManifestError("spec.containers: must have at least one container")
    pod.init_containers = [_container(c, names) for c in spec.children("initContainers")]
    pod.containers = [_container(c, names) for c in spec.children("containers")]
    for i, c in enumerate(pod.init_containers):
        if c.resize_policy:
            raise ManifestError(
                f"spec.initContainers[{i}].resizePolicy: Invalid value: must not be set for init containers"
            )
    targets = set(names)
    pod.ephemeral_containers = [_container(c, names) for c in spec.children("ephemeralContainers")]
    for i, ec in enumerate(pod.ephemeral_containers):
        if ec.target_container_name and ec.target_container_name not in targets:
            raise ManifestError(
                f'spec.ephemeralContainers[{i}].targetContainerName: Not found: "{ec.target_container_name}"'
            )
    for kind, group in (("initContainers", pod.init_containers), ("containers", pod.containers)):
        for i, c in enumerate(group):
            _check_restart_policy(c, f"spec.{kind}[{i}]", kind == "initContainers")
    pod.readiness_gates = [g.get("conditionType", "") for g in spec.children("readinessGates")]
    pod.restart_policy = spec.get("restartPolicy", "Always")
    if pod.restart_policy not in ("Always", "OnFailure", "Never"):
        raise ManifestError(f"spec.restartPolicy: unsupported value {pod.restart_policy!r}")
    pod.share_process_namespace = spec.get("shareProcessNamespace", False)
    pod.host_network = spec.get("hostNetwork", False)
    pod.host_users = spec.get("hostUsers", True)
    if not pod.host_users and pod.host_network:
        raise ManifestError("spec.hostUsers: Forbidden: when `hostUsers` is false, hostNetwork must be false")
    if not pod.host_users and USERNS_ANNOTATION in pod.annotations:
        try:
            pod.userns_host_id = int(pod.annotations[USERNS_ANNOTATION])
        except ValueError as e:
            raise ManifestError(f"metadata.annotations[{USERNS_ANNOTATION!r}]: not a host id") from e
    pod.hostname = spec.get("hostname", "")
    pod.service_account_name = spec.get("serviceAccountName", "") or "default"
    # spec.subdomain is not in `_SUPPORTED`, so it is refused by name: the kubelet honours it with a hosts
    # file of its own (hostname.subdomain.<namespace>.svc.<cluster domain>) mounted over every container's
    # /etc/hosts, and podhost's pod manager has none; the runtime writes /etc/hosts from the CRI hostname.
    pod.dns_policy = spec.get("dnsPolicy", "ClusterFirst")
    if pod.dns_policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        raise ManifestError(f"spec.dnsPolicy: unsupported value {pod.dns_policy!r}")
    dns = spec.child("dnsConfig")
    options = [{"name": o.get("name", ""), "value": o.get("value", "")} for o in dns.children("options")]
    pod.dns_config = {
        "nameservers": dns.get("nameservers", []),
        "searches": dns.get("searches", []),
        "options": options,
    }
    if not any(pod.dns_config.values()):
        pod.dns_config = {}
    if pod.dns_policy == "None" and not pod.dns_config.get("nameservers"):
        raise ManifestError("spec.dnsConfig.nameservers: required when dnsPolicy is None")
    pod.volumes = [_volume(v) for v in spec.children("volumes")]
    volume_kinds: dict[str, str] = {}
    for i, v in enumerate(pod.volumes):
        if v.name in volume_kinds:
            raise ManifestError(f"spec.volumes[{i}].name: duplicate volume name {v.name!r}")
        volume_kinds[v.name] = v.kind
    for kind, group in (
        ("initContainers", pod.init_containers),
        ("containers", pod.containers),
        ("ephemeralContainers", pod.ephemeral_containers),
    ):
        for ci, c in enumerate(group):
            for mi, m in enumerate(c.volume_mounts):
                if m.name not in volume_kinds:
                    raise ManifestError(
                        f"spec.{kind}[{ci}].volumeMounts[{mi}].name: no volume named {m.name!r}"
                    )
                if m.sub_path and volume_kinds[m.name] not in ("image", *CONFIG_VOLUMES):
                    raise ManifestError(
                        f"spec.{kind}[{ci}].volumeMounts[{mi}].subPath: not supported on this node for "
                        f"{volume_kinds[m.name]} volumes (only image, configMap, secret, downwardAPI, "
                        "projected)"
                    )
    pod.termination_grace_period_seconds = spec.get("terminationGracePeriodSeconds", 30)
    _check_sleep_hooks(pod)
    psc = spec.child("securityContext")
    pod.run_as_user, pod.run_as_group = psc.get("runAsUser"), psc.get("runAsGroup")
    pod.fs_group = psc.get("fsGroup")
    pod.supplemental_groups = psc.get("supplementalGroups", [])
    if not all(g >= 0 for g in pod.supplemental_groups):
        raise ManifestError("spec.securityContext.supplementalGroups: must be a list of group ids")
    pod.supplemental_groups_policy = psc.get("supplementalGroupsPolicy", "")
    if pod.supplemental_groups_policy not in ("", "Merge", "Strict"):
        raise ManifestError(
            "spec.securityContext.supplementalGroupsPolicy: Unsupported value: "
            f'"{pod.supplemental_groups_policy}": supported values: "Merge", "Strict"'
        )
    pod.sysctls = {s.get("name"): s.get("value") for s in psc.children("sysctls")}
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
    name = meta.get("name", required=True)
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise ManifestError(f"metadata.name: {name!r} must be a DNS-1123 subdomain")
    namespace = meta.get("namespace", "default")
    if not _DNS1123_LABEL.match(namespace):
        raise ManifestError(f"metadata.namespace: {namespace!r} must be a DNS-1123 label")
    return name, namespace, meta.get("uid", ""), meta.get("labels", {}), meta.get("annotations", {})


def parse_service(doc: dict[str, Any]) -> Service:
    """One v1 Service document to a validated `Service` (selector and ports; ClusterIP or headless)."""
    r = _kind(doc, "Service", "expected v1/Service")
    name, namespace, uid, labels, annotations = _metadata(r)
    svc = Service(name=name, namespace=namespace, uid=uid, labels=labels, annotations=annotations)
    spec = r.child("spec")
    svc.selector = spec.get("selector", {})
    kind_ = spec.get("type", "ClusterIP")
    if kind_ != "ClusterIP":
        raise ManifestError(f"spec.type: {kind_}: not supported on this node (it keeps endpoints only)")
    if spec.get("clusterIP", "") not in ("", "None"):
        raise ManifestError(
            "spec.clusterIP: not supported on this node (it allocates no cluster IPs: leave it out or use None)"
        )
    port_names: set[str] = set()
    for pr in spec.children("ports"):
        number = pr.get("port")
        if not 0 < number < 65536:
            raise ManifestError(f"{pr.path}.port: must be between 1 and 65535")
        target = pr.get("targetPort")
        sp = ServicePort(
            port=number,
            target_port=number if target is None else _port(target, f"{pr.path}.targetPort"),
            protocol=pr.get("protocol", "TCP"),
            name=pr.get("name", ""),
        )
        if sp.protocol not in ("TCP", "UDP", "SCTP"):
            raise ManifestError(f"{pr.path}.protocol: unsupported value {sp.protocol!r}")
        if sp.name in port_names:
            raise ManifestError(f"{pr.path}.name: duplicate port name {sp.name!r}")
        port_names.add(sp.name)
        svc.ports.append(sp)
    if len(svc.ports) > 1 and "" in port_names:
        raise ManifestError("spec.ports: every port needs a name when there is more than one")
    return svc


def parse_object(doc: dict[str, Any], where: str = "") -> Pod | Service | ConfigObject:
    """A Pod, a Service, a ConfigMap or a Secret; errors are prefixed with `where` ("file.yaml (document
    2)") when given."""
    try:
        if doc.get("kind") == "Service":
            return parse_service(doc)
        if doc.get("kind") in ("ConfigMap", "Secret"):
            from podhost.kubelet.configobjects import parse_config_object  # it builds on this module

            return parse_config_object(doc)
        return parse_pod(doc)
    except ManifestError as e:
        if not where:
            raise
        raise ManifestError(f"{where}: {e}") from None


def load_objects(text: str, source: str = "") -> list[Pod | Service | ConfigObject]:
    """Every Pod and Service of a YAML stream, all validated before any is returned (so a broken
    document means nothing is applied); the same object twice is an error."""
    objects: list[Pod | Service | ConfigObject] = []
    seen: set[tuple[str, str, str]] = set()
    docs = load_documents(text)
    for i, doc in enumerate(docs):
        where = f"{source} (document {i + 1})" if len(docs) > 1 else source
        obj = parse_object(doc, where)
        key = (getattr(obj, "kind", type(obj).__name__), obj.namespace, obj.name)
        if key in seen:
            raise ManifestError(f"{where or 'manifest'}: {key[0].lower()} {obj.name!r} appears twice")
        seen.add(key)
        objects.append(obj)
    return objects
