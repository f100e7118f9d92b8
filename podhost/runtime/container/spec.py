"""The OCI runtime spec (config.json, ociVersion 1.0.2) of a CRI container: pure functions, no I/O.

Owns the translation CRI ContainerConfig + image config + sandbox -> OCI spec, and its validation. Follows
containerd's CRI plugin (`internal/cri/opts/spec*.go`, `container_create_linux.go`) unless said otherwise:
default capabilities, masked and read-only paths, mounts, the merge of command/args with the image's
entrypoint/cmd, env order. Never touches the host: the caller passes what it knows of the host
(`HostLimits`) and the contents of the image's /etc/passwd and /etc/group. (The one exception is a
Localhost seccomp profile, read from the file the CRI names.)

Namespaces: the container *joins* the pod's net/IPC/UTS namespaces by the pinned paths in
`sandbox.ns_paths` (and PID when the pod shares it), and always gets its own mount namespace. A name
missing from ns_paths means the pod uses the host's (hostNetwork, hostIPC): no entry at all then. A pod
with its own user namespace has it in ns_paths too: joined first, with its mappings (id_mappings).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhost.errors import InvalidArgument
from podhost.runtime.cgroups import child
from podhost.runtime.container import seccomp
from podhost.runtime.container.user import resolve_user
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    IDMapping,
    Image,
    ImageConfig,
    LinuxContainerResources,
    MountPropagation,
    NamespaceMode,
    PodSandbox,
)

log = logging.getLogger(__name__)

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Below this runc's own init process is OOM-killed before the container starts ("memory limit too
#: low?"); Docker rejects limits under 6 MiB for the same reason.
MIN_MEMORY_LIMIT = 6 * 1024 * 1024
#: RLIMIT_NOFILE asked for (what containerd-managed pods see under systemd), clamped to the host's hard limit.
WANTED_NOFILE = 1048576

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]  # fmt: skip

#: capability(7) numbers 0..40, the order of the kernel's bit set.
ALL_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip

DEFAULT_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]  # fmt: skip
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

_PROPAGATION = {
    MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass
class HostLimits:
    """What the host lets podhost ask for, read once by the service (`read_host_limits`)."""

    nofile_hard: int = WANTED_NOFILE
    #: our own /proc/self/oom_score_adj: without CAP_SYS_RESOURCE nothing below it can be set.
    min_oom_score_adj: int = -1000
    #: the node's hostname, the HOSTNAME of hostNetwork pods.
    node_hostname: str = "localhost"
    #: the capabilities podhost itself holds: what "privileged" and an added "ALL" grant (containerd's
    #: WithAllCurrentCapabilities). A node whose bounding set lacks one (CAP_SYS_RESOURCE on some
    #: sandboxed hosts) cannot hand it on; asking runc for it fails with EPERM.
    capabilities: list[str] = field(default_factory=lambda: list(ALL_CAPABILITIES))


def read_host_limits() -> HostLimits:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/self/oom_score_adj") as f:
            own = int(f.read().strip())
    except (OSError, ValueError):
        own = 0
    caps = _effective_caps()
    minimum = -1000 if caps & (1 << ALL_CAPABILITIES.index("CAP_SYS_RESOURCE")) else own
    return HostLimits(
        nofile_hard=WANTED_NOFILE if hard == resource.RLIM_INFINITY else hard,
        min_oom_score_adj=minimum,
        node_hostname=os.uname().nodename,
        capabilities=[cap for bit, cap in enumerate(ALL_CAPABILITIES) if caps >> bit & 1],
    )


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


# --- pieces (each pure, each tested) --------------------------------------------------------------------


def process_args(config: ContainerConfig, image: ImageConfig) -> list[str]:
    """CRI command/args merged with the image's entrypoint/cmd, as Kubernetes defines it: a command
    replaces the entrypoint and drops the image's cmd; args replace cmd."""
    command, args = list(config.command), list(config.args)
    if not command:
        command = list(image.entrypoint)
        if not args:
            args = list(image.cmd)
    merged = command + args
    if not merged:
        raise InvalidArgument(
            f"container {config.metadata.name!r}: no command specified (neither CRI command/args nor "
            "the image's entrypoint/cmd)"
        )
    return merged


def process_env(config: ContainerConfig, image: ImageConfig, hostname: str) -> list[str]:
    """Image env (PATH defaulted when it has none), HOSTNAME, then CRI envs override by name."""
    env: dict[str, str] = {}
    for item in image.env:
        key, _, value = item.partition("=")
        env[key] = value
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH.partition("=")[2]
    env["HOSTNAME"] = hostname
    for key, value in config.envs:
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def _cap_name(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") or name == "ALL" else "CAP_" + name


def capabilities(config: ContainerConfig, held: list[str] = ALL_CAPABILITIES) -> list[str]:
    """containerd's default set plus adds minus drops ("ALL" in either); every capability if privileged.
    "Every" and "ALL" mean the capabilities podhost holds (`held`)."""
    sc = config.security_context
    if sc.privileged:
        return list(held)
    caps = list(DEFAULT_CAPABILITIES)
    add = [_cap_name(c) for c in (sc.capabilities.add_capabilities if sc.capabilities else [])]
    drop = [_cap_name(c) for c in (sc.capabilities.drop_capabilities if sc.capabilities else [])]
    if "ALL" in add:
        caps = list(held)
    if "ALL" in drop:
        caps = []
    for cap in add:
        if cap != "ALL" and cap not in caps:
            caps.append(cap)
    return [c for c in caps if c not in drop]


def pod_hostname(sandbox: PodSandbox, limits: HostLimits) -> str:
    if sandbox.config.host_network:
        return limits.node_hostname
    return (sandbox.config.hostname or sandbox.config.metadata.name)[:63]


def default_mounts(sandbox: PodSandbox, sandbox_dir: Path, shm: str = "") -> list[dict[str, Any]]:
    """/proc, /dev, /sys, cgroups, the pod's /dev/shm (`shm`: where it is attached for this create; else
    the sandbox's run dir, where older podhosts mounted it) and its hosts/hostname/resolv.conf."""
    if "ipc" not in sandbox.ns_paths:
        shm = "/dev/shm"
    shm = shm or str(sandbox_dir / "shm")
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/dev/shm", "type": "bind", "source": shm, "options": ["rbind", "nosuid", "nodev", "noexec"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(sandbox_dir / "hosts"),
         "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/etc/hostname", "type": "bind", "source": str(sandbox_dir / "hostname"),
         "options": ["rbind", "rprivate", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(sandbox_dir / "resolv.conf"),
         "options": ["rbind", "rprivate", "ro"]},
    ]  # fmt: skip


def cri_mounts(config: ContainerConfig, rro_sources: Mapping[int, str] | None = None) -> list[dict[str, Any]]:
    """CRI mounts as binds, parents before children (containerd sorts by path depth). A recursive
    read-only mount `mounts[i]` binds `rro_sources[i]` instead of its host path: the read-only copy of
    the tree the service prepared (podhost.runtime.container.recursive_read_only)."""
    out = []
    depth = {i: len(Path(m.container_path).parts) for i, m in enumerate(config.mounts)}
    for i in sorted(depth, key=depth.__getitem__):
        m = config.mounts[i]
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mount destination {m.container_path!r} must be an absolute path")
        if not m.host_path:
            raise InvalidArgument(f"mount {m.container_path!r}: host_path is required")
        # A prepared copy (recursive read-only, or idmapped for a pod's user namespace) wins.
        source = (rro_sources or {}).get(i, "")
        if m.recursive_read_only and not source:
            raise InvalidArgument(f"ContainerConfig.mounts[{i}].recursive_read_only: not prepared")
        source = source or m.host_path
        options = ["rbind", "ro" if m.readonly else "rw", _PROPAGATION[MountPropagation(m.propagation)]]
        out.append({"destination": m.container_path, "type": "bind", "source": source, "options": options})
    return out


def mounts(
    config: ContainerConfig,
    sandbox: PodSandbox,
    sandbox_dir: Path,
    rro_sources: Mapping[int, str] | None = None,
    shm: str = "",
) -> list[dict[str, Any]]:
    """Default mounts, except those a CRI mount replaces (the kubelet passes its own /etc/hosts), then CRI."""
    extra = cri_mounts(config, rro_sources)
    taken = {os.path.normpath(m["destination"]) for m in extra}
    return [m for m in default_mounts(sandbox, sandbox_dir, shm) if m["destination"] not in taken] + extra


def rootfs_propagation(config: ContainerConfig) -> str:
    """rshared/rslave CRI mounts need the container's root to propagate likewise (as containerd sets it)."""
    kinds = {MountPropagation(m.propagation) for m in config.mounts}
    if MountPropagation.PROPAGATION_BIDIRECTIONAL in kinds:
        return "rshared"
    if MountPropagation.PROPAGATION_HOST_TO_CONTAINER in kinds:
        return "rslave"
    return ""


def namespaces(config: ContainerConfig, sandbox: PodSandbox, target_pid_ns: str = "") -> list[dict[str, str]]:
    """Join the pod's namespaces by pinned path; own mount namespace; PID per the pod's mode, or, for
    CRI pid mode TARGET (an ephemeral container with a target), the target container's PID namespace
    at `target_pid_ns` (/proc/<its pid>/ns/pid), as containerd joins it."""
    ns: list[dict[str, str]] = []
    if "user" in sandbox.ns_paths:  # first: runc joins it before the others, which it owns
        ns.append({"type": "user", "path": sandbox.ns_paths["user"]})
    pid_mode = config.security_context.namespace_options.pid
    if pid_mode == NamespaceMode.TARGET:
        if not target_pid_ns:
            raise InvalidArgument("pid namespace TARGET: the target container's namespace is not known")
        ns.append({"type": "pid", "path": target_pid_ns})
    elif sandbox.config.shares_pid and "pid" in sandbox.ns_paths:
        ns.append({"type": "pid", "path": sandbox.ns_paths["pid"]})
    elif pid_mode != NamespaceMode.NODE:
        ns.append({"type": "pid"})
    for kind, oci in (("net", "network"), ("ipc", "ipc"), ("uts", "uts")):
        if kind in sandbox.ns_paths:
            ns.append({"type": oci, "path": sandbox.ns_paths[kind]})
    ns.append({"type": "mount"})
    return ns


def id_mappings(sandbox: PodSandbox) -> dict[str, list[dict[str, int]]]:
    """OCI linux.uidMappings/gidMappings of a pod with its own user namespace: runc 1.1 joins the pinned
    namespace by path but still wants the mappings it has (it refuses a user namespace without them)."""
    if "user" not in sandbox.ns_paths:
        return {}
    userns = sandbox.config.namespace_options.userns

    def oci(maps: list[IDMapping]) -> list[dict[str, int]]:
        return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.length} for m in maps]

    return {"uidMappings": oci(userns.uids), "gidMappings": oci(userns.gids)}


def validate_resources(resources: LinuxContainerResources | None) -> None:
    if resources is None:
        return
    limit = resources.memory_limit_in_bytes
    if limit < 0:
        raise InvalidArgument(f"memory limit {limit} must not be negative")
    if 0 < limit < MIN_MEMORY_LIMIT:
        raise InvalidArgument(
            f"memory limit {limit} bytes is below the minimum {MIN_MEMORY_LIMIT} (6 MiB): the container's "
            "init would be OOM-killed before it starts"
        )
    if resources.memory_swap_limit_in_bytes and 0 < resources.memory_swap_limit_in_bytes < limit:
        raise InvalidArgument("memory swap limit must not be below the memory limit")
    for name in ("cpu_period", "cpu_shares"):
        if getattr(resources, name) < 0:
            raise InvalidArgument(f"{name} must not be negative")
    if resources.cpu_period and not 1000 <= resources.cpu_period <= 1000000:
        raise InvalidArgument(f"cpu_period {resources.cpu_period} must be between 1000 and 1000000 µs")
    if resources.cpu_quota and 0 < resources.cpu_quota < 1000:
        raise InvalidArgument(f"cpu_quota {resources.cpu_quota} must be at least 1000 µs")


def oci_resources(resources: LinuxContainerResources | None) -> dict[str, Any]:
    """OCI linux.resources for CRI resources (the part `runc update` also takes)."""
    out: dict[str, Any] = {}
    if resources is None:
        return out
    memory: dict[str, int] = {}
    if resources.memory_limit_in_bytes > 0:
        memory["limit"] = resources.memory_limit_in_bytes
    if resources.memory_swap_limit_in_bytes > 0:
        memory["swap"] = resources.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if resources.cpu_shares > 0:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota != 0:
        cpu["quota"] = resources.cpu_quota
    if resources.cpu_period > 0:
        cpu["period"] = resources.cpu_period
    if resources.cpuset_cpus:
        cpu["cpus"] = resources.cpuset_cpus
    if resources.cpuset_mems:
        cpu["mems"] = resources.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if resources.unified:
        out["unified"] = dict(resources.unified)
    return out


def clamp_oom_score_adj(requested: int, limits: HostLimits) -> int:
    return max(requested, limits.min_oom_score_adj, -1000)


def declares_hooks(config_json: Path, kind: str) -> bool:
    """Whether a bundle's config.json has `kind` hooks ("poststart", "poststop": an NRI plugin may add
    them). A missing spec has none; an unreadable one counts as having some."""
    try:
        hooks = json.loads(config_json.read_bytes()).get("hooks") or {}
    except FileNotFoundError:
        return False
    except (OSError, ValueError, AttributeError):
        return True
    return bool(hooks.get(kind))


# --- the whole spec -------------------------------------------------------------------------------------


def build_oci_spec(
    container: Container,
    sandbox: PodSandbox,
    image: Image,
    rootfs: Path,
    sandbox_dir: Path,
    runtime_info: HostLimits,
    *,
    passwd: str = "",
    group: str = "",
    rro_sources: Mapping[int, str] | None = None,
    target_pid_ns: str = "",
    shm: str = "",
) -> dict[str, Any]:
    """config.json for `container` in `sandbox`. `passwd`/`group` are the image rootfs's /etc files
    (needed only when a user or group is given by name); `rro_sources` the prepared recursive read-only
    copies, by mount index (`cri_mounts`); `target_pid_ns` the PID namespace of a TARGET container;
    `shm` where the pod's /dev/shm is attached for this create (`default_mounts`)."""
    config = container.config
    sc = config.security_context
    validate_resources(config.resources)
    args = process_args(config, image.config)
    user = resolve_user(
        image.config.user, sc.run_as_user, sc.run_as_group, sc.run_as_username, sc.supplemental_groups,
        passwd, group, sc.supplemental_groups_policy,
    )  # fmt: skip
    caps = capabilities(config, runtime_info.capabilities)
    # CRI add_ambient_capabilities (KEP-2763), as containerd applies them: also added to the bounding,
    # effective and permitted sets, and inheritable, which ambient capabilities require.
    ambient = [_cap_name(c) for c in (sc.capabilities.add_ambient_capabilities if sc.capabilities else [])]
    caps += [c for c in ambient if c not in caps]
    requested_oom = config.resources.oom_score_adj if config.resources else 0
    oom = clamp_oom_score_adj(requested_oom, runtime_info)
    if oom != requested_oom:
        log.info(
            "container %s: oom_score_adj %d clamped to %d (the lowest this host allows us to set)",
            container.id[:13],
            requested_oom,
            oom,
        )
    nofile = min(WANTED_NOFILE, runtime_info.nofile_hard)
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": process_env(config, image.config, pod_hostname(sandbox, runtime_info)),
        "cwd": config.working_dir or image.config.working_dir or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
        | ({"inheritable": ambient, "ambient": ambient} if ambient else {}),
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": oom,
    }
    resources = oci_resources(config.resources)
    resources["devices"] = [{"allow": sc.privileged, "access": "rwm"}]
    linux: dict[str, Any] = {
        "namespaces": namespaces(config, sandbox, target_pid_ns),
        "cgroupsPath": child(sandbox.cgroup or "/", container.id),
        "resources": resources,
        "maskedPaths": [] if sc.privileged else
        (DEFAULT_MASKED_PATHS if sc.masked_paths is None else list(sc.masked_paths)),
        "readonlyPaths": [] if sc.privileged else
        (DEFAULT_READONLY_PATHS if sc.readonly_paths is None else list(sc.readonly_paths)),
    }  # fmt: skip
    linux.update(id_mappings(sandbox))
    if propagation := rootfs_propagation(config):
        linux["rootfsPropagation"] = propagation
    if not sc.privileged:
        profile = seccomp.profile_for(sc.seccomp_profile_type, sc.seccomp_localhost_ref, set(caps))
        if profile is not None:
            linux["seccomp"] = profile
    annotations = dict(config.annotations)
    annotations.update({
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": config.metadata.name,
        "io.kubernetes.cri.sandbox-id": sandbox.id,
        "io.kubernetes.cri.sandbox-name": sandbox.config.metadata.name,
        "io.kubernetes.cri.sandbox-namespace": sandbox.config.metadata.namespace,
        "io.kubernetes.cri.image-name": container.image_ref or config.image,
    })  # fmt: skip
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(rootfs), "readonly": sc.readonly_rootfs},
        "mounts": mounts(config, sandbox, sandbox_dir, rro_sources, shm),
        "annotations": annotations,
        "linux": linux,
    }


def exec_process(spec: dict[str, Any], cmd: list[str], tty: bool = False) -> dict[str, Any]:
    """The `runc exec --process` spec of an exec in a container: its main process's, with `cmd`."""
    process = dict(spec["process"])
    process["args"] = list(cmd)
    process["terminal"] = tty
    process.pop("oomScoreAdj", None)  # runc exec does not take it; the exec inherits the container's
    return process
