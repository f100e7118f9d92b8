"""A CRI runtime in memory, for tests of the layers above the runtime (the CRI servicers, the CLI) that
need no root. It satisfies `podhost.cri.runtime_api.RuntimeAPI`, as the real `Runtime` facade does, and
mypy checks it against that protocol (this module is on mypy's list in pyproject.toml): a verb the facade
gains or changes is a type error here, not a fake that silently drifts from the real runtime."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from podhost import errors
from podhost.config import Config
from podhost.cri.client import CRIClient
from podhost.cri.runtime_api import RuntimeAPI
from podhost.cri.server import serve
from podhost.runtime import metrics, model
from podhost.runtime.container.stdio import AttachIO, ExecIO
from podhost.runtime.events import EventBus, Subscription
from podhost.runtime.image.registry import AuthConfig
from podhost.runtime.runtime import (
    ContainerFilter,
    ContainerStats,
    ExecResult,
    PodSandboxFilter,
    RuntimeCondition,
)

V = TypeVar("V", model.PodSandbox, model.Container)


class FakeRuntime:
    """In-memory stand-in with the `Runtime` facade's verbs and error behaviour; the streaming verbs and
    the sandbox stats answer UNIMPLEMENTED."""

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

    def _resolve(self, table: dict[str, V], ident: str, what: str) -> V:
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

    def run_pod_sandbox(self, config: model.PodSandboxConfig, runtime_handler: str = "") -> str:
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

    def pod_network_result(self, sandbox_id: str) -> dict[str, Any]:
        self._resolve(self.sandboxes, sandbox_id, "pod sandbox")
        return {}

    def list_pod_sandbox(self, f: PodSandboxFilter | None = None) -> list[model.PodSandbox]:
        f = f or PodSandboxFilter()
        return [
            s
            for s in self.sandboxes.values()
            if s.id.startswith(f.id)
            and (f.state is None or s.state == f.state)
            and all(s.config.labels.get(k) == v for k, v in f.label_selector.items())
        ]

    def create_container(
        self,
        sandbox_id: str,
        config: model.ContainerConfig,
        sandbox_config: model.PodSandboxConfig | None = None,
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

    def list_containers(self, f: ContainerFilter | None = None) -> list[model.Container]:
        f = f or ContainerFilter()
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

    def list_container_stats(self, f: ContainerFilter | None = None) -> list[ContainerStats]:
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

    def pull_image(self, ref: str, auth: AuthConfig | None = None) -> str:
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

    def pod_sandbox_stats(self, sandbox_id: str) -> model.PodSandboxStats:
        raise errors.Unimplemented("the fake runtime keeps no sandbox stats")

    def list_pod_sandbox_stats(self, f: PodSandboxFilter | None = None) -> list[model.PodSandboxStats]:
        raise errors.Unimplemented("the fake runtime keeps no sandbox stats")

    def list_metric_descriptors(self) -> list[metrics.MetricDescriptor]:
        return []

    def list_pod_sandbox_metrics(self) -> list[metrics.PodSandboxMetrics]:
        return []

    def exec_target(self, container_id: str) -> model.Container:
        return self._resolve(self.containers, container_id, "container")

    def port_forward_target(self, sandbox_id: str) -> model.PodSandbox:
        return self._resolve(self.sandboxes, sandbox_id, "pod sandbox")

    def exec_io(
        self, container_id: str, cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None
    ) -> ExecIO:
        raise errors.Unimplemented("the fake runtime runs no processes")

    def attach_io(self, container_id: str) -> AttachIO:
        raise errors.Unimplemented("the fake runtime runs no processes")

    def port_forward(self, pod_sandbox_id: str, port: int) -> socket.socket:
        raise errors.Unimplemented("the fake runtime has no network")


_: type[RuntimeAPI] = FakeRuntime  # mypy: the fake has every verb of the protocol, with its types


@contextlib.contextmanager
def serving(transport: str = "grpc") -> Iterator[tuple[FakeRuntime, CRIClient, Path]]:
    """A fake-runtime CRI server on a short socket path (unix paths are limited to 108 bytes), and a client
    over `transport` (grpcio, or the CLI's own HTTP/2 client: "h2")."""
    root = Path(tempfile.mkdtemp(prefix="phcri-"))
    runtime = FakeRuntime(root)
    sock = root / "cri.sock"
    server = serve(runtime, sock, max_workers=8)
    client = CRIClient(str(sock), timeout=10, transport=transport)
    try:
        yield runtime, client, sock
    finally:
        client.close()
        server.stop(grace=None).wait()
        shutil.rmtree(root, ignore_errors=True)
