"""Validation of the configs RunPodSandbox and CreateContainer are given, before any side effect.

Why here and why first: a CRI config is copied verbatim into files (/etc/hosts, /etc/hostname,
resolv.conf, the container log), plugin environments (CNI_ARGS, pause's PODHOST_PAUSE_*), argument
lists (conmon, runc) and cgroupfs paths. A value that breaks one of them must be refused as
INVALID_ARGUMENT naming the field, not discovered halfway through as an INTERNAL error such as
"embedded null byte" or "portmap DEL: Argument list too long" after pause and a veth already exist.
Everything here is pure (no I/O), so the rules are tested without root, one table row per rule.

The rules and where each bound comes from:
- No NUL anywhere (every string of the config, map keys included): C strings end at NUL, so a value
  with one is silently cut by execve, sethostname and every path syscall (Python refuses it).
- Sizes no real Kubernetes object exceeds: metadata names <= 253 (an object name is a DNS-1123
  subdomain), namespace <= 63 (a DNS-1123 label), hostname <= 63 (a DNS-1123 label; the kernel takes
  64), label keys <= 317 (a qualified name: 253-byte prefix, '/', 63-byte name), annotations <= 256 KiB
  together (the API server's TotalAnnotationSizeLimitB), sysctl names <= 253 (the API server's
  SysctlMaxLength) and values < one page (the most a /proc/sys write takes), each argument and
  environment entry < 128 KiB (the kernel's MAX_ARG_STRLEN: execve fails with E2BIG above it), paths
  < 4096 (PATH_MAX) with components <= 255 (NAME_MAX) where podhost or conmon creates them, and the
  whole config <= 1.5 MiB (etcd's request limit, so no pod object is larger).
- Names (pod name, namespace, uid, container name) are letters, digits, '-', '.' and '_': they go into
  CNI_ARGS (where ';' and '=' are separators), into the reserved name key `name_namespace_uid_attempt`,
  and the pod name becomes the hostname when none is given. Case is not checked (critest uses upper
  case; containerd and CRI-O accept it).
- Line-oriented files get no control characters: the hostname (/etc/hosts, /etc/hostname), DNS servers
  (IP addresses, at most 3: glibc's MAXNS and the API server's limit), searches (DNS names, at most 32
  and 2048 characters together, as the API server allows) and options (no whitespace).
- `log_path` is relative to the sandbox's `log_directory` and stays inside it: not absolute, no `..`
  component (CRI: "the path of the container log relative to PodSandboxConfig.LogDirectory"); conmon
  creates and renames files there. `log_directory` itself is absolute. `cgroup_parent` has no `..`.
- What the OCI runtime spec requires of paths it is given: `cwd`, mount destinations and sources are
  absolute. cgroup v2 `unified` keys are file names in the container's cgroup, never paths.
- User and group ids are 0..2147483647 (the API server's IsValidUserID/IsValidGroupID).
- An image volume (`Mount.image`) has no host_path, is read-only, and its `image_sub_path` is relative
  with no `..` (containerd 2's rules); whether the image and the sub path exist is decided at create.
- What `podhost.runtime.sandbox.service.validate` checked (metadata present, attempt, port mappings),
  the namespaced-sysctl rules (`podhost.runtime.sandbox.sysctls`) and the resource rules
  (`podhost.runtime.container.spec.validate_resources`) are applied here too, so one call says all.

Must never: touch the filesystem, the network or the clock; the stored sandbox config a container is
checked against is passed in.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from podhost.errors import InvalidArgument
from podhost.runtime.container.spec import validate_resources
from podhost.runtime.model import (
    ContainerConfig,
    ContainerSecurityContext,
    IDMapping,
    LinuxContainerResources,
    Mount,
    MountPropagation,
    NamespaceMode,
    PodSandboxConfig,
)
from podhost.runtime.sandbox import sysctls

MAX_NAME = 253
MAX_NAMESPACE = 63
MAX_HOSTNAME = 63
MAX_LABEL_KEY = 317
MAX_LABEL_VALUE = 4096
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_SYSCTL_NAME = 253
MAX_SYSCTL_VALUE = 4095
MAX_ARG_BYTES = 128 * 1024 - 1  # MAX_ARG_STRLEN counts the terminating NUL
MAX_PATH = 4095  # PATH_MAX counts the terminating NUL
MAX_NAME_COMPONENT = 255  # NAME_MAX
MAX_IMAGE_REF = 4096
MAX_DNS_SERVERS = 3
MAX_DNS_SEARCHES = 32
MAX_DNS_SEARCH_CHARS = 2048
MAX_DNS_OPTIONS = 32
MAX_DNS_OPTION = 255
MAX_CONFIG_BYTES = 1536 * 1024
MAX_ID = 2147483647

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a pod name cut to 63 may end in '-' or '.'
_DNS_SEARCH = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_DNS_OPTION = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space
_UNIFIED_KEY = re.compile(r"[a-z0-9_]+\.[A-Za-z0-9_.]+")
_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PROTOCOLS = ("TCP", "UDP", "SCTP")


# --- helpers ---------------------------------------------------------------------------------------------


def _show(value: str, limit: int = 40) -> str:
    """A value for an error message: short, so a megabyte value does not become a megabyte message."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value.encode(errors='surrogateescape'))} bytes)"


def _size(value: str) -> int:
    return len(value.encode("utf-8", "surrogateescape"))


def _strings(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string of a config with the field path that names it (map keys included)."""
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, enum.Enum) or obj is None or isinstance(obj, bool | int | float):
        return
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _strings(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            where = f"{path}[{_show(str(key))}]"
            yield f"{where} (key)", str(key)
            yield from _strings(value, where)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _strings(value, f"{path}[{i}]")


def _check_strings(config: Any, root: str) -> None:
    """No NUL in any string; the whole config within MAX_CONFIG_BYTES."""
    total = 0
    for path, value in _strings(config, root):
        if "\0" in value:
            raise InvalidArgument(f"{path}: contains a NUL byte: {_show(value)}")
        total += _size(value)
    if total > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"{root}: {total} bytes of strings, more than the {MAX_CONFIG_BYTES} allowed")


def _no_control(field: str, value: str) -> None:
    if _CONTROL.search(value):
        raise InvalidArgument(f"{field}: control characters are not allowed: {_show(value)}")


def _bounded(field: str, value: str, limit: int) -> None:
    if _size(value) > limit:
        raise InvalidArgument(f"{field}: {_size(value)} bytes, longer than {limit}: {_show(value)}")


def _name(field: str, value: str, limit: int, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required")
        return
    _bounded(field, value, limit)
    if not _NAME.fullmatch(value):
        raise InvalidArgument(f"{field}: {_show(value)} may only contain letters, digits, '-', '.' and '_'")


def _path(field: str, value: str, *, absolute: bool | None = None, control: bool = True) -> None:
    """`absolute`: True must be, False must not be, None either. `control`: control chars allowed."""
    _bounded(field, value, MAX_PATH)
    if not control:
        _no_control(field, value)
    if absolute is True and not value.startswith("/"):
        raise InvalidArgument(f"{field}: {_show(value)} must be an absolute path")
    if absolute is False and value.startswith("/"):
        raise InvalidArgument(f"{field}: {_show(value)} must be a relative path")


def _no_backsteps(field: str, value: str) -> None:
    """No `..` component, and no component longer than NAME_MAX (the kernel's ENAMETOOLONG)."""
    parts = value.split("/")
    if ".." in parts:
        raise InvalidArgument(f"{field}: {_show(value)} must not contain a '..' component")
    if any(_size(part) > MAX_NAME_COMPONENT for part in parts):
        raise InvalidArgument(f"{field}: {_show(value)} has a component longer than {MAX_NAME_COMPONENT}")


def _labels(field: str, labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if not key:
            raise InvalidArgument(f"{field}: empty key")
        _bounded(f"{field} key", key, MAX_LABEL_KEY)
        _no_control(f"{field} key", key)
        _bounded(f"{field}[{_show(key)}]", value, MAX_LABEL_VALUE)


def _annotations(field: str, annotations: dict[str, str]) -> None:
    total = 0
    for key, value in annotations.items():
        if not key:
            raise InvalidArgument(f"{field}: empty key")
        _bounded(f"{field} key", key, MAX_LABEL_KEY)
        _no_control(f"{field} key", key)
        total += _size(key) + _size(value)
    if total > MAX_ANNOTATIONS_BYTES:
        raise InvalidArgument(f"{field}: {total} bytes in all, more than {MAX_ANNOTATIONS_BYTES}")


def _id(field: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{field}: {value} is not a valid id (0..{MAX_ID})")


def _seccomp_ref(field: str, profile_type: str, ref: str) -> None:
    if profile_type == "Localhost":
        _path(field, ref.removeprefix("localhost/"), absolute=True, control=False)


def _resources(field: str, resources: LinuxContainerResources | None) -> None:
    if resources is None:
        return
    for name in ("cpuset_cpus", "cpuset_mems"):
        value = getattr(resources, name)
        if value and not _CPUSET.fullmatch(value):
            raise InvalidArgument(f"{field}.{name}: {_show(value)} is not a CPU/node list such as 0-3,5")
    for key, value in resources.unified.items():
        if not _UNIFIED_KEY.fullmatch(key):
            raise InvalidArgument(f"{field}.unified: {_show(key)} is not a cgroup v2 file name")
        _bounded(f"{field}.unified[{key}]", value, MAX_SYSCTL_VALUE)
        _no_control(f"{field}.unified[{key}]", value)


# --- the sandbox -----------------------------------------------------------------------------------------


def validate_hostname(hostname: str, field: str = "PodSandboxConfig.hostname") -> None:
    """Written into /etc/hosts and /etc/hostname and given to sethostname: host name characters only
    (letters, digits, '-', '.', '_'), so it stays one word of one line."""
    if not hostname:
        return  # the pod name then, cut to 63 (files.pod_hostname)
    _bounded(field, hostname, MAX_HOSTNAME)
    _no_control(field, hostname)
    if not _HOSTNAME.fullmatch(hostname):
        raise InvalidArgument(f"{field}: {_show(hostname)} is not a host name (letters, digits, '-', '.')")


def validate_dns(config: PodSandboxConfig) -> None:
    """Each entry becomes a line of the pod's resolv.conf, or a word of one."""
    dns = config.dns_config
    if dns is None:
        return
    field = "PodSandboxConfig.dns_config"
    if len(dns.servers) > MAX_DNS_SERVERS:
        raise InvalidArgument(f"{field}.servers: {len(dns.servers)} servers, at most {MAX_DNS_SERVERS}")
    for i, server in enumerate(dns.servers):
        _no_control(f"{field}.servers[{i}]", server)
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidArgument(f"{field}.servers[{i}]: {_show(server)} is not an IP address") from None
    if len(dns.searches) > MAX_DNS_SEARCHES:
        raise InvalidArgument(f"{field}.searches: {len(dns.searches)} domains, at most {MAX_DNS_SEARCHES}")
    if sum(_size(s) for s in dns.searches) + len(dns.searches) > MAX_DNS_SEARCH_CHARS:
        raise InvalidArgument(f"{field}.searches: longer than {MAX_DNS_SEARCH_CHARS} characters together")
    for i, search in enumerate(dns.searches):
        _no_control(f"{field}.searches[{i}]", search)
        _bounded(f"{field}.searches[{i}]", search, MAX_NAME)
        if not _DNS_SEARCH.fullmatch(search):
            raise InvalidArgument(f"{field}.searches[{i}]: {_show(search)} is not a DNS domain")
    if len(dns.options) > MAX_DNS_OPTIONS:
        raise InvalidArgument(f"{field}.options: {len(dns.options)} options, at most {MAX_DNS_OPTIONS}")
    for i, option in enumerate(dns.options):
        _no_control(f"{field}.options[{i}]", option)
        _bounded(f"{field}.options[{i}]", option, MAX_DNS_OPTION)
        if not _DNS_OPTION.fullmatch(option):
            raise InvalidArgument(f"{field}.options[{i}]: {_show(option)} is not a resolver option")


def validate_pod_sandbox_config(config: PodSandboxConfig) -> None:
    """Raise InvalidArgument naming the first field of a RunPodSandbox config podhost cannot use safely."""
    _check_strings(config, "PodSandboxConfig")
    m = config.metadata
    _name("PodSandboxConfig.metadata.name", m.name, MAX_NAME)
    _name("PodSandboxConfig.metadata.namespace", m.namespace, MAX_NAMESPACE)
    _name("PodSandboxConfig.metadata.uid", m.uid, MAX_NAME)
    if m.attempt < 0:
        raise InvalidArgument("PodSandboxConfig.metadata.attempt must not be negative")
    validate_hostname(config.hostname)
    if config.log_directory:
        field = "PodSandboxConfig.log_directory"
        _path(field, config.log_directory, absolute=True, control=False)
        _no_backsteps(field, config.log_directory)
    validate_dns(config)
    for i, pm in enumerate(config.port_mappings):
        field = f"PodSandboxConfig.port_mappings[{i}]"
        if pm.protocol.upper() not in _PROTOCOLS:
            raise InvalidArgument(f"{field}: unknown protocol {_show(pm.protocol)}")
        if not 0 < pm.container_port < 65536 or not 0 <= pm.host_port < 65536:
            raise InvalidArgument(f"{field}: invalid port {pm.container_port}->{pm.host_port}")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidArgument(f"{field}.host_ip: {_show(pm.host_ip)} is not an IP address") from None
    _labels("PodSandboxConfig.labels", config.labels)
    _annotations("PodSandboxConfig.annotations", config.annotations)
    _user_namespace("PodSandboxConfig.linux.security_context.namespace_options.userns_options", config)
    if config.cgroup_parent:
        field = "PodSandboxConfig.linux.cgroup_parent"
        _path(field, config.cgroup_parent, control=False)
        _no_backsteps(field, config.cgroup_parent)
    for name, value in config.sysctls.items():
        field = f"PodSandboxConfig.linux.sysctls[{_show(name)}]"
        _bounded(f"{field} (name)", name, MAX_SYSCTL_NAME)
        _bounded(field, value, MAX_SYSCTL_VALUE)
        if _CONTROL.search(value.replace("\t", " ")):  # a tab separates words, e.g. of a port range
            raise InvalidArgument(f"{field}: control characters are not allowed: {_show(value)}")
    sysctls.pause_sysctls(
        config.sysctls, config.host_network, config.namespace_options.ipc == NamespaceMode.NODE
    )
    _id("PodSandboxConfig.linux.security_context.run_as_user", config.run_as_user)
    _id("PodSandboxConfig.linux.security_context.run_as_group", config.run_as_group)
    for gid in config.supplemental_groups:
        _id("PodSandboxConfig.linux.security_context.supplemental_groups", gid)
    _seccomp_ref(
        "PodSandboxConfig.linux.security_context.seccomp.localhost_ref",
        config.seccomp_profile_type,
        config.seccomp_localhost_ref,
    )
    _resources("PodSandboxConfig.linux.resources", config.resources)


MAX_MAPPED_ID = 2**32 - 2  # kernel ids are u32 and (uid_t)-1 is never a valid id


def _user_namespace(field: str, config: PodSandboxConfig) -> None:
    """CRI userns_options: NODE (the host's, today's behaviour) or POD with exactly one uid and one gid
    mapping that maps the container's root, as containerd and runc's userns support require. CONTAINER and
    TARGET are refused, like containerd does."""
    userns = config.namespace_options.userns
    if userns.mode == NamespaceMode.NODE:
        if userns.uids or userns.gids:
            raise InvalidArgument(f"{field}: mappings are only allowed in mode POD (mode is NODE)")
        return
    if userns.mode != NamespaceMode.POD:
        raise InvalidArgument(f"{field}.mode: {userns.mode.name} is not supported (POD or NODE)")
    if config.host_network or config.namespace_options.network == NamespaceMode.NODE:
        raise InvalidArgument(f"{field}: a user namespace is not supported with the host network")
    if (
        config.namespace_options.pid == NamespaceMode.NODE
        or config.namespace_options.ipc == NamespaceMode.NODE
    ):
        raise InvalidArgument(
            f"{field}: a user namespace is not supported with the host PID or IPC namespace"
        )
    for kind, maps in (("uids", userns.uids), ("gids", userns.gids)):
        _refuse_overlaps(f"{field}.{kind}", maps)
        if len(maps) != 1:
            raise InvalidArgument(f"{field}.{kind}: exactly one mapping is supported, got {len(maps)}")
        m = maps[0]
        if m.container_id != 0:
            raise InvalidArgument(
                f"{field}.{kind}: container id 0 must be mapped (mapping starts at {m.container_id})"
            )
        if m.length <= 0:
            raise InvalidArgument(f"{field}.{kind}: length must be greater than 0")
        if max(m.host_id, m.container_id) + m.length - 1 > MAX_MAPPED_ID:
            raise InvalidArgument(f"{field}.{kind}: mapping {m.host_id}+{m.length} overflows the 32-bit ids")


def _refuse_overlaps(field: str, maps: list[IDMapping]) -> None:
    """Two mappings sharing container ids or host ids are ambiguous: the kernel refuses the map file."""
    for i, a in enumerate(maps):
        for j in range(i + 1, len(maps)):
            b = maps[j]
            for side, x, y in (("container", a.container_id, b.container_id), ("host", a.host_id, b.host_id)):
                if x < y + b.length and y < x + a.length:
                    raise InvalidArgument(f"{field}[{i}] and {field}[{j}]: {side} id ranges overlap")


# --- a container -----------------------------------------------------------------------------------------


def validate_log_path(log_path: str, log_directory: str, field: str = "ContainerConfig.log_path") -> None:
    """The container log stays inside the pod's log directory: conmon creates, writes and (on reopen)
    renames `log_directory/log_path`, so a path leaving it would let a caller replace any host file."""
    if not log_path:
        return
    _path(field, log_path, absolute=False, control=False)
    _no_backsteps(field, log_path)
    if log_path.endswith("/") or log_path.rstrip("/").split("/")[-1] in ("", "."):
        raise InvalidArgument(f"{field}: {_show(log_path)} does not name a file")
    _bounded(f"{field} (joined with the log directory)", f"{log_directory}/{log_path}", MAX_PATH)


def _security_context(sc: ContainerSecurityContext) -> None:
    field = "ContainerConfig.linux.security_context"
    _id(f"{field}.run_as_user", sc.run_as_user)
    _id(f"{field}.run_as_group", sc.run_as_group)
    for gid in sc.supplemental_groups:
        _id(f"{field}.supplemental_groups", gid)
    if sc.run_as_username:
        _bounded(f"{field}.run_as_username", sc.run_as_username, MAX_NAME)
        _no_control(f"{field}.run_as_username", sc.run_as_username)
    _seccomp_ref(f"{field}.seccomp.localhost_ref", sc.seccomp_profile_type, sc.seccomp_localhost_ref)
    for name in ("masked_paths", "readonly_paths"):
        for i, path in enumerate(getattr(sc, name) or []):
            _path(f"{field}.{name}[{i}]", path, absolute=True)
    ns = sc.namespace_options
    if ns.pid == NamespaceMode.TARGET and not ns.target_id:
        raise InvalidArgument(f"{field}.namespace_options.target_id: required when pid is TARGET")
    if ns.target_id and ns.pid != NamespaceMode.TARGET:
        raise InvalidArgument(f"{field}.namespace_options.target_id: only with pid TARGET")
    for kind in ("network", "ipc"):
        if getattr(ns, kind) == NamespaceMode.TARGET:
            raise InvalidArgument(f"{field}.namespace_options.{kind}: TARGET is for the PID namespace only")


def _image_volume(field: str, mount: Mount) -> None:
    """An image volume (CRI `Mount.image`, KEP-4639), refused as containerd 2 refuses it: no host_path
    (the runtime chooses the source), read-only, and `image_sub_path` a relative path that stays in the
    image (no `..`). Whether the image and the sub path exist is checked at create, against the store."""
    if not mount.image:
        raise InvalidArgument(f"{field}.image_sub_path: {_show(mount.image_sub_path)} needs {field}.image")
    _bounded(f"{field}.image.image", mount.image, MAX_IMAGE_REF)
    if any(c.isspace() for c in mount.image) or _CONTROL.search(mount.image):
        raise InvalidArgument(f"{field}.image.image: {_show(mount.image)} is not an image reference")
    if mount.host_path:
        raise InvalidArgument(f"{field}.host_path: must be empty for an image volume ({field}.image is set)")
    if not mount.readonly:
        raise InvalidArgument(f"{field}.readonly: an image volume must be read-only")
    if mount.image_sub_path:
        _path(f"{field}.image_sub_path", mount.image_sub_path, absolute=False, control=False)
        _no_backsteps(f"{field}.image_sub_path", mount.image_sub_path)


def _recursive_read_only(field: str, mount: Mount) -> None:
    """CRI `Mount.recursive_read_only`: "readonly MUST be true and propagation MUST be PRIVATE", else the
    runtime errors (containerd 2 and CRI-O refuse it the same way, as critest checks)."""
    if not mount.readonly:
        raise InvalidArgument(f"{field}.recursive_read_only: needs {field}.readonly to be true")
    if mount.propagation != MountPropagation.PROPAGATION_PRIVATE:
        raise InvalidArgument(
            f"{field}.recursive_read_only: needs {field}.propagation PROPAGATION_PRIVATE, not "
            f"{MountPropagation(mount.propagation).name}"
        )


def validate_container_config(config: ContainerConfig, sandbox_config: PodSandboxConfig) -> None:
    """Raise InvalidArgument naming the first field of a CreateContainer config podhost cannot use safely.
    `sandbox_config` is the sandbox's own (stored) config: the log path is checked against its
    log directory."""
    _check_strings(config, "ContainerConfig")
    _name("ContainerConfig.metadata.name", config.metadata.name, MAX_NAME)
    if config.metadata.attempt < 0:
        raise InvalidArgument("ContainerConfig.metadata.attempt must not be negative")
    if not config.image:
        raise InvalidArgument("ContainerConfig.image.image is required")
    _bounded("ContainerConfig.image.image", config.image, MAX_IMAGE_REF)
    if any(c.isspace() for c in config.image) or _CONTROL.search(config.image):
        raise InvalidArgument(f"ContainerConfig.image.image: {_show(config.image)} is not an image reference")
    for name in ("command", "args"):
        for i, arg in enumerate(getattr(config, name)):
            _bounded(f"ContainerConfig.{name}[{i}]", arg, MAX_ARG_BYTES)
    if config.working_dir:
        _path("ContainerConfig.working_dir", config.working_dir, absolute=True)
    for i, (key, value) in enumerate(config.envs):
        field = f"ContainerConfig.envs[{i}]"
        if not key:
            raise InvalidArgument(f"{field}.key is required")
        if "=" in key:
            raise InvalidArgument(f"{field}.key: {_show(key)} must not contain '='")
        _bounded(field, f"{key}={value}", MAX_ARG_BYTES)
    for i, mount in enumerate(config.mounts):
        _path(f"ContainerConfig.mounts[{i}].container_path", mount.container_path, absolute=True)
        if mount.image or mount.image_sub_path:
            _image_volume(f"ContainerConfig.mounts[{i}]", mount)
        else:
            _path(f"ContainerConfig.mounts[{i}].host_path", mount.host_path, absolute=True)
        if mount.recursive_read_only:
            _recursive_read_only(f"ContainerConfig.mounts[{i}]", mount)
    for i, device in enumerate(config.devices):
        _path(f"ContainerConfig.devices[{i}].container_path", device.container_path, absolute=True)
        _path(f"ContainerConfig.devices[{i}].host_path", device.host_path, absolute=True)
        if device.permissions and not set(device.permissions) <= set("rwm"):
            raise InvalidArgument(
                f"ContainerConfig.devices[{i}].permissions: {_show(device.permissions)} is not of r, w, m"
            )
    _labels("ContainerConfig.labels", config.labels)
    _annotations("ContainerConfig.annotations", config.annotations)
    validate_log_path(config.log_path, sandbox_config.log_directory)
    _resources("ContainerConfig.linux.resources", config.resources)
    validate_resources(config.resources)
    _security_context(config.security_context)
