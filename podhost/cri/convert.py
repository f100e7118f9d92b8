"""The one edge between CRI protobuf messages and `podhost.runtime.model`.

Pure functions only: requests become model specs (validated where CRI requires a field), model records
become response messages. Nothing here does I/O, calls the runtime or reads the clock; callers pass the
time in when a response carries one.

Rules kept here so they are kept once:
- `NamespaceMode` values are copied exactly, also when the message is absent: proto3 reads an absent
  mode as 0, which is POD, and that is what containerd and CRI-O do with it.
- The optional int64 wrappers (`run_as_user {value}`) become `int | None`; None means "not set".
- Empty repeated `masked_paths` / `readonly_paths` become None ("the runtime's defaults"): proto3 cannot
  tell "unset" from "empty", and callers that want none at all ask for `privileged`.
- Verbose `info` maps hold one key, "info", whose value is a JSON document (what crictl inspect parses).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from podhost.cri import api_pb2 as pb
from podhost.cri.streaming import requests as streaming
from podhost.errors import InvalidArgument
from podhost.runtime import metrics, model
from podhost.runtime.image.registry.auth import AuthConfig
from podhost.runtime.runtime import (
    ContainerFilter,
    ContainerStats,
    PodSandboxFilter,
    RuntimeCondition,
)

#: The CRI API version podhost speaks, reported in VersionResponse.runtime_api_version.
RUNTIME_API_VERSION = "v1"
#: VersionResponse.version: the version of the runtime API server implementation (what containerd sends).
KUBE_API_VERSION = "0.1.0"

# --- requests -> model ---------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(message)


def _opt_int64(msg: Any, field: str) -> int | None:
    """An `Int64Value` field as `int | None` (None when the wrapper is absent)."""
    return int(getattr(msg, field).value) if msg.HasField(field) else None


def required_id(value: str, field: str) -> str:
    """CRI ids are required wherever a verb names one object; an empty one is the caller's mistake."""
    _require(value != "", f"{field} must not be empty")
    return value


def supplemental_groups_policy(value: int, field: str) -> model.SupplementalGroupsPolicy:
    """CRI enums are open: a value this runtime does not know is refused, as containerd and CRI-O do."""
    _require(
        value in model.SupplementalGroupsPolicy.__members__.values(),
        f"{field}: SupplementalGroupsPolicy {value} is not implemented (Merge or Strict)",
    )
    return model.SupplementalGroupsPolicy(value)


def namespace_option(m: pb.NamespaceOption) -> model.NamespaceOption:
    return model.NamespaceOption(
        network=model.NamespaceMode(m.network),
        pid=model.NamespaceMode(m.pid),
        ipc=model.NamespaceMode(m.ipc),
        target_id=m.target_id,
        userns=user_namespace(m.userns_options) if m.HasField("userns_options") else model.UserNamespace(),
    )


def user_namespace(m: pb.UserNamespace) -> model.UserNamespace:
    """CRI `userns_options`; the modes and mappings are checked by podhost.runtime.validation."""

    def mappings(ms: Iterable[pb.IDMapping]) -> list[model.IDMapping]:
        return [model.IDMapping(host_id=i.host_id, container_id=i.container_id, length=i.length) for i in ms]

    return model.UserNamespace(mode=model.NamespaceMode(m.mode), uids=mappings(m.uids), gids=mappings(m.gids))


def _seccomp(profile: pb.SecurityProfile | None, legacy_path: str) -> tuple[str, str]:
    """(profile type, localhost ref) from the `seccomp` message, else from the deprecated path string."""
    if profile is not None:
        kind = pb.SecurityProfile.ProfileType.Name(profile.profile_type)
        return kind, profile.localhost_ref if kind == "Localhost" else ""
    if legacy_path in ("runtime/default", "docker/default"):
        return "RuntimeDefault", ""
    if legacy_path == "unconfined":
        return "Unconfined", ""
    if legacy_path.startswith("localhost/"):
        return "Localhost", legacy_path.removeprefix("localhost/")
    _require(legacy_path == "", f"seccomp_profile_path: unknown profile {legacy_path!r}")
    return "", ""


def linux_container_resources(m: pb.LinuxContainerResources) -> model.LinuxContainerResources:
    return model.LinuxContainerResources(
        cpu_period=m.cpu_period,
        cpu_quota=m.cpu_quota,
        cpu_shares=m.cpu_shares,
        memory_limit_in_bytes=m.memory_limit_in_bytes,
        oom_score_adj=m.oom_score_adj,
        cpuset_cpus=m.cpuset_cpus,
        cpuset_mems=m.cpuset_mems,
        memory_swap_limit_in_bytes=m.memory_swap_limit_in_bytes,
        unified=dict(m.unified),
    )


def update_resources(m: pb.UpdateContainerResourcesRequest) -> model.LinuxContainerResources:
    _require(
        m.HasField("linux"),
        "UpdateContainerResourcesRequest.linux is required (podhost runs Linux containers)",
    )
    return linux_container_resources(m.linux)


def pod_sandbox_config(m: pb.PodSandboxConfig, *, validate: bool = True) -> model.PodSandboxConfig:
    """A RunPodSandbox config. `validate=False` for the copy CreateContainer carries, which is informative."""
    if validate:
        _require(m.HasField("metadata"), "PodSandboxConfig.metadata is required")
        _require(m.metadata.name != "", "PodSandboxConfig.metadata.name must not be empty")
    sc = m.linux.security_context
    seccomp_type, seccomp_ref = _seccomp(
        sc.seccomp if sc.HasField("seccomp") else None, sc.seccomp_profile_path
    )
    return model.PodSandboxConfig(
        metadata=model.PodSandboxMetadata(
            name=m.metadata.name,
            uid=m.metadata.uid,
            namespace=m.metadata.namespace,
            attempt=m.metadata.attempt,
        ),
        hostname=m.hostname,
        log_directory=m.log_directory,
        dns_config=(
            model.DNSConfig(
                servers=list(m.dns_config.servers),
                searches=list(m.dns_config.searches),
                options=list(m.dns_config.options),
            )
            if m.HasField("dns_config")
            else None
        ),
        port_mappings=[
            model.PortMapping(
                protocol=pb.Protocol.Name(p.protocol),
                container_port=p.container_port,
                host_port=p.host_port,
                host_ip=p.host_ip,
            )
            for p in m.port_mappings
        ],
        labels=dict(m.labels),
        annotations=dict(m.annotations),
        cgroup_parent=m.linux.cgroup_parent,
        sysctls=dict(m.linux.sysctls),
        namespace_options=namespace_option(sc.namespace_options),
        privileged=sc.privileged,
        run_as_user=_opt_int64(sc, "run_as_user"),
        run_as_group=_opt_int64(sc, "run_as_group"),
        supplemental_groups=list(sc.supplemental_groups),
        supplemental_groups_policy=supplemental_groups_policy(
            sc.supplemental_groups_policy, "LinuxSandboxSecurityContext.supplemental_groups_policy"
        ),
        readonly_rootfs=sc.readonly_rootfs,
        seccomp_profile_type=seccomp_type,
        seccomp_localhost_ref=seccomp_ref,
        resources=(linux_container_resources(m.linux.resources) if m.linux.HasField("resources") else None),
    )


def mount(m: pb.Mount) -> model.Mount:
    return model.Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        selinux_relabel=m.selinux_relabel,
        propagation=model.MountPropagation(m.propagation),
        image=m.image.image if m.HasField("image") else "",
        image_sub_path=m.image_sub_path,
        recursive_read_only=m.recursive_read_only,
    )


def container_security_context(m: pb.LinuxContainerSecurityContext) -> model.ContainerSecurityContext:
    # CRI: run_as_group "should only be specified when run_as_user or run_as_username is specified;
    # otherwise, the runtime MUST error" (containerd and CRI-O reject it the same way).
    _require(
        not m.HasField("run_as_group") or m.HasField("run_as_user") or m.run_as_username != "",
        "LinuxContainerSecurityContext.run_as_group is set without run_as_user or run_as_username",
    )
    seccomp_type, seccomp_ref = _seccomp(m.seccomp if m.HasField("seccomp") else None, m.seccomp_profile_path)
    return model.ContainerSecurityContext(
        capabilities=(
            model.Capability(
                add_capabilities=list(m.capabilities.add_capabilities),
                drop_capabilities=list(m.capabilities.drop_capabilities),
                add_ambient_capabilities=list(m.capabilities.add_ambient_capabilities),
            )
            if m.HasField("capabilities")
            else None
        ),
        privileged=m.privileged,
        namespace_options=namespace_option(m.namespace_options),
        run_as_user=_opt_int64(m, "run_as_user"),
        run_as_group=_opt_int64(m, "run_as_group"),
        run_as_username=m.run_as_username,
        readonly_rootfs=m.readonly_rootfs,
        supplemental_groups=list(m.supplemental_groups),
        supplemental_groups_policy=supplemental_groups_policy(
            m.supplemental_groups_policy, "LinuxContainerSecurityContext.supplemental_groups_policy"
        ),
        no_new_privs=m.no_new_privs,
        masked_paths=list(m.masked_paths) or None,
        readonly_paths=list(m.readonly_paths) or None,
        seccomp_profile_type=seccomp_type,
        seccomp_localhost_ref=seccomp_ref,
    )


def container_config(m: pb.ContainerConfig) -> model.ContainerConfig:
    _require(m.HasField("metadata"), "ContainerConfig.metadata is required")
    _require(m.metadata.name != "", "ContainerConfig.metadata.name must not be empty")
    _require(m.image.image != "", "ContainerConfig.image.image must not be empty")
    return model.ContainerConfig(
        metadata=model.ContainerMetadata(name=m.metadata.name, attempt=m.metadata.attempt),
        image=m.image.image,
        command=list(m.command),
        args=list(m.args),
        working_dir=m.working_dir,
        envs=[(kv.key, env_value(kv.value)) for kv in m.envs],
        mounts=[mount(x) for x in m.mounts],
        devices=[
            model.Device(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
            for d in m.devices
        ],
        labels=dict(m.labels),
        annotations=dict(m.annotations),
        log_path=m.log_path,
        stdin=m.stdin,
        stdin_once=m.stdin_once,
        tty=m.tty,
        resources=(linux_container_resources(m.linux.resources) if m.linux.HasField("resources") else None),
        security_context=container_security_context(m.linux.security_context),
    )


def env_value(value: bytes) -> str:
    """CRI carries env values as bytes (they may be binary); undecodable bytes survive as surrogates,
    so `os.fsencode` gives the exact bytes back when the process environment is built."""
    return value.decode("utf-8", "surrogateescape")


def image_ref(spec: pb.ImageSpec) -> str:
    """The reference an ImageSpec names; CRI requires one for pull, status and remove."""
    _require(spec.image != "", "ImageSpec.image must not be empty")
    return spec.image


def auth_config(m: pb.PullImageRequest) -> AuthConfig | None:
    """PullImageRequest.auth, or None when the request carries no credentials."""
    if not m.HasField("auth"):
        return None
    a = m.auth
    found = AuthConfig(
        username=a.username,
        password=a.password,
        auth=a.auth,
        server_address=a.server_address,
        identity_token=a.identity_token,
        registry_token=a.registry_token,
    )
    return None if found == AuthConfig() else found


def exec_cmd(m: pb.ExecSyncRequest) -> list[str]:
    _require(m.container_id != "", "ExecSyncRequest.container_id must not be empty")
    _require(len(m.cmd) > 0, "ExecSyncRequest.cmd must not be empty")
    return list(m.cmd)


def exec_request(m: pb.ExecRequest) -> streaming.ExecRequest:
    """A streaming Exec as the streaming server keeps it (container id as given; the servicer resolves it)."""
    _require(m.container_id != "", "ExecRequest.container_id must not be empty")
    _require(len(m.cmd) > 0, "ExecRequest.cmd must not be empty")
    streaming.validate_stdio(m.tty, m.stdin, m.stdout, m.stderr)
    return streaming.ExecRequest(m.container_id, tuple(m.cmd), m.tty, m.stdin, m.stdout, m.stderr)


def attach_request(m: pb.AttachRequest) -> streaming.AttachRequest:
    _require(m.container_id != "", "AttachRequest.container_id must not be empty")
    streaming.validate_stdio(m.tty, m.stdin, m.stdout, m.stderr)
    return streaming.AttachRequest(m.container_id, m.tty, m.stdin, m.stdout, m.stderr)


def port_forward_request(m: pb.PortForwardRequest) -> streaming.PortForwardRequest:
    _require(m.pod_sandbox_id != "", "PortForwardRequest.pod_sandbox_id must not be empty")
    for port in m.port:
        _require(0 < port < 65536, f"PortForwardRequest.port {port} is not a valid TCP port")
    return streaming.PortForwardRequest(m.pod_sandbox_id, tuple(int(p) for p in m.port))


def pod_sandbox_filter(m: pb.PodSandboxFilter) -> PodSandboxFilter:
    return PodSandboxFilter(
        id=m.id,
        state=(
            model.PodSandboxState(pb.PodSandboxState.Name(m.state.state)) if m.HasField("state") else None
        ),
        label_selector=dict(m.label_selector),
    )


def container_filter(m: pb.ContainerFilter) -> ContainerFilter:
    return ContainerFilter(
        id=m.id,
        state=(model.ContainerState(pb.ContainerState.Name(m.state.state)) if m.HasField("state") else None),
        pod_sandbox_id=m.pod_sandbox_id,
        label_selector=dict(m.label_selector),
    )


def container_stats_filter(m: pb.ContainerStatsFilter) -> ContainerFilter:
    return ContainerFilter(id=m.id, pod_sandbox_id=m.pod_sandbox_id, label_selector=dict(m.label_selector))


# --- model -> responses --------------------------------------------------------------------------------


def _info(document: Any) -> dict[str, str]:
    """A verbose `info` map: one JSON document under "info", as containerd and CRI-O send it."""
    return {"info": json.dumps(document, default=str, sort_keys=True)}


def version_response(runtime_name: str, runtime_version: str) -> pb.VersionResponse:
    return pb.VersionResponse(
        version=KUBE_API_VERSION,
        runtime_name=runtime_name,
        runtime_version=runtime_version,
        runtime_api_version=RUNTIME_API_VERSION,
    )


def pod_sandbox_metadata(m: model.PodSandboxMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=m.name, uid=m.uid, namespace=m.namespace, attempt=m.attempt)


def pb_namespace_option(m: model.NamespaceOption) -> pb.NamespaceOption:
    """The pod's namespaces as PodSandboxStatus reports them, the user namespace and its mappings too."""
    out = pb.NamespaceOption(network=m.network.name, pid=m.pid.name, ipc=m.ipc.name, target_id=m.target_id)
    out.userns_options.mode = m.userns.mode.name  # type: ignore[assignment]
    for src, dst in ((m.userns.uids, out.userns_options.uids), (m.userns.gids, out.userns_options.gids)):
        dst.extend(pb.IDMapping(host_id=i.host_id, container_id=i.container_id, length=i.length) for i in src)
    return out


def pod_sandbox(s: model.PodSandbox) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=s.id,
        metadata=pod_sandbox_metadata(s.config.metadata),
        state=s.state.value,
        created_at=s.created_at,
        labels=s.config.labels,
        annotations=s.config.annotations,
        runtime_handler=s.runtime_handler,
    )


def pod_sandbox_status(s: model.PodSandbox) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=s.id,
        metadata=pod_sandbox_metadata(s.config.metadata),
        state=s.state.value,
        created_at=s.created_at,
        network=pb.PodSandboxNetworkStatus(
            ip=s.ip, additional_ips=[pb.PodIP(ip=ip) for ip in s.additional_ips]
        ),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=pb_namespace_option(s.config.namespace_options))
        ),
        labels=s.config.labels,
        annotations=s.config.annotations,
        runtime_handler=s.runtime_handler,
    )


def pod_sandbox_info(s: model.PodSandbox) -> dict[str, str]:
    """What `crictl inspectp` shows beyond the status: the runtime's own record of the sandbox."""
    return _info(
        {
            "pid": s.pid,
            "stage": s.stage,
            "cgroup": s.cgroup,
            "namespacePaths": s.ns_paths,
            "netNamespacePath": s.netns_path,
            "network": s.network,
            "reason": s.reason,
            "message": s.message,
            "runtimeHandler": s.runtime_handler,
            "config": model.to_dict(s.config),
        }
    )


def pod_sandbox_status_response(
    s: model.PodSandbox,
    *,
    verbose: bool = False,
    containers: Iterable[model.Container] = (),
    timestamp: int = 0,
) -> pb.PodSandboxStatusResponse:
    return pb.PodSandboxStatusResponse(
        status=pod_sandbox_status(s),
        info=pod_sandbox_info(s) if verbose else {},
        containers_statuses=[container_status(c) for c in containers],
        timestamp=timestamp,
    )


def container_metadata(m: model.ContainerMetadata) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=m.name, attempt=m.attempt)


def pb_mount(m: model.Mount) -> pb.Mount:
    return pb.Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        selinux_relabel=m.selinux_relabel,
        propagation=m.propagation.name,
        image=pb.ImageSpec(image=m.image, image_ref=m.image_ref) if m.image else None,
        image_sub_path=m.image_sub_path,
        recursive_read_only=m.recursive_read_only,
    )


def pb_linux_container_resources(r: model.LinuxContainerResources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        unified=r.unified,
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
    )


def container(c: model.Container) -> pb.Container:
    return pb.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=container_metadata(c.config.metadata),
        image=pb.ImageSpec(image=c.config.image),
        image_ref=c.image_ref,
        state=c.state.value,
        created_at=c.created_at,
        labels=c.config.labels,
        annotations=c.config.annotations,
        image_id=c.image_id,
    )


def container_status(c: model.Container) -> pb.ContainerStatus:
    status = pb.ContainerStatus(
        id=c.id,
        metadata=container_metadata(c.config.metadata),
        state=c.state.value,
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        exit_code=c.exit_code,
        image=pb.ImageSpec(image=c.config.image),
        image_ref=c.image_ref,
        reason=c.reason,
        message=c.message,
        labels=c.config.labels,
        annotations=c.config.annotations,
        mounts=[pb_mount(m) for m in c.config.mounts],
        log_path=c.log_path,
        image_id=c.image_id,
    )
    if c.config.resources is not None:
        status.resources.linux.CopyFrom(pb_linux_container_resources(c.config.resources))
    if c.user is not None:
        # The ids of the container's process as podhost resolved them into the OCI process.user (image
        # /etc/passwd and /etc/group per SupplementalGroupsPolicy), as containerd reports them.
        user = status.user.linux
        user.uid = c.user.uid
        user.gid = c.user.gid
        user.supplemental_groups.extend(c.user.supplemental_groups)
    return status


def container_info(c: model.Container) -> dict[str, str]:
    """What `crictl inspect` shows beyond the status: pids, runtime handler and the config as recorded."""
    return _info(
        {
            "sandboxID": c.sandbox_id,
            "pid": c.pid,
            "conmonPid": c.conmon_pid,
            "runtimeHandler": c.runtime_handler,
            "config": model.to_dict(c.config),
        }
    )


def container_status_response(c: model.Container, *, verbose: bool = False) -> pb.ContainerStatusResponse:
    return pb.ContainerStatusResponse(status=container_status(c), info=container_info(c) if verbose else {})


def _image_user(user: str) -> tuple[int | None, str]:
    """OCI `config.User` ("uid", "name", "uid:gid", "name:group") as CRI's (uid, username) pair."""
    name = user.split(":", 1)[0]
    if name == "":
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name


def image(i: model.Image) -> pb.Image:
    uid, username = _image_user(i.config.user)
    msg = pb.Image(
        id=i.id,
        repo_tags=i.repo_tags,
        repo_digests=i.repo_digests,
        size=i.size,
        username=username,
        spec=pb.ImageSpec(image=i.id),
        pinned=i.pinned,
    )
    if uid is not None:
        msg.uid.value = uid
    return msg


def image_info(i: model.Image) -> dict[str, str]:
    return _info({"imageConfig": model.to_dict(i.config), "diffIDs": i.diff_ids, "createdAt": i.created_at})


def image_status_response(i: model.Image | None, *, verbose: bool = False) -> pb.ImageStatusResponse:
    """CRI: an image that is not present is a response without `image`, not an error."""
    if i is None:
        return pb.ImageStatusResponse()
    return pb.ImageStatusResponse(image=image(i), info=image_info(i) if verbose else {})


def image_fs_info_response(
    used_bytes: int, inodes_used: int, mountpoint: str, timestamp: int
) -> pb.ImageFsInfoResponse:
    usage = pb.FilesystemUsage(
        timestamp=timestamp,
        fs_id=pb.FilesystemIdentifier(mountpoint=mountpoint),
        used_bytes=pb.UInt64Value(value=used_bytes),
        inodes_used=pb.UInt64Value(value=inodes_used),
    )
    return pb.ImageFsInfoResponse(image_filesystems=[usage])


def runtime_status(conditions: Iterable[RuntimeCondition]) -> pb.RuntimeStatus:
    return pb.RuntimeStatus(
        conditions=[
            pb.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in conditions
        ]
    )


def status_response(
    conditions: Iterable[RuntimeCondition],
    handlers: Iterable[str],
    info: Mapping[str, Any] | None = None,
    *,
    recursive_read_only_mounts: bool = False,
    user_namespaces: bool = False,
) -> pb.StatusResponse:
    """`info` (verbose only) maps keys to JSON-able documents, e.g. {"config": ...} as containerd sends.
    `recursive_read_only_mounts`: podhost prepares them itself (mount_setattr), so every handler has them
    or none does. `user_namespaces` likewise (podhost founds the pod's user namespace and idmaps the rootfs
    itself), for pods in mode POD."""
    handler_features = pb.RuntimeHandlerFeatures(
        recursive_read_only_mounts=recursive_read_only_mounts, user_namespaces=user_namespaces
    )
    return pb.StatusResponse(
        status=runtime_status(conditions),
        info={k: json.dumps(v, default=str, sort_keys=True) for k, v in (info or {}).items()},
        runtime_handlers=[pb.RuntimeHandler(name=h, features=handler_features) for h in handlers],
        # SupplementalGroupsPolicy: podhost resolves the groups itself, so Strict holds for every handler.
        features=pb.RuntimeFeatures(supplemental_groups_policy=True),
    )


def container_attributes(c: model.Container) -> pb.ContainerAttributes:
    return pb.ContainerAttributes(
        id=c.id,
        metadata=container_metadata(c.config.metadata),
        labels=c.config.labels,
        annotations=c.config.annotations,
    )


def container_stats(s: ContainerStats, c: model.Container | None) -> pb.ContainerStats:
    """Stats joined with the container they belong to (None when it vanished in between: id only)."""
    attributes = container_attributes(c) if c is not None else pb.ContainerAttributes(id=s.container_id)
    return pb.ContainerStats(
        attributes=attributes,
        cpu=pb.CpuUsage(
            timestamp=s.timestamp,
            usage_core_nano_seconds=pb.UInt64Value(value=s.cpu_usage_core_nano_seconds),
        ),
        memory=pb.MemoryUsage(
            timestamp=s.timestamp,
            working_set_bytes=pb.UInt64Value(value=s.memory_working_set_bytes),
            usage_bytes=pb.UInt64Value(value=s.memory_usage_bytes),
        ),
        writable_layer=pb.FilesystemUsage(
            timestamp=s.timestamp, used_bytes=pb.UInt64Value(value=s.writable_layer_used_bytes)
        ),
    )


def exec_sync_response(stdout: bytes, stderr: bytes, exit_code: int) -> pb.ExecSyncResponse:
    return pb.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=exit_code)


def container_event_response(
    event: model.ContainerEvent,
    sandbox: model.PodSandbox | None = None,
    containers: Iterable[model.Container] = (),
) -> pb.ContainerEventResponse:
    """One GetContainerEvents message; the sandbox and its containers as they are after the event."""
    response = pb.ContainerEventResponse(
        container_id=event.container_id,
        container_event_type=event.event_type.name,
        created_at=event.created_at,
        containers_statuses=[container_status(c) for c in containers],
    )
    if sandbox is not None:
        response.pod_sandbox_status.CopyFrom(pod_sandbox_status(sandbox))
    return response


def _u64(value: int) -> pb.UInt64Value:
    return pb.UInt64Value(value=value)


def pod_sandbox_stats(s: model.PodSandboxStats, containers: dict[str, model.Container]) -> pb.PodSandboxStats:
    sb, ts = s.sandbox, s.timestamp
    interfaces = [
        pb.NetworkInterfaceUsage(name=i.name, rx_bytes=_u64(i.rx_bytes), rx_errors=_u64(i.rx_errors),
                                 tx_bytes=_u64(i.tx_bytes), tx_errors=_u64(i.tx_errors))
        for i in s.interfaces
    ]  # fmt: skip
    default = next((i for i in interfaces if i.name == "eth0"), interfaces[0] if interfaces else None)
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=sb.id, metadata=pod_sandbox_metadata(sb.config.metadata), labels=sb.config.labels,
            annotations=sb.config.annotations,
        ),
        linux=pb.LinuxPodSandboxStats(
            cpu=pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(s.cpu_usage_core_nano_seconds)),
            memory=pb.MemoryUsage(timestamp=ts, working_set_bytes=_u64(s.memory_working_set_bytes),
                                  usage_bytes=_u64(s.memory_usage_bytes)),
            network=pb.NetworkUsage(timestamp=ts, default_interface=default, interfaces=interfaces),
            process=pb.ProcessUsage(timestamp=ts, process_count=_u64(s.process_count)),
            containers=[container_stats(c, containers.get(c.container_id)) for c in s.containers],
        ),
    )  # fmt: skip


def pod_sandbox_stats_filter(m: pb.PodSandboxStatsFilter) -> PodSandboxFilter:
    return PodSandboxFilter(id=m.id, label_selector=dict(m.label_selector))


def metric_descriptor(d: metrics.MetricDescriptor) -> pb.MetricDescriptor:
    return pb.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys))


def _metric(m: metrics.Metric) -> pb.Metric:
    return pb.Metric(
        name=m.name, timestamp=m.timestamp, metric_type=pb.MetricType.Name(int(m.type)), label_values=m.label_values,
        value=_u64(m.value),
    )  # fmt: skip


def pod_sandbox_metrics(p: metrics.PodSandboxMetrics) -> pb.PodSandboxMetrics:
    return pb.PodSandboxMetrics(
        pod_sandbox_id=p.pod_sandbox_id,
        metrics=[_metric(m) for m in p.metrics],
        container_metrics=[
            pb.ContainerMetrics(container_id=c.container_id, metrics=[_metric(m) for m in c.metrics])
            for c in p.container_metrics
        ],
    )
