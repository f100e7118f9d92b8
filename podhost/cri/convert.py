"""The one edge between CRI protobuf messages and `podhost.runtime.model`.

Pure functions only: requests become model specs (validated where CRI requires a field), model records
become response messages. Nothing here does I/O, calls the runtime or reads the clock; callers pass the
time in when a response carries one.

The model's specs use CRI's field names, so one pair of functions copies them (`_from_pb`, `_to_pb`: a
field both sides name the same copies itself, nested messages and lists recursively) and the code here
is only the deliberate differences. tests/unit/test_cri_round_trip.py walks every field of every CRI
message podhost accepts, from the descriptors, through pb -> model -> record JSON -> model -> pb: a field
podhost drops must be listed there with its reason, so a new CRI field fails until it is decided.

Rules kept here so they are kept once:
- `NamespaceMode` values are copied exactly, also when the message is absent: proto3 reads an absent
  mode as 0, which is POD, and that is what containerd and CRI-O do with it.
- The optional int64 wrappers (`run_as_user {value}`) become `int | None`; None means "not set". So does
  any message the model holds as `X | None` (`dns_config`, `resources`, `capabilities`).
- Empty repeated `masked_paths` / `readonly_paths` become None ("the runtime's defaults"): proto3 cannot
  tell "unset" from "empty", and callers that want none at all ask for `privileged`.
- CRI enums are open: a value the model's enum lacks is refused by name, as containerd and CRI-O do.
- Verbose `info` maps hold one key, "info", whose value is a JSON document (what crictl inspect parses).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from podhost.cri import api_pb2 as pb
from podhost.cri.streaming import requests as streaming
from podhost.errors import InvalidArgument
from podhost.runtime import metrics, model
from podhost.runtime.container import signals
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

T = TypeVar("T")
M = TypeVar("M", bound=Message)

# --- the same-named fields, both ways ------------------------------------------------------------------


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether the model allows None)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _is_map(fd: Any) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _scalar(hint: Any, msg: Message, fd: Any) -> Any:
    """A scalar field as the model holds it: an enum as the model's member, or its CRI name where the model
    holds a string (a value the model lacks is refused by name); anything else as it is."""
    value = getattr(msg, fd.name)
    if fd.enum_type is None:
        return value
    cri = fd.enum_type.values_by_number.get(value)
    name = cri.name if cri is not None else None
    if hint is str:
        known, found = [v.name for v in fd.enum_type.values], name
    else:
        known, found = [m.name for m in hint], next((m for m in hint if m.value in (value, name)), None)
    if found is None:
        where = f"{msg.DESCRIPTOR.name}.{fd.name}"
        raise InvalidArgument(
            f"{where}: {fd.enum_type.name} {value} is not implemented ({' or '.join(known)})"
        )
    return found


def _set_scalar(msg: Message, fd: Any, value: Any) -> None:
    if fd.enum_type is not None and not isinstance(value, int):
        value = fd.enum_type.values_by_name[str(value)].number
    setattr(msg, fd.name, value)


@functools.cache
def _plan(key: tuple[Any, ...]) -> list[tuple[str, int, Any, str, Any, bool]]:
    """How each field of dataclass `key[0]` maps to the messages of descriptors `key[1:]`: (name, which
    message, its field, how, the model's type, whether None is allowed). Worked out once per key, as
    resolving type hints is most of a conversion's cost. A multi-field message the model holds as a
    plain value (`ContainerConfig.image`) is not same-named data: the caller converts it."""
    cls, *descriptors = key
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        i = next((i for i, d in enumerate(descriptors) if f.name in d.fields_by_name), None)
        if i is None:
            continue
        fd = descriptors[i].fields_by_name[f.name]
        hint, optional = _optional(hints[f.name])
        if _is_map(fd):
            how = "map"
        elif fd.is_repeated:
            how = "messages" if fd.message_type else "list"
            hint = typing.get_args(hint)[0]
        elif fd.message_type is not None:
            how = "message" if dataclasses.is_dataclass(hint) else "wrapper"
            if how == "wrapper" and len(fd.message_type.fields) != 1:
                continue
        else:
            how = "enum" if fd.enum_type is not None else "value"
        plan.append((f.name, i, fd, how, hint, optional))
    return plan


def _from_pb(cls: type[T], *msgs: Message, **given: Any) -> T:
    """`cls` from the same-named fields of `msgs` (the first that has the name wins); `given` holds the
    fields that differ on purpose, converted by the caller. A message whose model type is no dataclass
    is a one-field wrapper (`Int64Value`, `PodSandboxStateValue`): the model holds its field."""
    for name, i, fd, how, hint, optional in _plan((cls, *(m.DESCRIPTOR for m in msgs))):
        if name in given:
            continue
        msg = msgs[i]
        value = getattr(msg, name)
        if how == "value":
            given[name] = value
        elif how == "map":
            given[name] = dict(value)
        elif how in ("list", "messages"):
            items = [_from_pb(hint, v) for v in value] if how == "messages" else list(value)
            given[name] = None if optional and not items else items
        elif how == "enum":
            given[name] = _scalar(hint, msg, fd)
        elif optional and not msg.HasField(name):
            given[name] = None
        elif how == "message":
            given[name] = _from_pb(hint, value)
        else:
            given[name] = _scalar(hint, value, value.DESCRIPTOR.fields[0])
    return cls(**given)


def _to_pb(obj: Any, *msgs: Message, skip: Iterable[str] = ()) -> None:
    """Fill `msgs` (the first that has the name wins) from the same-named fields of `obj`: the inverse of
    `_from_pb`. None leaves a field unset; `skip` names the fields the caller sets itself."""
    for name, i, fd, how, _, _ in _plan((type(obj), *(m.DESCRIPTOR for m in msgs))):
        value = getattr(obj, name)
        if value is None or name in skip:
            continue
        msg = msgs[i]
        if how == "value":
            setattr(msg, name, value)
        elif how == "enum":
            _set_scalar(msg, fd, value)
        elif how == "map":
            getattr(msg, name).update(value)
        elif how == "list":
            getattr(msg, name).extend(value)
        elif how == "messages":
            for v in value:
                _to_pb(v, getattr(msg, name).add())
        else:
            target = getattr(msg, name)
            target.SetInParent()
            if how == "message":
                _to_pb(value, target)
            else:
                _set_scalar(target, target.DESCRIPTOR.fields[0], value)


def to_message(cls: type[M], obj: Any) -> M:
    """A `cls` from the same-named fields of `obj` (a model spec, a filter, a stats record...)."""
    out = cls()
    _to_pb(obj, out)
    return out


# --- requests -> model ---------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(message)


def required_id(value: str, field: str) -> str:
    """CRI ids are required wherever a verb names one object; an empty one is the caller's mistake."""
    _require(value != "", f"{field} must not be empty")
    return value


def namespace_option(m: pb.NamespaceOption) -> model.NamespaceOption:
    """The user namespace is NODE (the host's) when `userns_options` is absent, not proto3's 0 (POD)."""
    userns = _from_pb(model.UserNamespace, m.userns_options) if m.HasField("userns_options") else None
    return _from_pb(model.NamespaceOption, m, userns=userns or model.UserNamespace())


def pb_namespace_option(m: model.NamespaceOption) -> pb.NamespaceOption:
    """The pod's namespaces as PodSandboxStatus reports them, the user namespace and its mappings too."""
    out = to_message(pb.NamespaceOption, m)
    _to_pb(m.userns, out.userns_options)
    out.userns_options.SetInParent()
    return out


def _seccomp(m: pb.LinuxSandboxSecurityContext | pb.LinuxContainerSecurityContext) -> dict[str, str]:
    """The profile type and localhost ref from the `seccomp` message, else from the deprecated path."""
    if m.HasField("seccomp"):
        kind = pb.SecurityProfile.ProfileType.Name(m.seccomp.profile_type)
        ref = m.seccomp.localhost_ref if kind == "Localhost" else ""
    elif m.seccomp_profile_path in ("runtime/default", "docker/default"):
        kind, ref = "RuntimeDefault", ""
    elif m.seccomp_profile_path == "unconfined":
        kind, ref = "Unconfined", ""
    elif m.seccomp_profile_path.startswith("localhost/"):
        kind, ref = "Localhost", m.seccomp_profile_path.removeprefix("localhost/")
    else:
        _require(
            m.seccomp_profile_path == "", f"seccomp_profile_path: unknown profile {m.seccomp_profile_path!r}"
        )
        kind, ref = "", ""
    return {"seccomp_profile_type": kind, "seccomp_localhost_ref": ref}


def linux_container_resources(m: pb.LinuxContainerResources) -> model.LinuxContainerResources:
    return _from_pb(model.LinuxContainerResources, m)


def update_resources(m: pb.UpdateContainerResourcesRequest) -> model.LinuxContainerResources:
    _require(
        m.HasField("linux"),
        "UpdateContainerResourcesRequest.linux is required (podhost runs Linux containers)",
    )
    return linux_container_resources(m.linux)


def pod_sandbox_config(m: pb.PodSandboxConfig, *, validate: bool = True) -> model.PodSandboxConfig:
    """A RunPodSandbox config. `validate=False` for the copy CreateContainer carries, which is informative.
    The model flattens `linux` and `linux.security_context` into the config."""
    if validate:
        _require(m.HasField("metadata"), "PodSandboxConfig.metadata is required")
        _require(m.metadata.name != "", "PodSandboxConfig.metadata.name must not be empty")
    sc = m.linux.security_context
    return _from_pb(
        model.PodSandboxConfig,
        m,
        m.linux,
        sc,
        namespace_options=namespace_option(sc.namespace_options),
        **_seccomp(sc),
    )


def mount(m: pb.Mount) -> model.Mount:
    """`image` is the image volume's reference; its `image_ref` is the runtime's to set (the image's id)."""
    return _from_pb(model.Mount, m, image=m.image.image if m.HasField("image") else "")


def pb_mount(m: model.Mount) -> pb.Mount:
    out = pb.Mount()
    _to_pb(m, out, skip=("image",))
    if m.image:
        out.image.image, out.image.image_ref = m.image, m.image_ref
    return out


def container_security_context(m: pb.LinuxContainerSecurityContext) -> model.ContainerSecurityContext:
    # CRI: run_as_group "should only be specified when run_as_user or run_as_username is specified;
    # otherwise, the runtime MUST error" (containerd and CRI-O reject it the same way).
    _require(
        not m.HasField("run_as_group") or m.HasField("run_as_user") or m.run_as_username != "",
        "LinuxContainerSecurityContext.run_as_group is set without run_as_user or run_as_username",
    )
    return _from_pb(
        model.ContainerSecurityContext,
        m,
        namespace_options=namespace_option(m.namespace_options),
        **_seccomp(m),
    )


def container_config(m: pb.ContainerConfig) -> model.ContainerConfig:
    _require(m.HasField("metadata"), "ContainerConfig.metadata is required")
    _require(m.metadata.name != "", "ContainerConfig.metadata.name must not be empty")
    _require(m.image.image != "", "ContainerConfig.image.image must not be empty")
    return _from_pb(
        model.ContainerConfig,
        m,
        m.linux,
        image=m.image.image,
        envs=[(kv.key, env_value(kv.value)) for kv in m.envs],
        mounts=[mount(x) for x in m.mounts],
        security_context=container_security_context(m.linux.security_context),
        stop_signal=signals.from_cri(pb.Signal.Name(m.stop_signal)),
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
    found = _from_pb(AuthConfig, m.auth)
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


def pod_sandbox_filter(m: pb.PodSandboxFilter | pb.PodSandboxStatsFilter) -> PodSandboxFilter:
    return _from_pb(PodSandboxFilter, m)


def container_filter(m: pb.ContainerFilter | pb.ContainerStatsFilter) -> ContainerFilter:
    return _from_pb(ContainerFilter, m)


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


def pod_sandbox(s: model.PodSandbox) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=s.id,
        metadata=to_message(pb.PodSandboxMetadata, s.config.metadata),
        state=s.state.value,
        created_at=s.created_at,
        labels=s.config.labels,
        annotations=s.config.annotations,
        runtime_handler=s.runtime_handler,
    )


def pod_sandbox_status(s: model.PodSandbox) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=s.id,
        metadata=to_message(pb.PodSandboxMetadata, s.config.metadata),
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


def pod_sandbox_info(s: model.PodSandbox, network: dict[str, Any]) -> dict[str, str]:
    """What `crictl inspectp` shows beyond the status: the runtime's own record of the sandbox."""
    return _info(
        {
            "pid": s.pid,
            "stage": s.stage,
            "cgroup": s.cgroup,
            "namespacePaths": s.ns_paths,
            "netNamespacePath": s.netns_path,
            "network": network,
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
    network: dict[str, Any] | None = None,
    containers: Iterable[model.Container] = (),
    timestamp: int = 0,
) -> pb.PodSandboxStatusResponse:
    return pb.PodSandboxStatusResponse(
        status=pod_sandbox_status(s),
        info=pod_sandbox_info(s, network or {}) if verbose else {},
        containers_statuses=[container_status(c) for c in containers],
        timestamp=timestamp,
    )


def container(c: model.Container) -> pb.Container:
    return pb.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=to_message(pb.ContainerMetadata, c.config.metadata),
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
        metadata=to_message(pb.ContainerMetadata, c.config.metadata),
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
        stop_signal=signals.to_cri(c.stop_signal),  # type: ignore[arg-type]  # the one it is stopped with
    )
    if c.config.resources is not None:
        status.resources.linux.SetInParent()
        _to_pb(c.config.resources, status.resources.linux)
    if c.user is not None:
        # The ids of the container's process as podhost resolved them into the OCI process.user (image
        # /etc/passwd and /etc/group per SupplementalGroupsPolicy), as containerd reports them.
        _to_pb(c.user, status.user.linux)
        status.user.linux.SetInParent()
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
    return pb.RuntimeStatus(conditions=[to_message(pb.RuntimeCondition, c) for c in conditions])


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
        metadata=to_message(pb.ContainerMetadata, c.config.metadata),
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
            id=sb.id, metadata=to_message(pb.PodSandboxMetadata, sb.config.metadata), labels=sb.config.labels,
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


def metric_descriptor(d: metrics.MetricDescriptor) -> pb.MetricDescriptor:
    return to_message(pb.MetricDescriptor, d)


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
