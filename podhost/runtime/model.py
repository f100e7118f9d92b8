"""The runtime's vocabulary: what a caller asks for (specs) and what the runtime records (records).

Specs hold the CRI v1 request fields podhost implements, by their CRI names, normalized for the runtime:
`int | None` for the optional wrappers, Python enums, one seccomp spelling, `linux` and its
`security_context` flattened into the sandbox config. The CRI layer copies same-named fields generically
at its edge (`podhost.cri.convert`), so nothing below it knows about protobuf, and
tests/unit/test_cri_round_trip.py proves every CRI field either survives pb -> spec -> record -> pb or
is listed there as unsupported with its reason. Records add what CRI does not carry (stage, pids, cgroup,
pinned namespaces, the CNI result); `podhost.runtime.state` writes them to disk as plain JSON
(`to_dict`/`from_dict`), and they change only through the services that own them.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

# --- enums (values are the CRI enum names) -------------------------------------------------------------


class NamespaceMode(enum.IntEnum):
    """CRI `NamespaceMode`: 0 is POD, so a config that leaves `pid` out shares the pod's PID namespace."""

    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class PodSandboxState(enum.StrEnum):
    SANDBOX_READY = "SANDBOX_READY"
    SANDBOX_NOTREADY = "SANDBOX_NOTREADY"


class SandboxStage(enum.StrEnum):
    """How far a sandbox's lifecycle got (podhost.runtime.lifecycle has the moves allowed)."""

    CREATING = "creating"  # the record exists, RunPodSandbox is making (or recovery undoing) the rest
    READY = "ready"  # pause alive, network set up
    LOST = "lost"  # pause is gone (it died, or StopPodSandbox killed it): NotReady, network being released
    STOPPED = "stopped"  # StopPodSandbox finished; RemovePodSandbox deletes the record last


class ContainerStage(enum.StrEnum):
    """How far a container's lifecycle got (podhost.runtime.lifecycle has the moves allowed)."""

    CREATING = "creating"  # the record exists before conmon does: recovery kills and undoes the rest
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"  # RemoveContainer deletes the record last


class ContainerState(enum.StrEnum):
    CONTAINER_CREATED = "CONTAINER_CREATED"
    CONTAINER_RUNNING = "CONTAINER_RUNNING"
    CONTAINER_EXITED = "CONTAINER_EXITED"
    CONTAINER_UNKNOWN = "CONTAINER_UNKNOWN"


class MountPropagation(enum.IntEnum):
    PROPAGATION_PRIVATE = 0
    PROPAGATION_HOST_TO_CONTAINER = 1
    PROPAGATION_BIDIRECTIONAL = 2


class SupplementalGroupsPolicy(enum.IntEnum):
    """CRI `SupplementalGroupsPolicy` (KEP-3619): Merge adds the groups the image's /etc/group gives the
    user; Strict uses only the ids the spec names."""

    Merge = 0
    Strict = 1


# --- sandbox spec --------------------------------------------------------------------------------------


@dataclass(slots=True)
class PodSandboxMetadata:
    name: str = ""
    uid: str = ""
    namespace: str = ""
    attempt: int = 0


@dataclass(slots=True)
class PortMapping:
    protocol: str = "TCP"  # TCP, UDP or SCTP
    container_port: int = 0
    host_port: int = 0
    host_ip: str = ""


@dataclass(slots=True)
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NamespaceOption:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    userns: UserNamespace = field(default_factory=lambda: UserNamespace())

    @property
    def pod_userns(self) -> bool:
        """Whether the pod has its own user namespace (CRI userns_options mode POD)."""
        return self.userns.mode == NamespaceMode.POD


@dataclass(slots=True)
class IDMapping:
    """CRI `IDMapping` (and OCI `linux.uidMappings[]`): `length` ids from `container_id` on map to
    `host_id` on."""

    host_id: int = 0
    container_id: int = 0
    length: int = 0


@dataclass(slots=True)
class UserNamespace:
    """CRI `userns_options`. NODE (the host's user namespace) when the field is absent."""

    mode: NamespaceMode = NamespaceMode.NODE
    uids: list[IDMapping] = field(default_factory=list)
    gids: list[IDMapping] = field(default_factory=list)

    def host_id(self, container_id: int, gids: bool = False) -> int | None:
        """The host id that `container_id` maps to, None when unmapped."""
        for m in self.gids if gids else self.uids:
            if m.container_id <= container_id < m.container_id + m.length:
                return m.host_id + container_id - m.container_id
        return None


@dataclass(slots=True)
class PodSandboxConfig:
    metadata: PodSandboxMetadata = field(default_factory=PodSandboxMetadata)
    hostname: str = ""
    log_directory: str = ""
    dns_config: DNSConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # linux.*
    cgroup_parent: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    privileged: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    supplemental_groups_policy: SupplementalGroupsPolicy = SupplementalGroupsPolicy.Merge
    readonly_rootfs: bool = False
    seccomp_profile_type: str = ""  # "", RuntimeDefault, Unconfined, Localhost
    seccomp_localhost_ref: str = ""
    #: linux.resources (pod-level overhead/limits), as for a container.
    resources: LinuxContainerResources | None = None

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == NamespaceMode.NODE

    @property
    def shares_pid(self) -> bool:
        """True when the pod's containers share one PID namespace founded by pause (PID 1)."""
        return self.namespace_options.pid == NamespaceMode.POD


# --- container spec ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ContainerMetadata:
    name: str = ""
    attempt: int = 0


@dataclass(slots=True)
class Mount:
    container_path: str = ""
    host_path: str = ""
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: MountPropagation = MountPropagation.PROPAGATION_PRIVATE
    #: CRI `Mount.image.image`: an image volume (KEP-4639), the image's root mounted read-only. The
    #: caller leaves `host_path` empty; CreateContainer sets it to the image volume's mount in the bundle
    #: (as containerd does) and `image_ref` to the image's id (CRI `ImageSpec.image_ref`, KEP-5365).
    image: str = ""
    image_ref: str = ""
    image_sub_path: str = ""  # CRI `Mount.image_sub_path`: only this directory of the image
    #: CRI `Mount.recursive_read_only`: every submount read-only too (needs readonly, PROPAGATION_PRIVATE).
    recursive_read_only: bool = False


@dataclass(slots=True)
class Device:
    container_path: str = ""
    host_path: str = ""
    permissions: str = "rwm"


@dataclass(slots=True)
class LinuxContainerResources:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory_swap_limit_in_bytes: int = 0
    unified: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Capability:
    add_capabilities: list[str] = field(default_factory=list)
    drop_capabilities: list[str] = field(default_factory=list)
    add_ambient_capabilities: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ContainerSecurityContext:
    capabilities: Capability | None = None
    privileged: bool = False
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: list[int] = field(default_factory=list)
    supplemental_groups_policy: SupplementalGroupsPolicy = SupplementalGroupsPolicy.Merge
    no_new_privs: bool = False
    masked_paths: list[str] | None = None  # None: the runtime's defaults
    readonly_paths: list[str] | None = None
    seccomp_profile_type: str = ""  # "", RuntimeDefault, Unconfined, Localhost
    seccomp_localhost_ref: str = ""


@dataclass(slots=True)
class ContainerConfig:
    metadata: ContainerMetadata = field(default_factory=ContainerMetadata)
    image: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""
    envs: list[tuple[str, str]] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""  # relative to the sandbox's log_directory
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: LinuxContainerResources | None = None
    security_context: ContainerSecurityContext = field(default_factory=ContainerSecurityContext)
    stop_signal: str = (
        ""  # CRI's (KEP-4960), e.g. "SIGQUIT" or "SIGRTMIN+1"; empty: the image's, else SIGTERM
    )


# --- records -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class LinuxContainerUser:
    """The ids a container's process runs with (CRI ContainerStatus.user.linux): the OCI process.user
    podhost built, as containerd reports it."""

    uid: int = 0
    gid: int = 0
    supplemental_groups: list[int] = field(default_factory=list)


@dataclass(slots=True)
class PodSandbox:
    """A sandbox as the runtime knows it. `stage` drives it; `state` (what CRI shows) is derived from the
    stage by podhost.runtime.lifecycle, the only code that changes either."""

    id: str
    config: PodSandboxConfig
    runtime_handler: str = ""
    state: PodSandboxState = PodSandboxState.SANDBOX_NOTREADY
    created_at: int = 0  # ns since the epoch
    stage: SandboxStage = SandboxStage.CREATING
    pid: int = 0  # pause, in the host PID namespace
    pid_start_time: int = 0  # /proc/<pid>/stat field 22, guards `pid` against reuse
    cgroup: str = ""  # cgroup path relative to each hierarchy's root, e.g. /podhost/pod-<id>
    ns_paths: dict[str, str] = field(default_factory=dict)  # kind -> pin, or pause's /proc entry (namespaces)
    #: pause's fd holding the pod's /dev/shm tmpfs, and that tmpfs's st_dev (namespaces.attach_held);
    #: 0 for none (hostIPC) or a sandbox of an older podhost, whose shm is mounted in its run dir.
    shm_fd: int = 0
    shm_dev: int = 0
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    #: why the sandbox is not ready, in words (e.g. "pause (pid 4121) killed by signal 9").
    reason: str = ""
    message: str = ""

    @property
    def netns_path(self) -> str:
        return self.ns_paths.get("net", "")


@dataclass(slots=True)
class Container:
    id: str
    sandbox_id: str
    config: ContainerConfig
    image_id: str = ""  # the image's config digest
    image_ref: str = ""  # the name the caller used, resolved (e.g. docker.io/library/busybox:1.28)
    runtime_handler: str = ""
    state: ContainerState = ContainerState.CONTAINER_CREATED  # derived from `stage` (lifecycle.py)
    stage: ContainerStage = ContainerStage.CREATING
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""  # Completed, Error, OOMKilled, ContainerCannotRun
    message: str = ""
    pid: int = 0
    pid_start_time: int = 0
    conmon_pid: int = 0
    log_path: str = ""  # absolute; empty when the caller asked for no log
    cgroup: str = ""  # cgroup path relative to each hierarchy's root: <pod cgroup>/<container id>
    stop_signal: str = ""  # the image's StopSignal (e.g. "SIGQUIT"); empty means SIGTERM
    user: LinuxContainerUser | None = None  # set at create, from the spec's process.user


# --- dict round trip for records -----------------------------------------------------------------------

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a record or spec (enums become their values, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild `cls` from `to_dict` output. Unknown keys are ignored, so old records still load."""
    return typing.cast(T, _build(cls, data))


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], data) if len(inner) == 1 else data
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return [_build(item, v) for v in data]
    if origin is tuple:
        return tuple(data)
    if origin is dict:
        _, value = typing.get_args(tp) or (Any, Any)
        return {k: _build(value, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {
            f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    return data


# --- images --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImageConfig:
    """The parts of an OCI image config a container needs (OCI image-spec `config` object)."""

    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Image:
    id: str  # "sha256:<config digest>", as containerd and CRI-O report it
    repo_tags: list[str] = field(default_factory=list)  # normalised, e.g. docker.io/library/busybox:1.28
    repo_digests: list[str] = field(default_factory=list)  # e.g. docker.io/library/busybox@sha256:...
    size: int = 0  # bytes of the unpacked layers
    config: ImageConfig = field(default_factory=ImageConfig)
    diff_ids: list[str] = field(default_factory=list)  # bottom layer first, as in the config's rootfs
    pinned: bool = False  # the pause image: never garbage-collected or removed by prune
    created_at: int = 0


# --- events (CRI GetContainerEvents) -------------------------------------------------------------------


class ContainerEventType(enum.IntEnum):
    CONTAINER_CREATED_EVENT = 0
    CONTAINER_STARTED_EVENT = 1
    CONTAINER_STOPPED_EVENT = 2
    CONTAINER_DELETED_EVENT = 3


@dataclass(slots=True)
class ContainerEvent:
    """A lifecycle change. For sandbox events `container_id` is the sandbox's id (as in containerd)."""

    container_id: str
    event_type: ContainerEventType
    created_at: int
    sandbox_id: str


# --- exec and stats results -----------------------------------------------------------------------


@dataclass(slots=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass(slots=True)
class ContainerStats:
    container_id: str
    timestamp: int
    cpu_usage_core_nano_seconds: int = 0
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    writable_layer_used_bytes: int = 0


@dataclass(slots=True)
class NetworkInterfaceStats:
    name: str
    rx_bytes: int = 0
    rx_errors: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0


@dataclass(slots=True)
class PodSandboxStats:
    """CRI PodSandboxStats, from the pod cgroup and the pod's network namespace."""

    sandbox: PodSandbox
    timestamp: int
    cpu_usage_core_nano_seconds: int = 0
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    process_count: int = 0
    interfaces: list[NetworkInterfaceStats] = field(default_factory=list)
    containers: list[ContainerStats] = field(default_factory=list)
