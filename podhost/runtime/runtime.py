"""The runtime facade: one object per daemon that the CRI servicers call, one method per CRI verb.

It owns the wiring between the layer services (sandbox, container, image, network) and the event bus.
Methods take and return `podhost.runtime.model` types; errors are `podhost.errors` exceptions.
"""

from __future__ import annotations

import copy
import logging
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import podhost
from podhost.config import Config
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from podhost.runtime import metrics, procs, rundir
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.container.service import ContainerService, ImageVolume
from podhost.runtime.container.stdio import AttachIO, ExecIO
from podhost.runtime.events import EventBus, Subscription
from podhost.runtime.image.build import ensure_pause_image
from podhost.runtime.image.gc import ImageGC
from podhost.runtime.image.registry import AuthConfig, Puller
from podhost.runtime.image.store import ImageStore
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerState,
    ContainerStats,
    ExecResult,
    Image,
    LinuxContainerResources,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxState,
    PodSandboxStats,
)
from podhost.runtime.network.cni import PodNetwork
from podhost.runtime.nri import api_pb2 as nri_api
from podhost.runtime.nri import objects as nri_objects
from podhost.runtime.nri.adaptation import Adaptation
from podhost.runtime.sandbox.service import SandboxService
from podhost.runtime.stages import StageTimer
from podhost.runtime.state import RecordStore
from podhost.runtime.streams import StreamSessions
from podhost.runtime.validation import validate_container_config, validate_pod_sandbox_config

log = logging.getLogger(__name__)

RUNTIME_NAME = "podhost"


@dataclass
class PodSandboxFilter:
    id: str = ""  # an id prefix, as crictl passes it
    state: PodSandboxState | None = None
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerFilter:
    id: str = ""  # an id prefix
    state: ContainerState | None = None
    pod_sandbox_id: str = ""  # an id prefix
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass
class RuntimeCondition:
    type: str  # RuntimeReady, NetworkReady
    status: bool
    reason: str = ""
    message: str = ""


def _labels_match(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


#: How long ReopenContainerLog waits for conmon to create the new log file.
REOPEN_LOG_TIMEOUT = 5.0


def _wait_for_file(path: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"{what}: conmon did not reopen its log {path} within {timeout:.0f} s")
        time.sleep(0.002)


class Runtime:
    """Everything one podhost daemon runs. Build it with `Runtime.open(config)`; `close()` at exit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        for directory in (config.state_dir, config.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        rundir.keep_in_memory(config.run_dir)  # before anything is written there
        self.events = EventBus()
        self.watcher = procs.ProcessWatcher()
        self.cgroups = Cgroups()
        self.images = ImageStore(config.image_dir)
        self.network = PodNetwork(config)
        self.sandboxes = SandboxService(
            config,
            RecordStore(config.sandbox_records, PodSandbox, config.state_dir / "corrupt"),
            self.events,
            self.watcher,
            self.network,
            self.cgroups,
        )
        self.containers = ContainerService(
            config,
            RecordStore(
                config.container_records,
                Container,
                config.state_dir / "corrupt",
                # the environment (a Secret's values, perhaps) stays in the run dir, on tmpfs
                volatile=(config.run_dir / "records" / "container-envs", ("config", "envs")),
            ),
            self.events,
            cgroups=self.cgroups,
        )
        self.puller = Puller(self.images, config.registries, config.max_concurrent_downloads)
        self.image_gc = ImageGC(
            self.images,
            self.images_in_use,
            config.image_gc_high_threshold_percent,
            config.image_gc_low_threshold_percent,
        )
        self.streams = StreamSessions(config, self.containers, self.sandboxes)
        self.nri: Adaptation | None = None
        if config.nri_socket is not None:
            self.nri = Adaptation(config, podhost.__version__, self._nri_update, self._nri_evict)
            self.sandboxes.hooks = self.containers.hooks = self.nri
        self._closed = False

    @classmethod
    def open(cls, config: Config) -> Runtime:
        """Start a runtime over `config`'s state: adopt what still runs, roll back what was half-made."""
        procs.become_subreaper()
        runtime = cls(config)
        if config.pod_egress == "node-only":
            runtime.network.ensure_egress_guard()
        pause = config.pause_path
        if pause.exists():
            ensure_pause_image(runtime.images, pause, config.pause_image)
        runtime.recover()
        if runtime.nri is not None:  # after recovery: plugins are synchronized with what really runs
            runtime.nri.start(runtime.sandboxes.list_sandboxes(), runtime.containers.list())
        runtime.image_gc.start()
        return runtime

    def recover(self) -> None:
        """Make the records and what runs agree again after a (re)start. Sandboxes first (a half-made one
        is undone), then containers (state from the OCI runtime and conmon's exit files); containers whose
        sandbox is gone are removed, and any process still carrying this instance's mark that no record
        claims is killed: nothing podhost started runs unlisted."""
        self.sandboxes.recover()  # and reaps pause processes of ours that exited unwatched
        marked = procs.marked(self.config.instance_id)
        self.containers.recover(marked)
        sandbox_ids = self.sandboxes.known_ids()
        for container in self.containers.list():
            if container.sandbox_id not in sandbox_ids:
                log.warning("container %s belongs to no sandbox: removing it", container.id[:13])
                self.containers.remove(container.id)
        owners = sandbox_ids | self.containers.known_ids()
        for owner, found in procs.marked(self.config.instance_id).items():
            if owner not in owners:
                log.warning("killing %s: started for %s, which no record claims", found, owner[:13])
                procs.kill_tree(found)
        procs.reap_zombie_children()

    def close(self) -> None:
        """Stop serving; pods keep running (they do not depend on the daemon)."""
        if self._closed:
            return
        self._closed = True
        if self.nri is not None:
            self.nri.close()
        self.containers.close()
        self.watcher.close()
        no_pods = not self.sandboxes.list_sandboxes() and not self.containers.list()
        if no_pods:
            # Nothing left under them: the daemon's cgroup parent, its egress guard chain and its bridge
            # go too, so a stopped instance with no pods leaves nothing on the node.
            self.cgroups.remove_if_empty(self.config.cgroup_parent)
            self.network.remove_host_state()
        self.image_gc.close()
        if no_pods:
            rundir.release(self.config.run_dir)  # last: the run dir's tmpfs, if it is the runtime's

    # --- runtime info ------------------------------------------------------------------------------

    def version(self) -> tuple[str, str]:
        return RUNTIME_NAME, podhost.__version__

    def runtime_handlers(self) -> list[str]:
        """The handlers a RunPodSandbox may name; "" first, the default one, as the CRI names it (KEP-3857:
        a handler with an empty name describes the default runtime, and critest looks features up so)."""
        return ["", *self.config.runtimes]

    def status(self) -> list[RuntimeCondition]:
        runtime_ok = shutil.which(self.config.conmon) is not None or Path(self.config.conmon).exists()
        handler = self.config.runtimes[self.config.default_runtime]
        runtime_ok = runtime_ok and (shutil.which(handler) is not None or Path(handler).exists())
        net_ok, net_msg = self.network.status()
        return [
            RuntimeCondition(
                "RuntimeReady",
                runtime_ok,
                "" if runtime_ok else "RuntimeNotReady",
                "" if runtime_ok else f"conmon or {self.config.default_runtime} not found",
            ),
            RuntimeCondition("NetworkReady", net_ok, "" if net_ok else "NetworkPluginNotReady", net_msg),
        ]

    # --- sandboxes ---------------------------------------------------------------------------------

    # --- NRI plugins' requests ---------------------------------------------------------------------

    def _nri_update(self, container_id: str, resources: nri_api.LinuxResources) -> None:
        """A plugin's resource update of a container (runc update), without telling plugins again."""
        container = self.containers.resolve(container_id)
        current = container.config.resources or LinuxContainerResources()
        self.containers.update_resources(
            container.id, nri_objects.resources_to_cri(resources, current), notify=False
        )

    def _nri_evict(self, container_id: str, reason: str) -> None:
        """A plugin evicts a container: it is stopped (from a thread of its own: the plugin's call may
        hold locks the stop needs)."""
        log.warning("NRI: evicting container %s: %s", container_id[:13], reason)
        threading.Thread(
            target=self.stop_container, args=(container_id, 0), name="nri-evict", daemon=True
        ).start()

    def _handler(self, runtime_handler: str) -> str:
        handler = runtime_handler or self.config.default_runtime
        if handler not in self.config.runtimes:
            raise InvalidArgument(
                f"unknown runtime handler {handler!r} (have: {', '.join(self.config.runtimes)})"
            )
        return handler

    def run_pod_sandbox(self, config: PodSandboxConfig, runtime_handler: str = "") -> str:
        validate_pod_sandbox_config(config)  # before any side effect: bad input leaves nothing behind
        return self.sandboxes.run(config, self._handler(runtime_handler))

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop the containers, then the sandbox. Idempotent, unknown ids included (CRI); concurrent
        callers of one sandbox queue on its lock and each gets OK."""
        try:
            sandbox = self.sandboxes.resolve(sandbox_id)
        except NotFound:
            return
        stages = StageTimer("StopPodSandbox")
        with self.sandboxes.lock(sandbox.id):
            stages.enter("stop containers")
            for container in self._containers_of(sandbox.id):
                self.containers.stop(container.id, 0)
            self.sandboxes.stop(sandbox.id, stages)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Remove the containers, then the sandbox. Idempotent, unknown ids included (CRI)."""
        try:
            sandbox = self.sandboxes.resolve(sandbox_id)
        except NotFound:
            return
        stages = StageTimer("RemovePodSandbox")
        with self.sandboxes.lock(sandbox.id):
            stages.enter("remove containers")
            for container in self._containers_of(sandbox.id):
                self.containers.remove(container.id)
            self.sandboxes.remove(sandbox.id, stages)

    def pod_sandbox_status(self, sandbox_id: str) -> PodSandbox:
        return self.sandboxes.resolve(sandbox_id)

    def pod_network_result(self, sandbox_id: str) -> dict[str, Any]:
        """The sandbox's CNI result (PodSandboxStatus verbose info); {} for a host-network sandbox."""
        return self.network.result(sandbox_id)

    def list_pod_sandbox(self, f: PodSandboxFilter | None = None) -> list[PodSandbox]:
        f = f or PodSandboxFilter()
        return [
            s
            for s in self.sandboxes.list_sandboxes()
            if s.id.startswith(f.id)
            and (f.state is None or s.state == f.state)
            and _labels_match(s.config.labels, f.label_selector)
        ]

    def _containers_of(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.containers.list() if c.sandbox_id == sandbox_id]

    # --- containers --------------------------------------------------------------------------------

    def create_container(
        self, sandbox_id: str, config: ContainerConfig, sandbox_config: PodSandboxConfig | None = None
    ) -> str:
        sandbox = self.sandboxes.resolve(sandbox_id)
        # Checked against the sandbox's own config (the request's copy is informative), before any
        # side effect: bad input leaves nothing behind.
        validate_container_config(config, sandbox.config)
        image = self.images.get(config.image)
        config, image_volumes = self._image_volumes(config)
        # Under the sandbox's lock: a RemovePodSandbox cannot list the pod's containers while one is
        # being made, and the sandbox cannot stop half-way through.
        with self.sandboxes.lock(sandbox.id):
            sandbox = self.sandboxes.require_ready(sandbox.id)
            container = self.containers.create(
                sandbox, config, image, self.images.layer_dirs(image), image_volumes
            )
        return container.id

    def _image_volumes(self, config: ContainerConfig) -> tuple[ContainerConfig, list[ImageVolume]]:
        """The image volumes of `config` (CRI `Mount.image`), each image resolved in the store (never
        pulled: the kubelet pulls first), and a copy of `config` whose image mounts carry the image's id
        in `image_ref`. An image the store lacks is INVALID_ARGUMENT naming the mount; containerd 2
        answers NOT_FOUND there, but the mount, not the image, is what the caller got wrong."""
        if not any(m.image for m in config.mounts):
            return config, []
        config = copy.deepcopy(config)
        volumes = []
        for i, mount in enumerate(config.mounts):
            if not mount.image:
                continue
            image = self.images.find(mount.image)
            if image is None:
                raise InvalidArgument(
                    f"ContainerConfig.mounts[{i}].image: image {mount.image!r} is not present; pull it first"
                )
            mount.image_ref = image.id
            volumes.append(ImageVolume(index=i, layer_dirs=self.images.layer_dirs(image)))
        return config, volumes

    def start_container(self, container_id: str) -> None:
        container = self.containers.resolve(container_id)
        sandbox = self.sandboxes.get(container.sandbox_id)
        if sandbox.state != PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} of container {container.id} is not ready")
        self.containers.start(container.id)

    def stop_container(self, container_id: str, timeout: int) -> None:
        """Idempotent, unknown ids included (CRI)."""
        try:
            container = self.containers.resolve(container_id)
        except NotFound:
            return
        self.containers.stop(container.id, timeout)

    def remove_container(self, container_id: str) -> None:
        try:
            container = self.containers.resolve(container_id)
        except NotFound:
            return  # CRI: RemoveContainer is idempotent
        self.containers.remove(container.id)

    def container_status(self, container_id: str) -> Container:
        return self.containers.status(self.containers.resolve(container_id).id)

    def list_containers(self, f: ContainerFilter | None = None) -> list[Container]:
        f = f or ContainerFilter()
        return [
            c
            for c in self.containers.list()
            if c.id.startswith(f.id)
            and c.sandbox_id.startswith(f.pod_sandbox_id)
            and (f.state is None or c.state == f.state)
            and _labels_match(c.config.labels, f.label_selector)
        ]

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int) -> ExecResult:
        if not cmd:
            raise InvalidArgument("ExecSyncRequest.cmd is required")
        return self.containers.exec_sync(self.containers.resolve(container_id).id, cmd, timeout)

    def reopen_container_log(self, container_id: str) -> None:
        """CRI: the log file exists again when this returns (the kubelet renames the log, calls this, then
        reads the new file); conmon reopens it asynchronously, so wait for it, as CRI-O does."""
        container = self.containers.resolve(container_id)
        self.containers.reopen_log(container.id)
        if container.log_path:
            _wait_for_file(Path(container.log_path), REOPEN_LOG_TIMEOUT, f"container {container.id[:13]}")

    def update_container_resources(self, container_id: str, resources: LinuxContainerResources) -> None:
        self.containers.update_resources(self.containers.resolve(container_id).id, resources)

    def container_stats(self, container_id: str) -> ContainerStats:
        return self.containers.stats(self.containers.resolve(container_id).id)

    def list_container_stats(self, f: ContainerFilter | None = None) -> list[ContainerStats]:
        running = [c for c in self.list_containers(f) if c.state == ContainerState.CONTAINER_RUNNING]
        return [self.containers.stats(c.id) for c in running]

    def pod_sandbox_stats(self, sandbox_id: str) -> PodSandboxStats:
        stats = self.sandboxes.stats(self.sandboxes.resolve(sandbox_id).id)
        stats.containers = [
            self.containers.stats(c.id)
            for c in self._containers_of(stats.sandbox.id)
            if c.state == ContainerState.CONTAINER_RUNNING
        ]
        return stats

    def list_pod_sandbox_stats(self, f: PodSandboxFilter | None = None) -> list[PodSandboxStats]:
        ready = [s for s in self.list_pod_sandbox(f) if s.state == PodSandboxState.SANDBOX_READY]
        return [self.pod_sandbox_stats(s.id) for s in ready]

    def list_metric_descriptors(self) -> list[metrics.MetricDescriptor]:
        """Every metric ListPodSandboxMetrics can answer (podhost.runtime.metrics)."""
        return list(metrics.DESCRIPTORS)

    def list_pod_sandbox_metrics(self) -> list[metrics.PodSandboxMetrics]:
        """Metrics of every Ready sandbox and its running containers (containerd serves Ready ones only)."""
        out = []
        for sandbox in self.list_pod_sandbox(PodSandboxFilter(state=PodSandboxState.SANDBOX_READY)):
            running = [
                c for c in self._containers_of(sandbox.id) if c.state == ContainerState.CONTAINER_RUNNING
            ]
            out.append(
                metrics.measure_pod_sandbox(
                    self.cgroups, sandbox, running, lambda cid: self.config.container_state_dir(cid) / "upper"
                )
            )
        return out

    def subscribe_events(self) -> Subscription:
        return self.events.subscribe()

    # --- images ------------------------------------------------------------------------------------

    def list_images(self) -> list[Image]:
        return self.images.list()

    def image_status(self, ref: str) -> Image | None:
        return self.images.find(ref)

    def pull_image(self, ref: str, auth: AuthConfig | None = None) -> str:
        """Pull from the registry (`image.registry`); a pinned local image (pause) needs no registry."""
        local = self.images.find(ref)
        if local is not None and local.pinned:
            return local.id
        image = self.puller.pull(ref, auth)
        self.image_gc.poke()
        return image.id

    def images_in_use(self) -> set[str]:
        """Ids of the images any container (running or not) was created from or mounts as an image
        volume: GC and rmi keep them."""
        records = list(self.containers.records)  # one being created included
        volumes = {m.image_ref for c in records for m in c.config.mounts if m.image_ref}
        return {c.image_id for c in records} | volumes

    def remove_image(self, ref: str) -> None:
        image = self.images.find(ref)
        if image is None:
            return  # CRI: RemoveImage is idempotent
        users = [
            c.id[:13]
            for c in self.containers.list()
            if c.image_id == image.id or any(m.image_ref == image.id for m in c.config.mounts)
        ]
        if users:
            raise FailedPrecondition(f"image {ref} is in use by container(s) {', '.join(users)}")
        try:
            self.images.remove(ref)
        except NotFound:
            return  # a concurrent RemoveImage got there first: still OK (CRI: idempotent)

    def image_fs_info(self) -> tuple[int, int, str]:
        used, inodes = self.images.fs_info()
        return used, inodes, str(self.config.image_dir)

    def import_image(self, path: str) -> list[Image]:
        return self.images.import_archive(Path(path))

    # --- streaming sessions (URLs, tokens and protocols are the CRI layer's: podhost.cri.streaming) ---

    def exec_target(self, container_id: str) -> Container:
        """The running container an Exec/Attach URL may be made for (full id resolved from a prefix)."""
        return self.streams.running_container(container_id)

    def port_forward_target(self, sandbox_id: str) -> PodSandbox:
        """The ready sandbox a PortForward URL may be made for."""
        return self.streams.ready_sandbox(sandbox_id)

    def exec_io(
        self, container_id: str, cmd: list[str], tty: bool, stdin: bool, size: tuple[int, int] | None
    ) -> ExecIO:
        return self.streams.exec_io(container_id, cmd, tty, stdin, size)

    def attach_io(self, container_id: str) -> AttachIO:
        return self.streams.attach_io(container_id)

    def port_forward(self, sandbox_id: str, port: int) -> socket.socket:
        return self.streams.port_forward(sandbox_id, port)
