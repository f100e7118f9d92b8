"""The CRI gRPC layer end to end: the real server on a temporary unix socket, `CRIClient` on the other
side, and a small in-memory Runtime behind it. Proves error codes travel as podhost errors both ways,
streaming events, the socket's mode and ownership rules. The fake runtime stands in for
`podhost.runtime.runtime.Runtime` (both satisfy `RuntimeAPI`) only so that this thin layer is tested alone."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost import errors
from podhost.cri import api_pb2 as pb
from podhost.cri import api_pb2_grpc
from podhost.cri.client import CRIClient
from podhost.cri.runtime_service import RuntimeServicer
from podhost.cri.server import SOCKET_MODE, serve
from podhost.runtime import model
from tests.fake_runtime import FakeRuntime, serving
from tests.wait import wait_for


@pytest.fixture(params=["grpc", "h2"])
def env(request: pytest.FixtureRequest) -> Iterator[tuple[FakeRuntime, CRIClient, Path]]:
    """Each test against the real server twice: through grpcio, and through the CLI's own HTTP/2 client
    (`podhost.cri.h2`), which must give the same answers and raise the same errors."""
    with serving(request.param) as e:
        yield e


def pod_config(name: str = "web", attempt: int = 0) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid="uid-" + name, namespace="default", attempt=attempt),
        log_directory="/tmp/podlogs-" + name,
        labels={"app": name},
    )


def container_config(image: str = "busybox:1.36") -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image=image), log_path="app/0.log"
    )


def test_socket_is_0660_and_answers_version(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    _, client, sock = env
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == SOCKET_MODE
    v = client.version()
    assert (v.runtime_name, v.runtime_version, v.runtime_api_version) == ("podhost", "0.1.0-test", "v1")
    assert CRIClient("unix://" + str(sock)).version().runtime_name == "podhost"


def test_sandbox_lifecycle_and_error_codes(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    runtime, client, _ = env
    sid = client.run_pod_sandbox(pod_config(), "runc")
    with pytest.raises(errors.AlreadyExists, match="pod sandbox web"):
        client.run_pod_sandbox(pod_config())
    with pytest.raises(errors.InvalidArgument, match="PodSandboxConfig.metadata is required"):
        client.run_pod_sandbox(pb.PodSandboxConfig())
    with pytest.raises(errors.InvalidArgument, match="unknown runtime handler"):
        client.run_pod_sandbox(pod_config("other"), "kata")
    with pytest.raises(errors.NotFound, match="pod sandbox 'nope' not found"):
        client.pod_sandbox_status("nope")
    with pytest.raises(errors.InvalidArgument, match="pod_sandbox_id must not be empty"):
        client.stop_pod_sandbox("")

    status = client.pod_sandbox_status(sid[:13], verbose=True)
    assert status.status.id == sid and status.status.network.ip == "10.88.0.2" and "info" in status.info
    assert status.timestamp > 0
    assert [p.id for p in client.list_pod_sandbox()] == [sid]
    assert client.list_pod_sandbox(pb.PodSandboxFilter(label_selector={"app": "nope"})) == []
    client.stop_pod_sandbox(sid)
    notready = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))
    assert [p.id for p in client.list_pod_sandbox(notready)] == [sid]
    client.remove_pod_sandbox(sid)
    client.remove_pod_sandbox(sid)  # idempotent in the runtime: no error travels
    assert runtime.sandboxes == {}


def test_container_verbs(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    runtime, client, _ = env
    sid = client.run_pod_sandbox(pod_config())
    with pytest.raises(errors.NotFound):
        client.create_container("missing", container_config())
    with pytest.raises(errors.InvalidArgument, match="ContainerConfig.image.image must not be empty"):
        client.create_container(sid, container_config(image=""))
    cid = client.create_container(sid, container_config(), pod_config())
    client.start_container(cid)
    with pytest.raises(errors.FailedPrecondition, match="not in state CREATED"):
        client.start_container(cid)
    listed = client.list_containers(pb.ContainerFilter(pod_sandbox_id=sid[:5]))
    assert [c.id for c in listed] == [cid] and listed[0].state == pb.CONTAINER_RUNNING

    resp = client.exec_sync(cid, ["echo", "hi"], timeout=5)
    assert (resp.stdout, resp.stderr, resp.exit_code) == (b"out:echo hi", b"err\n", 3)
    assert runtime.exec_calls[-1] == (cid, ["echo", "hi"], 5)
    with pytest.raises(errors.RuntimeFailure, match="ZeroDivisionError: fake runtime bug"):
        client.exec_sync(cid, ["crash"])

    stats = client.container_stats(cid)
    assert stats.attributes.metadata.name == "app" and stats.memory.working_set_bytes.value == 1_500_000
    assert [s.attributes.id for s in client.list_container_stats()] == [cid]
    client.update_container_resources(cid, pb.LinuxContainerResources(cpu_shares=256))
    assert runtime.containers[cid].config.resources.cpu_shares == 256  # type: ignore[union-attr]
    client.reopen_container_log(cid)

    client.stop_container(cid, timeout=7)
    assert runtime.stopped == [(cid, 7)]
    st = client.container_status(cid, verbose=True)
    assert st.status.state == pb.CONTAINER_EXITED and st.status.exit_code == 137
    assert st.status.log_path == "/tmp/podlogs-web/app/0.log"
    client.remove_container(cid)
    with pytest.raises(errors.NotFound):
        client.container_status(cid)


def test_image_verbs_and_load(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    runtime, client, sock = env
    assert [i.repo_tags[0] for i in client.list_images()] == ["docker.io/library/busybox:1.36"]
    assert len(client.list_images("busybox:1.36")) == 1 and client.list_images("nginx") == []
    assert not client.image_status("nginx").HasField("image")
    assert client.image_status("busybox:1.36").image.size == 4_860_000
    assert client.pull_image("busybox:1.36") == "sha256:" + "b" * 64
    with pytest.raises(errors.NotFound, match="local store"):
        client.pull_image("nginx")
    with pytest.raises(errors.InvalidArgument, match="ImageSpec.image"):
        client.remove_image("")
    fs = client.image_fs_info().image_filesystems[0]
    assert fs.used_bytes.value == 4_860_000 and fs.inodes_used.value == 12

    with pytest.raises(errors.InvalidArgument, match="absolute path"):
        client.load_image("relative.tar")
    archive = sock.parent / "img.tar"
    archive.write_bytes(b"")
    assert [i.repo_tags[0] for i in client.load_image(str(archive))] == ["localhost/loaded:1"]


def test_status_and_unimplemented(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    _, client, _ = env
    status = client.status(verbose=True)
    assert [c.type for c in status.status.conditions] == ["RuntimeReady", "NetworkReady"]
    assert [h.name for h in status.runtime_handlers] == ["runc", "crun"]
    assert "config" in status.info
    assert client.runtime_config().linux.cgroup_driver == pb.CGROUPFS
    with pytest.raises(errors.Unimplemented, match="Exec: streaming"):
        client._call(client.runtime.Exec, pb.ExecRequest(container_id="x", cmd=["sh"]))
    with pytest.raises(errors.Unimplemented, match="PortForward"):
        client._call(client.runtime.PortForward, pb.PortForwardRequest(pod_sandbox_id="x"))


def test_container_events_stream_until_cancelled(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    runtime, client, _ = env
    sid = client.run_pod_sandbox(pod_config())
    received: list[pb.ContainerEventResponse] = []
    stream = client.get_container_events()

    def consume() -> None:
        for event in stream:
            received.append(event)
            if len(received) == 2:
                return

    reader = threading.Thread(target=consume)
    reader.start()
    wait_for("the server's subscription", lambda: runtime.events._subscribers, 5)
    cid = client.create_container(sid, container_config())
    runtime.events.publish(cid, model.ContainerEventType.CONTAINER_STARTED_EVENT, sid)
    reader.join(timeout=5)
    assert not reader.is_alive()
    stream.close()  # cancels the call; the server closes its subscription
    assert [e.container_event_type for e in received] == [
        pb.CONTAINER_CREATED_EVENT,
        pb.CONTAINER_STARTED_EVENT,
    ]
    assert received[1].container_id == cid and received[1].pod_sandbox_status.id == sid
    assert [c.id for c in received[1].containers_statuses] == [cid]
    wait_for("the subscription closed", lambda: runtime.events._subscribers == [], 5)


def test_stale_socket_is_replaced_and_a_live_one_refused() -> None:
    with serving() as (runtime, client, sock):
        with pytest.raises(errors.AlreadyExists, match="already listening"):
            serve(runtime, sock)  # type: ignore[arg-type]
        assert client.version().runtime_name == "podhost"
    root = Path(tempfile.mkdtemp(prefix="phcri-"))
    try:
        stale = root / "cri.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(stale))
        s.close()  # bound, never listened, closed: the file a crashed daemon leaves
        server = serve(FakeRuntime(root), stale)
        try:
            assert CRIClient(str(stale), timeout=5).version().runtime_name == "podhost"
        finally:
            server.stop(grace=None).wait()
        plain = root / "plain"
        plain.write_text("not a socket")
        with pytest.raises(errors.FailedPrecondition, match="not a socket"):
            serve(FakeRuntime(root), plain)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_unreachable_endpoint_is_unavailable() -> None:
    client = CRIClient("unix:///nonexistent/podhost-test.sock", timeout=2)
    with pytest.raises(errors.Unavailable, match="cannot reach the runtime at unix:///nonexistent"):
        client.version()
    with pytest.raises(errors.InvalidArgument):
        CRIClient("localhost:1234")


def test_every_runtime_rpc_is_served_by_podhost_code() -> None:
    base = api_pb2_grpc.RuntimeServiceServicer
    names = [n for n in vars(base) if not n.startswith("_")]
    assert names and all(getattr(RuntimeServicer, n) is not getattr(base, n) for n in names)


def test_deadline_exceeded_travels(env: tuple[FakeRuntime, CRIClient, Path]) -> None:
    runtime, client, _ = env
    release = threading.Event()
    runtime.version = lambda: (release.wait(5), ("podhost", "slow"))[1]  # type: ignore[method-assign]
    try:
        with pytest.raises(errors.DeadlineExceeded):
            client._call(client.runtime.Version, pb.VersionRequest(), 0.2)
    finally:
        release.set()


def test_the_http2_client_carries_large_requests_and_answers() -> None:
    """Requests over one 16 KiB frame and answers over HTTP/2's first 64 KiB window, on one connection."""
    with serving("h2") as (runtime, client, _):
        sids = [client.run_pod_sandbox(pod_config(f"p{i}-" + "x" * 200)) for i in range(400)]
        assert sorted(p.id for p in client.list_pod_sandbox()) == sorted(sids)  # ~200 KiB answer
        config = container_config()
        config.envs.add(key="BIG", value=b"v" * 100_000)
        cid = client.create_container(sids[0], config)
        assert runtime.containers[cid].config.envs[0][1] == "v" * 100_000
    with pytest.raises(errors.Unavailable, match="cannot reach the runtime"):
        CRIClient("unix:///nonexistent/podhost.sock", transport="h2").version()
