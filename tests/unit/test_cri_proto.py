"""The generated runtime.v1 messages carry upstream's names and field numbers (k8s.io/cri-api v1)."""

from __future__ import annotations

import pytest

from podhost.cri import admin_pb2, api_pb2


def numbers(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]


# Numbers read from k8s.io/cri-api pkg/apis/runtime/v1/api.proto.
UPSTREAM = {
    api_pb2.PodSandboxConfig: {
        "metadata": 1,
        "hostname": 2,
        "log_directory": 3,
        "dns_config": 4,
        "port_mappings": 5,
        "labels": 6,
        "annotations": 7,
        "linux": 8,
        "windows": 9,
    },
    api_pb2.ContainerConfig: {
        "metadata": 1,
        "image": 2,
        "command": 3,
        "args": 4,
        "working_dir": 5,
        "envs": 6,
        "mounts": 7,
        "devices": 8,
        "labels": 9,
        "annotations": 10,
        "log_path": 11,
        "stdin": 12,
        "stdin_once": 13,
        "tty": 14,
        "linux": 15,
        "windows": 16,
        "CDI_devices": 17,
        "stop_signal": 18,
    },
    api_pb2.NamespaceOption: {"network": 1, "pid": 2, "ipc": 3, "target_id": 4, "userns_options": 5},
    api_pb2.LinuxSandboxSecurityContext: {
        "namespace_options": 1,
        "selinux_options": 2,
        "run_as_user": 3,
        "readonly_rootfs": 4,
        "supplemental_groups": 5,
        "privileged": 6,
        "seccomp_profile_path": 7,
        "run_as_group": 8,
        "seccomp": 9,
        "apparmor": 10,
        "supplemental_groups_policy": 11,
    },
    api_pb2.LinuxContainerSecurityContext: {
        "capabilities": 1,
        "privileged": 2,
        "namespace_options": 3,
        "selinux_options": 4,
        "run_as_user": 5,
        "run_as_username": 6,
        "readonly_rootfs": 7,
        "supplemental_groups": 8,
        "apparmor_profile": 9,
        "seccomp_profile_path": 10,
        "no_new_privs": 11,
        "run_as_group": 12,
        "masked_paths": 13,
        "readonly_paths": 14,
        "seccomp": 15,
        "apparmor": 16,
        "supplemental_groups_policy": 17,
    },
    api_pb2.PodSandboxStatus: {
        "id": 1,
        "metadata": 2,
        "state": 3,
        "created_at": 4,
        "network": 5,
        "linux": 6,
        "labels": 7,
        "annotations": 8,
        "runtime_handler": 9,
    },
    api_pb2.ContainerStatus: {
        "id": 1,
        "metadata": 2,
        "state": 3,
        "created_at": 4,
        "started_at": 5,
        "finished_at": 6,
        "exit_code": 7,
        "image": 8,
        "image_ref": 9,
        "reason": 10,
        "message": 11,
        "labels": 12,
        "annotations": 13,
        "mounts": 14,
        "log_path": 15,
        "resources": 16,
        "image_id": 17,
        "user": 18,
        "stop_signal": 19,
    },
    api_pb2.Container: {
        "id": 1,
        "pod_sandbox_id": 2,
        "metadata": 3,
        "image": 4,
        "image_ref": 5,
        "state": 6,
        "created_at": 7,
        "labels": 8,
        "annotations": 9,
        "image_id": 10,
    },
    api_pb2.Mount: {
        "container_path": 1,
        "host_path": 2,
        "readonly": 3,
        "selinux_relabel": 4,
        "propagation": 5,
        "uidMappings": 6,
        "gidMappings": 7,
        "recursive_read_only": 8,
        "image": 9,
        "image_sub_path": 10,
        "mount_options": 11,
    },
    api_pb2.ImageSpec: {
        "image": 1,
        "annotations": 2,
        "user_specified_image": 18,
        "runtime_handler": 19,
        "image_ref": 20,
    },
    api_pb2.Image: {
        "id": 1,
        "repo_tags": 2,
        "repo_digests": 3,
        "size": 4,
        "uid": 5,
        "username": 6,
        "spec": 7,
        "pinned": 8,
    },
    api_pb2.LinuxContainerResources: {
        "cpu_period": 1,
        "cpu_quota": 2,
        "cpu_shares": 3,
        "memory_limit_in_bytes": 4,
        "oom_score_adj": 5,
        "cpuset_cpus": 6,
        "cpuset_mems": 7,
        "hugepage_limits": 8,
        "unified": 9,
        "memory_swap_limit_in_bytes": 10,
    },
    api_pb2.ContainerEventResponse: {
        "container_id": 1,
        "container_event_type": 2,
        "created_at": 3,
        "pod_sandbox_status": 4,
        "containers_statuses": 5,
    },
    api_pb2.PodSandboxStatusResponse: {"status": 1, "info": 2, "containers_statuses": 3, "timestamp": 4},
    api_pb2.ExecSyncRequest: {"container_id": 1, "cmd": 2, "timeout": 3},
    api_pb2.ExecSyncResponse: {"stdout": 1, "stderr": 2, "exit_code": 3},
    api_pb2.PortMapping: {"protocol": 1, "container_port": 2, "host_port": 3, "host_ip": 4},
    api_pb2.PodSandboxMetadata: {"name": 1, "uid": 2, "namespace": 3, "attempt": 4},
    api_pb2.StatusResponse: {"status": 1, "info": 2, "runtime_handlers": 3, "features": 4},
    api_pb2.ContainerStats: {"attributes": 1, "cpu": 2, "memory": 3, "writable_layer": 4, "swap": 5, "io": 6},
    api_pb2.Namespace: {"options": 2},
}


@pytest.mark.parametrize("message", list(UPSTREAM), ids=lambda m: m.__name__)
def test_field_numbers_match_upstream(message: type) -> None:
    assert numbers(message) == UPSTREAM[message]


def test_package_and_enum_values() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    assert admin_pb2.DESCRIPTOR.package == "podhost.v1"
    assert (api_pb2.POD, api_pb2.CONTAINER, api_pb2.NODE, api_pb2.TARGET) == (0, 1, 2, 3)
    assert (api_pb2.SANDBOX_READY, api_pb2.SANDBOX_NOTREADY) == (0, 1)
    assert [api_pb2.ContainerState.Name(i) for i in range(4)] == [
        "CONTAINER_CREATED",
        "CONTAINER_RUNNING",
        "CONTAINER_EXITED",
        "CONTAINER_UNKNOWN",
    ]
    assert api_pb2.Signal.Value("SIGNAL_SIGKILL") == 13 and api_pb2.Signal.Value("SIGNAL_SIGRTMAX") == 65


RUNTIME_RPCS = {
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
    "UpdatePodSandboxResources",
}
IMAGE_RPCS = {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}


def test_services_have_every_rpc() -> None:
    runtime = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    images = api_pb2.DESCRIPTOR.services_by_name["ImageService"]
    assert set(runtime.methods_by_name) >= RUNTIME_RPCS
    assert set(images.methods_by_name) >= IMAGE_RPCS
    events = runtime.methods_by_name["GetContainerEvents"]
    assert (
        events.input_type.name == "GetEventsRequest" and events.output_type.name == "ContainerEventResponse"
    )
    load = admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods_by_name["LoadImage"]
    assert load.output_type.fields_by_name["images"].message_type.full_name == "runtime.v1.Image"


def test_env_values_are_bytes_on_the_wire_and_compatible_with_strings() -> None:
    # Upstream changed KeyValue.value from string to bytes; both encode as length-delimited field 2.
    kv = api_pb2.KeyValue(key="A", value=b"\xff\x00x")
    assert api_pb2.KeyValue.FromString(kv.SerializeToString()).value == b"\xff\x00x"
    assert kv.SerializeToString() == b"\n\x01A\x12\x03\xff\x00x"


def test_committed_stubs_match_the_protos(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The generated modules in the repository are what `python -m podhost.cri.codegen` makes now."""
    pytest.importorskip("grpc_tools")
    from grpc_tools import protoc

    from podhost.cri import codegen

    for name in codegen.PROTOS:
        args = [
            a.replace(str(codegen.PACKAGE_ROOT), str(tmp_path)) if "_out=" in a else a
            for a in codegen.protoc_args(name)
        ]
        assert protoc.main(args) == 0
        for out in codegen.outputs(name):
            generated = tmp_path / "podhost" / "cri" / out.name
            assert generated.read_text() == out.read_text(), (
                f"{out.name} is stale: run python -m podhost.cri.codegen"
            )
