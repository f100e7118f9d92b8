"""The CRI gRPC layer end to end: the real server on a temporary unix socket, `CRIClient` on the other
side, and a small in-memory Runtime behind it. Proves error codes travel as podhost errors both ways,
streaming events, the socket's mode and ownership rules. The fake runtime stands in for
`podhost.runtime.runtime.Runtime` only so that this thin layer is tested alone."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost import errors
from podhost.config import Config
from podhost.cri import api_pb2 as pb
from podhost.cri import api_pb2_grpc
from podhost.cri.client import CRIClient
from podhost.cri.runtime_service import RuntimeServicer
from podhost.cri.server import SOCKET_MODE, serve
from podhost.runtime import model
from podhost.runtime.events import EventBus, Subscription
from podhost.runtime.runtime import (
    ContainerFilter,
    ContainerStats,
    ExecResult,
    PodSandboxFilter,
    RuntimeCondition,
)
from tests.wait import wait_for


class FakeRuntime:
    """In-memory stand-in with the `Runtime` facade's method names and error behaviour."""

    def __init__(self, root: Path) -> None:
        self.config = Config.load(root=root)
        self.sandboxes: dict[str, model.PodSandbox] = {}
        self.containers: dict[str, model.Container] = {}
        self.images = {
            "sha256:" + "b" * 64: model.Image(
                id="sha256:" + "b" * 64, repo_tags=["docker.io/library/busybox:1.36"], size=4_860_000
            )
        }
        self.events = EventBus()
        self._ids = itertools.count(1)
        self.exec_calls: list[tuple[str, list[str], int]] = []
        self.stopped: list[tuple[str, int]] = []

    def _new_id(self) -> str:
        return f"{next(self._ids):02d}" + "f" * 62

    def _resolve(self, table: dict, ident: str, what: str):  # type: ignore[no-untyped-def]
        matches = [v for k, v in table.items() if k.startswith(ident)]
        if len(matches) != 1:
            raise errors.NotFound(f"{what} {ident!r} not found")
        return matches[0]

    def version(self) -> tuple[str, str]:
        return "podhost", "0.1.0-test"

    def status(self) -> list[RuntimeCondition]:
        return [RuntimeCondition("RuntimeReady", True), RuntimeCondition("NetworkReady", True)]

    def runtime_handlers(self) -> list[str]:
        return ["runc", "crun"]

    def run_pod_sandbox(self, config: model.PodSandboxConfig, runtime_handler: str) -> str:
        for s in self.sandboxes.values():
            if s.config.metadata == config.metadata:
                raise errors.AlreadyExists(
                    f"pod sandbox {config.metadata.name} (attempt {config.metadata.attempt}) exists"
                )
        if runtime_handler not in ("", "runc", "crun"):
            raise errors.InvalidArgument(f"unknown runtime handler {runtime_handler!r}")
        sid = self._new_id()
        self.sandboxes[sid] = model.PodSandbox(
            id=sid,
            config=config,
            runtime_handler=runtime_handler or "runc",
            state=model.PodSandboxState.SANDBOX_READY,
            created_at=time.time_ns(),
            ip="10.88.0.2",
        )
        return sid

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._resolve(
            self.sandboxes, sandbox_id, "pod sandbox"
        ).state = model.PodSandboxState.SANDBOX_NOTREADY

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(errors.NotFound):
            del self.sandboxes[self._resolve(self.sandboxes, sandbox_id, "pod sandbox").id]

    def pod_sandbox_status(self, sandbox_id: str) -> model.PodSandbox:
        return self._resolve(self.sandboxes, sandbox_id, "pod sandbox")

    def list_pod_sandbox(self, f: PodSandboxFilter) -> list[model.PodSandbox]:
        return [
            s
            for s in self.sandboxes.values()
            if s.id.startswith(f.id)
            and (f.state is None or s.state == f.state)
            and all(s.config.labels.get(k) == v for k, v in f.label_selector.items())
        ]

    def create_container(
        self, sandbox_id: str, config: model.ContainerConfig, sandbox_config: model.PodSandboxConfig | None
    ) -> str:
        sandbox = self._resolve(self.sandboxes, sandbox_id, "pod sandbox")
        cid = self._new_id()
        self.containers[cid] = model.Container(
            id=cid,
            sandbox_id=sandbox.id,
            config=config,
            image_id="sha256:" + "b" * 64,
            created_at=time.time_ns(),
            log_path=os.path.join(sandbox.config.log_directory, config.log_path),
        )
        self.events.publish(cid, model.ContainerEventType.CONTAINER_CREATED_EVENT, sandbox.id)
        return cid

    def start_container(self, container_id: str) -> None:
        c = self._resolve(self.containers, container_id, "container")
        if c.state != model.ContainerState.CONTAINER_CREATED:
            raise errors.FailedPrecondition(f"container {c.id} is not in state CREATED")
        c.state, c.started_at = model.ContainerState.CONTAINER_RUNNING, time.time_ns()

    def stop_container(self, container_id: str, timeout: int) -> None:
        c = self._resolve(self.containers, container_id, "container")
        self.stopped.append((c.id, timeout))
        c.state, c.exit_code = model.ContainerState.CONTAINER_EXITED, 137

    def remove_container(self, container_id: str) -> None:
        with contextlib.suppress(errors.NotFound):
            del self.containers[self._resolve(self.containers, container_id, "container").id]

    def container_status(self, container_id: str) -> model.Container:
        return self._resolve(self.containers, container_id, "container")

    def list_containers(self, f: ContainerFilter) -> list[model.Container]:
        return [
            c
            for c in self.containers.values()
            if c.id.startswith(f.id)
            and c.sandbox_id.startswith(f.pod_sandbox_id)
            and (f.state is None or c.state == f.state)
        ]

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> ExecResult:
        c = self._resolve(self.containers, container_id, "container")
        self.exec_calls.append((c.id, cmd, timeout))
        if cmd[0] == "crash":
            raise ZeroDivisionError("fake runtime bug")
        return ExecResult(b"out:" + " ".join(cmd).encode(), b"err\n", 3)

    def reopen_container_log(self, container_id: str) -> None:
        self._resolve(self.containers, container_id, "container")

    def update_container_resources(self, container_id: str, resources: model.LinuxContainerResources) -> None:
        self._resolve(self.containers, container_id, "container").config.resources = resources

    def container_stats(self, container_id: str) -> ContainerStats:
        c = self._resolve(self.containers, container_id, "container")
        return ContainerStats(
            c.id,
            time.time_ns(),
            cpu_usage_core_nano_seconds=time.time_ns() // 100,
            memory_working_set_bytes=1_500_000,
        )

    def list_container_stats(self, f: ContainerFilter) -> list[ContainerStats]:
        return [self.container_stats(c.id) for c in self.list_containers(f)]

    def subscribe_events(self) -> Subscription:
        return self.events.subscribe()

    def list_images(self) -> list[model.Image]:
        return list(self.images.values())

    def image_status(self, ref: str) -> model.Image | None:
        for image in self.images.values():
            if ref in image.repo_tags or ref == image.id or ref == "busybox:1.36" and image.repo_tags:
                return image
        return None

    def pull_image(self, ref: str) -> str:
        image = self.image_status(ref)
        if image is None:
            raise errors.NotFound(f"image {ref} not found in the local store")
        return image.id

    def remove_image(self, ref: str) -> None:
        image = self.image_status(ref)
        if image is not None:
            del self.images[image.id]

    def image_fs_info(self) -> tuple[int, int, str]:
        return 4_860_000, 12, str(self.config.image_dir)

    def import_image(self, path: str) -> list[model.Image]:
        if not os.path.exists(path):
            raise errors.NotFound(f"{path}: no such file")
        image = model.Image(id="sha256:" + "e" * 64, repo_tags=["localhost/loaded:1"], size=1000)
        self.images[image.id] = image
        return [image]


@contextlib.contextmanager
def serving() -> Iterator[tuple[FakeRuntime, CRIClient, Path]]:
    """A fake-runtime CRI server on a short socket path (unix paths are limited to 108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="phcri-"))
    runtime = FakeRuntime(root)
    sock = root / "cri.sock"
    server = serve(runtime, sock, max_workers=8)  # type: ignore[arg-type]
    client = CRIClient(str(sock), timeout=10)
    try:
        yield runtime, client, sock
    finally:
        client.close()
        server.stop(grace=None).wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env() -> Iterator[tuple[FakeRuntime, CRIClient, Path]]:
    with serving() as e:
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
        server = serve(FakeRuntime(root), stale)  # type: ignore[arg-type]
        try:
            assert CRIClient(str(stale), timeout=5).version().runtime_name == "podhost"
        finally:
            server.stop(grace=None).wait()
        plain = root / "plain"
        plain.write_text("not a socket")
        with pytest.raises(errors.FailedPrecondition, match="not a socket"):
            serve(FakeRuntime(root), plain)  # type: ignore[arg-type]
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
