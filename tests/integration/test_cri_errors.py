"""Invalid CRI requests against the real daemon get the right gRPC codes and change nothing."""

from __future__ import annotations

import threading

import grpc
import pytest

from podhost.cri import api_pb2 as pb
from podhost.cri import api_pb2_grpc
from tests.instance import Instance

pytestmark = pytest.mark.root


def raw_stub(podhost: Instance) -> api_pb2_grpc.RuntimeServiceStub:
    return api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix://" + str(podhost.config.socket)))


def code_of(call, request) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code()


def snapshot(podhost: Instance) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    pods = sorted((p.id, p.state) for p in podhost.client.list_pod_sandbox())
    ctrs = sorted((c.id, c.state) for c in podhost.client.list_containers())
    return pods, ctrs


def test_invalid_requests_get_their_codes_and_change_nothing(podhost: Instance) -> None:
    stub = raw_stub(podhost)
    pod = podhost.pod_config("errs")
    pod_id = podhost.client.run_pod_sandbox(pod)
    before = snapshot(podhost)

    assert code_of(stub.RunPodSandbox, pb.RunPodSandboxRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.RunPodSandbox, pb.RunPodSandboxRequest(config=pod)) == grpc.StatusCode.ALREADY_EXISTS
    unknown = "f" * 64
    assert (
        code_of(stub.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id=unknown))
        == grpc.StatusCode.NOT_FOUND
    )
    # Stop and Remove are idempotent in the CRI: an unknown id is OK (as in containerd 2 and CRI-O).
    stub.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=unknown), timeout=30)
    stub.StopContainer(pb.StopContainerRequest(container_id=unknown), timeout=30)
    assert (
        code_of(stub.ContainerStatus, pb.ContainerStatusRequest(container_id=unknown))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        code_of(stub.StartContainer, pb.StartContainerRequest(container_id=unknown))
        == grpc.StatusCode.NOT_FOUND
    )
    ctr = podhost.container_config("c", ["sleep", "3600"])
    no_meta = pb.ContainerConfig(image=pb.ImageSpec(image="localhost/podhost/busybox:latest"))
    assert (
        code_of(
            stub.CreateContainer,
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=no_meta, sandbox_config=pod),
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        code_of(
            stub.CreateContainer,
            pb.CreateContainerRequest(pod_sandbox_id=unknown, config=ctr, sandbox_config=pod),
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        code_of(stub.ExecSync, pb.ExecSyncRequest(container_id=unknown, cmd=["true"]))
        == grpc.StatusCode.NOT_FOUND
    )
    assert snapshot(podhost) == before

    cid = podhost.client.create_container(pod_id, ctr, pod)
    assert (
        code_of(
            stub.CreateContainer,
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr, sandbox_config=pod),
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        code_of(stub.ExecSync, pb.ExecSyncRequest(container_id=cid, cmd=["true"]))
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    podhost.client.stop_pod_sandbox(pod_id)
    stopped = snapshot(podhost)
    late = podhost.container_config("late", ["sleep", "3600"])
    assert (
        code_of(
            stub.CreateContainer,
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=late, sandbox_config=pod),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert snapshot(podhost) == stopped
    # Removing what is already gone is not an error (CRI: idempotent).
    stub.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=unknown), timeout=30)
    stub.RemoveContainer(pb.RemoveContainerRequest(container_id=unknown), timeout=30)


def test_a_retried_run_pod_sandbox_in_flight_gets_the_same_sandbox(podhost: Instance) -> None:
    """The kubelet retries RunPodSandbox after its deadline; the retry must join the first call."""
    pod = podhost.pod_config("retried")
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(podhost.client.run_pod_sandbox(pod))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    assert [p.id for p in podhost.client.list_pod_sandbox()] == results[:1]
