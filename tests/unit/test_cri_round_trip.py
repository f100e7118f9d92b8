"""Every field of every CRI message podhost takes into its model survives pb -> model -> record -> pb.

The requests are filled from their descriptors (every field set, to a value unlike any other), converted
by `podhost.cri.convert` into the model, written and read back as a record on disk is (JSON through
`to_dict`/`from_dict`), and built back into messages (the inverses below). No inverse can bring back a
value the model lost, and each value is unique, so a field that comes back equal was carried. A field
that does not come back must be in `UNSUPPORTED` with the reason podhost drops it: a field a new CRI
version adds fails this test until it is carried or listed. Enums are set to their last value, so a
value a new CRI version appends fails too (podhost refuses values it does not know).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.message import Message

from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.runtime import model
from podhost.runtime.container import signals

#: "Message.field" (descriptor names) -> why podhost does not carry it.
UNSUPPORTED: dict[str, str] = {
    "PodSandboxConfig.windows": "podhost runs Linux pods only",
    "ContainerConfig.windows": "podhost runs Linux containers only",
    "LinuxPodSandboxConfig.overhead": "informative: linux.resources, which size the pod cgroup, include it",
    "LinuxSandboxSecurityContext.selinux_options": "no SELinux: these hosts run without it",
    "LinuxContainerSecurityContext.selinux_options": "no SELinux: these hosts run without it",
    "LinuxSandboxSecurityContext.apparmor": "no AppArmor profiles are applied",
    "LinuxContainerSecurityContext.apparmor": "no AppArmor profiles are applied",
    "LinuxContainerSecurityContext.apparmor_profile": "no AppArmor profiles are applied (deprecated field)",
    "LinuxSandboxSecurityContext.seccomp_profile_path": "deprecated spelling, read only without `seccomp`",
    "LinuxContainerSecurityContext.seccomp_profile_path": "deprecated spelling, read only without `seccomp`",
    "LinuxContainerResources.hugepage_limits": "hugetlb limits are not applied",
    "ContainerConfig.CDI_devices": "no CDI registry",
    "ImageSpec.annotations": "images are resolved by reference alone",
    "ImageSpec.user_specified_image": "images are resolved by reference alone",
    "ImageSpec.runtime_handler": "no per-image runtime handler: the sandbox's handler runs every container",
    "ImageSpec.image_ref": "the runtime's to set (the image's id), never taken from a request",
    "Mount.uidMappings": "no idmapped bind mounts (the pod's user namespace idmaps only the image layers)",
    "Mount.gidMappings": "no idmapped bind mounts (the pod's user namespace idmaps only the image layers)",
    "Mount.mount_options": "mount options are not taken from CRI",
}


def filled(cls: type[Message]) -> Message:
    """A `cls` with every field set, recursively, each to a value no other field has."""
    numbers = itertools.count(1)

    def fill(msg: Message) -> None:
        for fd in msg.DESCRIPTOR.fields:
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                getattr(msg, fd.name)[f"{fd.name}-key"] = value(fd.message_type.fields_by_name["value"])
            elif fd.is_repeated and fd.message_type is not None:
                fill(getattr(msg, fd.name).add())
            elif fd.is_repeated:
                getattr(msg, fd.name).extend([value(fd), value(fd)])
            elif fd.message_type is not None:
                fill(getattr(msg, fd.name))
            else:
                setattr(msg, fd.name, value(fd))

    def value(fd: Any) -> Any:
        n = next(numbers)
        if fd.enum_type is not None:  # the last value: never the proto3 default
            return fd.enum_type.values[-1].number
        if fd.type == fd.TYPE_BOOL:
            return True
        if fd.type == fd.TYPE_STRING:
            return f"{fd.name}-{n}"
        if fd.type == fd.TYPE_BYTES:
            return f"{fd.name}-{n}".encode()
        return n

    msg = cls()
    fill(msg)
    return msg


def differences(a: Message, b: Message, path: str = "") -> Iterator[str]:
    """The fields (as "Message.field" paths from the top) where `a` and `b` differ, unsupported ones aside."""
    for fd in a.DESCRIPTOR.fields:
        if f"{a.DESCRIPTOR.name}.{fd.name}" in UNSUPPORTED:
            continue
        where = f"{path or a.DESCRIPTOR.name}.{fd.name}"
        x, y = getattr(a, fd.name), getattr(b, fd.name)
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            if fd.is_repeated:
                if len(x) != len(y):
                    yield where
                for i, (u, v) in enumerate(zip(x, y, strict=False)):
                    yield from differences(u, v, f"{where}[{i}]")
            elif a.HasField(fd.name) != b.HasField(fd.name):
                yield where
            else:
                yield from differences(x, y, where)
        elif x != y:
            yield where


def unsupported_seen(cls: type[Message]) -> set[str]:
    """The UNSUPPORTED entries `cls` reaches."""
    seen: set[str] = set()

    def walk(d: Any) -> None:
        for fd in d.fields:
            key = f"{d.name}.{fd.name}"
            if key in UNSUPPORTED:
                seen.add(key)
            elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
                walk(fd.message_type)

    walk(cls.DESCRIPTOR)
    return seen


def as_record(obj: Any) -> Any:
    """`obj` written to disk and read back, as `podhost.runtime.state` does with the record holding it."""
    return model.from_dict(type(obj), json.loads(json.dumps(model.to_dict(obj))))


def seccomp_message(c: model.PodSandboxConfig | model.ContainerSecurityContext) -> pb.SecurityProfile | None:
    if not c.seccomp_profile_type:
        return None
    return pb.SecurityProfile(profile_type=c.seccomp_profile_type, localhost_ref=c.seccomp_localhost_ref)


def sandbox_config_message(c: model.PodSandboxConfig) -> pb.PodSandboxConfig:
    """The inverse of `convert.pod_sandbox_config`: same-named fields, then the deliberate differences."""
    out = pb.PodSandboxConfig()
    sc = out.linux.security_context
    convert._to_pb(c, out, out.linux, sc, skip=("namespace_options",))
    sc.namespace_options.CopyFrom(convert.pb_namespace_option(c.namespace_options))
    if (seccomp := seccomp_message(c)) is not None:
        sc.seccomp.CopyFrom(seccomp)
    return out


def container_config_message(c: model.ContainerConfig) -> pb.ContainerConfig:
    """The inverse of `convert.container_config`."""
    out = pb.ContainerConfig(image=pb.ImageSpec(image=c.image))
    convert._to_pb(c, out, out.linux, skip=("envs", "mounts", "security_context", "stop_signal"))
    out.stop_signal = pb.Signal.Value(signals.to_cri(c.stop_signal)) if c.stop_signal else 0  # type: ignore[assignment]
    out.envs.extend(pb.KeyValue(key=k, value=v.encode("utf-8", "surrogateescape")) for k, v in c.envs)
    out.mounts.extend(convert.pb_mount(x) for x in c.mounts)
    sc = out.linux.security_context
    convert._to_pb(c.security_context, sc, skip=("namespace_options",))
    sc.namespace_options.CopyFrom(convert.pb_namespace_option(c.security_context.namespace_options))
    if (seccomp := seccomp_message(c.security_context)) is not None:
        sc.seccomp.CopyFrom(seccomp)
    return out


ROUND_TRIPS: dict[str, tuple[type[Message], Callable[[Any], Any], Callable[[Any], Message]]] = {
    "RunPodSandbox": (pb.PodSandboxConfig, convert.pod_sandbox_config, sandbox_config_message),
    "CreateContainer": (pb.ContainerConfig, convert.container_config, container_config_message),
    "UpdateContainerResources": (
        pb.LinuxContainerResources,
        convert.linux_container_resources,
        lambda r: convert.to_message(pb.LinuxContainerResources, r),
    ),
    "PullImage": (
        pb.AuthConfig,
        lambda a: convert.auth_config(pb.PullImageRequest(auth=a)),
        lambda a: convert.to_message(pb.AuthConfig, a),
    ),
    "ListPodSandbox": (
        pb.PodSandboxFilter,
        convert.pod_sandbox_filter,
        lambda f: convert.to_message(pb.PodSandboxFilter, f),
    ),
    "ListPodSandboxStats": (
        pb.PodSandboxStatsFilter,
        convert.pod_sandbox_filter,
        lambda f: convert.to_message(pb.PodSandboxStatsFilter, f),
    ),
    "ListContainers": (
        pb.ContainerFilter,
        convert.container_filter,
        lambda f: convert.to_message(pb.ContainerFilter, f),
    ),
    "ListContainerStats": (
        pb.ContainerStatsFilter,
        convert.container_filter,
        lambda f: convert.to_message(pb.ContainerStatsFilter, f),
    ),
}


@pytest.mark.parametrize("verb", ROUND_TRIPS)
def test_every_cri_field_round_trips_through_the_model_and_its_record(verb: str) -> None:
    cls, to_model, to_pb = ROUND_TRIPS[verb]
    sent = filled(cls)
    back = to_pb(as_record(to_model(sent)))
    assert list(differences(sent, back)) == []


@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_each_unsupported_field_is_in_cri_and_really_dropped(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list does not rot: without its entry, the field fails the round trip as a new CRI field would."""
    reaching = [trip for trip in ROUND_TRIPS.values() if key in unsupported_seen(trip[0])]
    assert reaching, f"{key} is in no message podhost accepts"
    monkeypatch.delitem(UNSUPPORTED, key)
    for cls, to_model, to_pb in reaching:
        sent = filled(cls)
        found = list(differences(sent, to_pb(as_record(to_model(sent)))))
        assert any(path.endswith("." + key.split(".")[1]) for path in found), found
