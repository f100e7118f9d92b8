"""ContainerService: the CRI container lifecycle (Create/Start/Stop/Remove, status, exec, stats, recovery).

Theory of operation. A container is an OCI bundle under `config.container_run_dir(id)` (config.json, the
overlay rootfs mount, conmon's attach socket and ctl fifo, conmon's persist files `exit`/`oom`) plus its
overlay upper/work dirs under `config.container_state_dir(id)`. conmon runs `<runtime> create`, holds
stdio and writes the CRI log and the exit file; podhost then calls `<runtime> start`. No Python process
stays attached to a container.

    CREATING --conmon reported--> CREATED --start--> RUNNING --exit file--> EXITED --remove--> (gone)
        \\ (undone: gone)             \\________exit file (killed before start)___/^

Records change only through podhost.runtime.lifecycle, which checks each move against its table.
CreateContainer reserves `<sandbox>_<name>_<attempt>` atomically first (exactly one of many racing
callers wins), then writes the record in stage CREATING before any side effect, and conmon and the OCI
runtime run marked with the container's id (podhost.runtime.procs): a daemon killed at any instant leaves
a record or a bundle from which `recover()` kills what runs and undoes the rest. Every create step
registers its undo on an ExitStack popped only on success, so an error, a timeout and a cancelled call
unwind alike. After a restart the state comes from what runs: `<runtime> state` and conmon's exit file,
never from what the record hoped (a container killed mid-StartContainer is RUNNING if runc says so).
Exits arrive from the exit dir's inotify watch (podhost.runtime.container.exits) within milliseconds;
the record is updated, CONTAINER_STOPPED_EVENT is published and `on_exit` called.

Image volumes (CRI `Mount.image`) are mounted read-only under the bundle's `image-volumes/<mount index>`
after the rootfs, each unmount on the create's undo stack, and unmounted with the rootfs on removal and
recovery, before anything under the bundle is deleted.

Owns container records, bundles, rootfs and image volume mounts and conmon; the pod's namespaces, cgroup and files belong
to the sandbox service, images to the image store.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.config import Config
from podhost.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RuntimeFailure,
)
from podhost.runtime import mount as mnt
from podhost.runtime import namespaces, procs
from podhost.runtime.cgroups import Cgroups, child
from podhost.runtime.container import conmon, ocirt, recursive_read_only, spec
from podhost.runtime.container.exits import ExitWatcher
from podhost.runtime.container.signals import parse_signal
from podhost.runtime.events import EventBus
from podhost.runtime.hooks import LifecycleHooks
from podhost.runtime.image.rootfs import (
    Idmap,
    mount_image_volume,
    mount_rootfs,
    resolve_in_root,
    unmount_rootfs,
)
from podhost.runtime.lifecycle import (
    CONTAINER_TRANSITIONS,
    Lifecycle,
    NameIndex,
    RecordLookup,
    container_cri_state,
)
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerEventType,
    ContainerStage,
    ContainerState,
    ContainerStats,
    ExecResult,
    Image,
    LinuxContainerResources,
    LinuxContainerUser,
    NamespaceMode,
    PodSandbox,
)
from podhost.runtime.stages import StageTimer, UndoStack
from podhost.runtime.state import RecordStore

log = logging.getLogger(__name__)

STOP_KILL_WAIT_S = 10.0  # after SIGKILL, how long the exit may take to be reported
EXIT_CODE_UNKNOWN = 255  # what containerd reports when the exit status was lost


def container_name_key(sandbox_id: str, config: ContainerConfig) -> str:
    """The reserved name of a container: unique per sandbox, name and attempt (as in containerd)."""
    return f"{sandbox_id}_{config.metadata.name}_{config.metadata.attempt}"


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    """The CRI ContainerStatus.reason of an exited container, as the kubelet expects it."""
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


SHM_DIR = "shm"  # in the bundle: the pod's /dev/shm, attached only while runc creates the container
IMAGE_VOLUMES_DIR = "image-volumes"  # in the bundle: one mount point per image volume, by mount index


@dataclass
class ImageVolume:
    """`ContainerConfig.mounts[index]` is an image volume (CRI `Mount.image`) of an image the store has,
    whose unpacked layers are `layer_dirs` (top first). The caller resolved the image and set the mount's
    `image_ref` to its id before create, so the write-ahead record keeps the image from GC."""

    index: int
    layer_dirs: builtins.list[Path]


class ContainerService(RecordLookup[Container, ContainerStage]):
    def __init__(
        self,
        config: Config,
        records: RecordStore[Container],
        events: EventBus,
        cgroups: Cgroups | None = None,
        id_prefix: str = "",
    ) -> None:
        self.config = config
        self.records = records
        self.lifecycle: Lifecycle[Container, ContainerStage] = Lifecycle(
            records, CONTAINER_TRANSITIONS, container_cri_state, events, lambda c: c.sandbox_id, "container"
        )
        self.names = NameIndex("container")
        self.events = events
        self.cgroups = cgroups or Cgroups()
        self.id_prefix = id_prefix
        self.exit_dir = config.run_dir / "exits"
        self.socket_dir = config.run_dir / "attach"
        self.limits = spec.read_host_limits()
        #: called (container) after a container exited and its record says so; runs on the exit thread.
        self.on_exit: Callable[[Container], None] | None = None
        #: NRI's part in the lifecycle (podhost.runtime.hooks); does nothing without plugins.
        self.hooks = LifecycleHooks()
        self._exited = threading.Condition()
        self._watcher = ExitWatcher(self.exit_dir, self._exit_file_written)

    def close(self) -> None:
        self._watcher.close()

    # --- helpers -----------------------------------------------------------------------------------

    def lock(self, container_id: str) -> contextlib.AbstractContextManager[None]:
        return self.lifecycle.locks.hold(container_id)

    def runtime(self, handler: str, container_id: str = "") -> ocirt.OciRuntime:
        """The OCI runtime of `handler`; bound to `container_id`, its commands carry that container's mark
        (procs), so a daemon killed mid-call leaves nothing its successor cannot find."""
        handler = handler or self.config.default_runtime
        binary = self.config.runtimes.get(handler)
        if binary is None:
            raise InvalidArgument(
                f"unknown runtime handler {handler!r} (have: {', '.join(self.config.runtimes)})"
            )
        runtime = ocirt.OciRuntime(handler, binary, ocirt.runtime_root(self.config.run_dir, handler))
        return runtime.for_owner(self.config.instance_id, container_id) if container_id else runtime

    def list(self) -> list[Container]:
        """The containers callers may see: a CreateContainer still under way is not one yet."""
        return self.lifecycle.visible()

    def _bundle(self, container_id: str) -> Path:
        return self.config.container_run_dir(container_id)

    def _new_id(self) -> str:
        return (self.id_prefix + secrets.token_hex(32))[:64]

    # --- CreateContainer ---------------------------------------------------------------------------

    def create(
        self,
        sandbox: PodSandbox,
        config: ContainerConfig,
        image: Image,
        layer_dirs: builtins.list[Path],
        image_volumes: Sequence[ImageVolume] = (),
    ) -> Container:
        """Make the bundle, mount the rootfs and have conmon run `<runtime> create`. Nothing is left behind
        on failure; the error names the stage and carries the runtime's own message."""
        if not config.metadata.name:
            raise InvalidArgument("ContainerConfig.metadata.name is required")
        spec.validate_resources(config.resources)
        spec.process_args(config, image.config)  # a missing command fails before any side effect
        stop_signal = config.stop_signal or image.config.stop_signal  # CRI's (KEP-4960), else the image's
        parse_signal(stop_signal)
        runtime = self.runtime(sandbox.runtime_handler)
        container_id = self._new_id()
        key = container_name_key(sandbox.id, config)
        self.names.reserve(key, container_id)  # AlreadyExists for every racing caller but one
        try:
            return self._create(sandbox, config, image, layer_dirs, runtime, container_id, image_volumes)
        except BaseException:
            self.names.release(key, container_id)
            raise

    def _create(
        self,
        sandbox: PodSandbox,
        config: ContainerConfig,
        image: Image,
        layer_dirs: builtins.list[Path],
        runtime: ocirt.OciRuntime,
        container_id: str,
        image_volumes: Sequence[ImageVolume] = (),
    ) -> Container:
        stop_signal = config.stop_signal or image.config.stop_signal
        key = container_name_key(sandbox.id, config)
        log_path = ""
        if sandbox.config.log_directory and config.log_path:
            log_path = str(Path(sandbox.config.log_directory) / config.log_path)
        container = Container(
            id=container_id, sandbox_id=sandbox.id, config=config, image_id=image.id,
            image_ref=(image.repo_tags[0] if image.repo_tags else config.image),
            runtime_handler=runtime.handler, stage=ContainerStage.CREATING, created_at=time.time_ns(),
            log_path=log_path, cgroup=child(sandbox.cgroup or "/", container_id), stop_signal=stop_signal,
        )  # fmt: skip
        bundle = self._bundle(container_id)
        state_dir = self.config.container_state_dir(container_id)
        target = bundle / "rootfs"
        stages = StageTimer("CreateContainer")
        with self.lock(container_id), UndoStack() as undo:
            try:
                stages.enter("bundle")
                # Write-ahead, before any side effect. Not fsynced: after a machine crash the bundle
                # and processes it could name are gone, and a state dir without a record is swept.
                self.lifecycle.create(container, durable=False)
                undo.callback(self.lifecycle.delete, container_id)
                bundle.mkdir(parents=True, exist_ok=False)
                undo.callback(shutil.rmtree, bundle, True)
                (state_dir / "upper").mkdir(parents=True, exist_ok=True)
                (state_dir / "work").mkdir(parents=True, exist_ok=True)
                undo.callback(shutil.rmtree, state_dir, True)

                stages.enter("rootfs")  # layer_dirs: top layer first, as the image store gives them
                target.mkdir()
                mount_rootfs(
                    layer_dirs, state_dir / "upper", state_dir / "work", target, idmap=rootfs_idmap(sandbox)
                )
                undo.callback(unmount_rootfs, target)
                own_root = not spec.rootfs_propagation(config)
                if own_root:  # the container's copy must not follow the host's: see "created"
                    mnt.mount("", str(target), None, mnt.MS_PRIVATE)

                if image_volumes:
                    stages.enter("image volumes")
                    container = self._mount_image_volumes(container, image_volumes, undo)

                rro_sources: dict[int, str] = {}
                if any(m.recursive_read_only for m in config.mounts):
                    stages.enter("recursive read-only mounts")  # after image volumes: their host_path is set
                    undo.callback(recursive_read_only.unstage_all, bundle)
                    rro_sources = self._stage_recursive_read_only(container, bundle)
                idmap = rootfs_idmap(sandbox)
                if idmap is not None and any(m.host_path and not m.image for m in config.mounts):
                    stages.enter("idmapped mounts")
                    undo.callback(recursive_read_only.unstage_all, bundle)
                    rro_sources.update(self._stage_idmapped(container, bundle, idmap.userns))

                stages.enter("spec")
                shm = ""
                if sandbox.shm_fd > 0:  # the pod's /dev/shm (none with hostIPC), for runc to bind
                    shm = str(bundle / SHM_DIR)
                    undo.callback(namespaces.unmount, shm)
                    holder = procs.Proc(sandbox.pid, sandbox.pid_start_time)
                    namespaces.attach_held(holder, sandbox.shm_fd, sandbox.shm_dev, Path(shm))
                passwd, group = _read_etc(target)
                oci = spec.build_oci_spec(
                    container, sandbox, image, target, self.config.sandbox_run_dir(sandbox.id), self.limits,
                    passwd=passwd, group=group, rro_sources=rro_sources,
                    target_pid_ns=self._target_pid_namespace(sandbox, config), shm=shm,
                )  # fmt: skip
                stages.enter("NRI plugins")  # may adjust the spec (and annotations) before it is written
                undo.callback(self.hooks.container_undone, container)
                self.hooks.create_container(sandbox, container, oci)
                (bundle / "config.json").write_text(json.dumps(oci, indent=1))
                user = oci["process"]["user"]
                if log_path:
                    Path(log_path).parent.mkdir(parents=True, exist_ok=True)

                stages.enter("runtime create")
                undo.callback(self._undo_runtime_create, runtime, container)
                cspec = self._conmon_spec(container, runtime, bundle)
                try:
                    pid = conmon.create(self.config.conmon, cspec, self.config.runtime_create_timeout)
                finally:
                    conmon_pid = conmon.read_pid_file(cspec.conmon_pid_file)
                    if conmon_pid:
                        self._watcher.watch_process(conmon_pid, procs.start_time(conmon_pid))

                stages.enter("created")
                joined = [n.get("path", "") for n in oci["linux"]["namespaces"]]
                namespaces.check_joined(pid, joined, sandbox.pid, sandbox.pid_start_time)
                # runc has bound the staged recursive read-only copies into the container's own mount
                # namespace: the host's copies go now, so they never keep a host path busy.
                recursive_read_only.unstage_all(bundle)
                if shm:  # likewise the pod's /dev/shm: pause still holds it, the container has its copy
                    namespaces.unmount(shm)
                if own_root:
                    # Likewise the rootfs: runc pivoted into its own (private) copy, so the host's goes,
                    # keeping the host's mount table (which each new container copies) from growing
                    # with the pods. A container whose root propagates (rshared/rslave) keeps it.
                    unmount_rootfs(target)
                pid_start = procs.start_time(pid)

                annotations = dict(container.config.annotations)  # with NRI's adjustments

                def created(c: Container) -> None:
                    c.pid, c.pid_start_time, c.conmon_pid = pid, pid_start, conmon_pid
                    c.config.annotations = dict(annotations)
                    c.user = LinuxContainerUser(
                        uid=user["uid"], gid=user["gid"], supplemental_groups=list(user["additionalGids"])
                    )

                stages.enter("record")
                container = self.lifecycle.update(
                    container_id, ContainerStage.CREATED, created, ContainerEventType.CONTAINER_CREATED_EVENT
                )
            except (RuntimeFailure, InvalidArgument) as e:
                log.warning(
                    "container %s (%s): create failed at stage %r: %s",
                    container_id[:13],
                    key,
                    stages.current,
                    e,
                )
                if isinstance(e, InvalidArgument):
                    raise
                raise RuntimeFailure(
                    f"create container {config.metadata.name!r}: {stages.current}: {e}"
                ) from e
            except OSError as e:
                raise RuntimeFailure(
                    f"create container {config.metadata.name!r}: {stages.current}: {e}"
                ) from e
            undo.pop_all()
            self.hooks.post_create_container(container)
        stages.enter("")
        log.info(
            "container %s (%s) created in sandbox %s: %s (pid %d)",
            container_id[:13],
            key,
            sandbox.id[:13],
            stages,
            container.pid,
        )
        return container

    def _mount_image_volumes(
        self, container: Container, image_volumes: Sequence[ImageVolume], undo: UndoStack
    ) -> Container:
        """Mount each image volume read-only under the bundle (its unmount on `undo` before the next) and
        point its mount's host_path at the image's root or `image_sub_path` in it, as containerd does;
        the OCI spec then binds it like any other mount."""
        sources: dict[int, str] = {}
        for volume in image_volumes:
            mount = container.config.mounts[volume.index]
            where = self._bundle(container.id) / IMAGE_VOLUMES_DIR / str(volume.index)
            mount_image_volume(volume.layer_dirs, where)
            undo.callback(unmount_rootfs, where)
            field = f"ContainerConfig.mounts[{volume.index}].image_sub_path"
            sources[volume.index] = str(resolve_in_root(where, mount.image_sub_path, field))

        def sourced(c: Container) -> None:
            for index, source in sources.items():
                c.config.mounts[index].host_path = source

        return self.lifecycle.update(container.id, None, sourced, durable=False)

    def _stage_idmapped(self, container: Container, bundle: Path, userns: str) -> dict[int, str]:
        """An idmapped copy of each host-path mount of a container in a pod with its own user namespace,
        by mount index, so the pod's root owns what the host's root owns (the caller has put `unstage_all`
        on its undo stack first)."""
        sources: dict[int, str] = {}
        for index, m in enumerate(container.config.mounts):
            if not m.host_path or m.image:
                continue
            if m.recursive_read_only:
                raise InvalidArgument(
                    f"ContainerConfig.mounts[{index}].recursive_read_only: not supported in a pod with its "
                    "own user namespace yet"
                )
            where = recursive_read_only.staging_point(bundle, index)
            recursive_read_only.stage_idmapped(m.host_path, where, userns)
            sources[index] = str(where)
        return sources

    def _stage_recursive_read_only(self, container: Container, bundle: Path) -> dict[int, str]:
        """A read-only copy of each recursive read-only mount's tree, by mount index (the caller has put
        `unstage_all` on its undo stack first, so a failure half way leaves nothing mounted)."""
        if not recursive_read_only.supported():
            raise InvalidArgument(
                "ContainerConfig.mounts: recursive_read_only is not supported on this kernel (no mount_setattr)"
            )
        sources: dict[int, str] = {}
        for index, mount in enumerate(container.config.mounts):
            if mount.recursive_read_only:
                where = recursive_read_only.staging_point(bundle, index)
                recursive_read_only.stage(mount.host_path, where)
                sources[index] = str(where)
        return sources

    def _conmon_spec(
        self, container: Container, runtime: ocirt.OciRuntime, bundle: Path
    ) -> conmon.ConmonSpec:
        runtime.root.mkdir(parents=True, exist_ok=True)
        return conmon.ConmonSpec(
            container_id=container.id,
            name=container.config.metadata.name,
            bundle=bundle,
            runtime_binary=runtime.binary,
            runtime_args=[f"--root={runtime.root}", f"--log={bundle / 'runtime.log'}", "--log-format=json"],
            instance=self.config.instance_id,
            owner=container.id,
            container_pid_file=bundle / "pidfile",
            conmon_pid_file=bundle / "conmon.pid",
            exit_dir=self.exit_dir,
            socket_dir=self.socket_dir,
            persist_dir=bundle,
            log_path=container.log_path,
            terminal=container.config.tty,
            stdin=container.config.stdin,
            stdin_once=container.config.stdin_once,
        )

    def _undo_runtime_create(self, runtime: ocirt.OciRuntime, container: Container) -> None:
        """Undo of a (possibly half-done) `<runtime> create`: whatever runs under the container's mark
        (conmon, the runtime), the runtime's state (which kills the container's init), its cgroup and
        conmon's files."""
        try:  # first, while conmon still runs and reaps the init it kills
            runtime.delete(container.id, force=True)
        except RuntimeFailure:
            log.exception("container %s: runtime delete during rollback failed", container.id[:13])
        procs.kill_owner(self.config.instance_id, container.id)
        self._remove_cgroup(container)
        (self.exit_dir / container.id).unlink(missing_ok=True)
        (self.socket_dir / container.id).unlink(missing_ok=True)

    def _remove_cgroup(self, container: Container) -> None:
        if not container.cgroup:
            return
        try:
            self.cgroups.remove(container.cgroup)
        except RuntimeFailure:
            log.exception("container %s: removing its cgroup failed", container.id[:13])

    # --- StartContainer ----------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        stages = StageTimer("StartContainer")
        with self.lock(container_id):
            container = self.get(container_id)
            if container.stage != ContainerStage.CREATED:
                raise FailedPrecondition(
                    f"container {container_id[:13]} is {container.state.value}, not created"
                )
            runtime = self.runtime(container.runtime_handler, container.id)
            self.hooks.start_container(container)  # a plugin may refuse: the container stays created
            started_at = time.time_ns()  # before: the process may run (and exit) before start returns
            stages.enter("runtime start")
            try:
                runtime.start(
                    container_id,
                    procs.Proc(container.pid, container.pid_start_time),
                    self._bundle(container_id),
                )
            except RuntimeFailure as e:
                message = str(e)

                def failed(c: Container) -> None:
                    c.exit_code, c.reason, c.message = 128, "StartError", message
                    c.finished_at = time.time_ns()

                self.lifecycle.update(
                    container_id, ContainerStage.EXITED, failed, ContainerEventType.CONTAINER_STOPPED_EVENT
                )
                raise
            stages.enter("record")

            def running(c: Container) -> None:
                c.started_at = started_at

            # Not fsynced: "running" only matters while this machine is up (after a reboot recovery finds
            # the process gone whatever the record says); a SIGKILLed daemon still reads it.
            container = self.lifecycle.update(
                container_id,
                ContainerStage.RUNNING,
                running,
                ContainerEventType.CONTAINER_STARTED_EVENT,
                durable=False,
            )
            self.hooks.post_start_container(container)
        log.info("container %s started", container_id[:13])

    # --- exits -------------------------------------------------------------------------------------

    def _exit_file_written(self, container_id: str) -> None:
        self._apply_exit(container_id)

    def _read_exit_code(self, container_id: str) -> tuple[int, int] | None:
        path = self.exit_dir / container_id
        try:
            text = path.read_text().strip()
            mtime = path.stat().st_mtime_ns
        except OSError:
            return None
        try:
            return int(text), mtime
        except ValueError:
            return None

    def _apply_exit(self, container_id: str, lost_message: str = "") -> bool:
        """Record the exit of `container_id` if conmon reported it (or `lost_message` says it was lost).
        True when the record changed to EXITED."""
        with self.lock(container_id):
            container = self.records.get(container_id)
            if container is None or container.stage not in (ContainerStage.CREATED, ContainerStage.RUNNING):
                return False
            found = self._read_exit_code(container_id)
            if found is None and not lost_message:
                return False
            code, finished = found if found is not None else (EXIT_CODE_UNKNOWN, time.time_ns())
            oom = self._oom_killed(container)

            def exited(c: Container) -> None:
                # The exit file's mtime is the exit time, at the filesystem's timestamp granularity.
                c.exit_code, c.finished_at = code, max(finished, c.started_at)
                c.reason, c.message = exit_reason(code, oom), lost_message

            container = self.lifecycle.update(
                container_id, ContainerStage.EXITED, exited, ContainerEventType.CONTAINER_STOPPED_EVENT
            )
            # Under the lock: a RemoveContainer waits for it, so plugins see Stop before Remove.
            self.hooks.stop_container(container)
        with self._exited:
            self._exited.notify_all()
        procs.reap(procs.Proc(container.pid, container.pid_start_time))  # ours once its conmon died
        log.info("container %s exited with %d (%s)", container_id[:13], code, container.reason)
        if self.on_exit is not None:
            try:
                self.on_exit(container)
            except Exception:
                log.exception("container %s: on_exit callback failed", container_id[:13])
        return True

    def _oom_killed(self, container: Container) -> bool:
        """The memory cgroup counted an OOM kill (it still exists: runtime delete has not run), or conmon
        saw one (its `oom` file in the persist dir)."""
        if container.cgroup and self.cgroups.oom_kills(container.cgroup) > 0:
            return True
        return (self._bundle(container.id) / "oom").exists()

    def _wait_exited(self, container_id: str, timeout: float) -> bool:
        """Wait (without polling) until the record says EXITED; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._exited:
            while True:
                container = self.records.get(container_id)
                if container is None or container.state == ContainerState.CONTAINER_EXITED:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._exited.wait(remaining)

    # --- StopContainer -----------------------------------------------------------------------------

    def stop(self, container_id: str, timeout: int) -> None:
        """The stop signal (image StopSignal, else SIGTERM), SIGKILL after `timeout` seconds; returns once
        the exit is recorded. Idempotent on an exited, removed or unknown container (CRI)."""
        container = self.records.get(container_id)
        if container is None or container.stage not in (ContainerStage.CREATED, ContainerStage.RUNNING):
            return
        self._apply_exit(container_id)  # an exit that raced with us
        container = self.records.get(container_id)
        if container is None or container.stage == ContainerStage.EXITED:
            return
        runtime = self.runtime(container.runtime_handler, container.id)
        if timeout > 0 and container.state == ContainerState.CONTAINER_RUNNING:
            sig = parse_signal(container.stop_signal)
            self._signal(runtime, container, sig, all_processes=False)
            if self._wait_exited(container_id, timeout):
                return
            log.info("container %s ignored signal %d for %ds: killing it", container_id[:13], sig, timeout)
        self._signal(runtime, container, signal.SIGKILL, all_processes=True)
        if self._wait_exited(container_id, STOP_KILL_WAIT_S):
            return
        # conmon should have reported by now; if it is gone, the exit status is lost.
        if not procs.alive(container.pid, container.pid_start_time) and not _alive_conmon(container):
            self._apply_exit(container_id, lost_message="exit status lost: conmon is gone")
            return
        raise RuntimeFailure(
            f"container {container_id[:13]} did not exit within {STOP_KILL_WAIT_S:.0f}s of SIGKILL"
        )

    def _signal(self, runtime: ocirt.OciRuntime, container: Container, sig: int, all_processes: bool) -> None:
        """SIGKILL to all its processes: one write to the container cgroup's cgroup.kill (cgroup v2), or,
        for a container that is PID 1 of its own PID namespace, SIGKILL to that init (the kernel kills the
        rest); a signal to its init process alone: a pidfd of the recorded PID (never a reused one). Each
        saves a runtime exec (a `runc kill` costs 5-10 ms); the runtime's kill remains for the rest (a
        process in the pod's or the node's PID namespace, cgroup v1)."""
        init = procs.Proc(container.pid, container.pid_start_time)
        if all_processes and sig == signal.SIGKILL:
            if container.cgroup and self.cgroups.kill(container.cgroup):
                return
            if init.pid > 0 and procs.pid_namespace_init(init.pid):
                procs.kill(init, sig)
                return
        if not all_processes and container.state == ContainerState.CONTAINER_RUNNING and init.pid > 0:
            procs.kill(init, sig)
            return
        try:
            runtime.kill(container.id, sig, all_processes)
        except RuntimeFailure as e:
            # Already stopped (the exit is on its way) is fine; anything else is worth a line.
            log.debug("container %s: kill %d: %s", container.id[:13], sig, e)

    # --- RemoveContainer ---------------------------------------------------------------------------

    def remove(self, container_id: str) -> None:
        """Stop if running, then delete every trace: runtime state, rootfs mount, bundle, state dir, cgroup,
        record, last (a crash mid-way leaves a record whose removal is simply done again). Idempotent: an
        unknown or already removed container is fine (CRI)."""
        # Stopped outside the container's lock: the exit it waits for is recorded under that lock.
        self.stop(container_id, 0)
        with self.lock(container_id):
            container = self.records.get(container_id)
            if container is None or container.stage == ContainerStage.CREATING:
                return
            runtime = self.runtime(container.runtime_handler, container.id)
            if not self._forget_exited(runtime, container):
                runtime.delete(container_id, force=True)
            self._remove_files(container)
            self.records.delete(container_id)
            self.names.release(container_name_key(container.sandbox_id, container.config), container_id)
            self.hooks.remove_container(container)
        log.info("container %s removed", container_id[:13])
        self.events.publish(container_id, ContainerEventType.CONTAINER_DELETED_EVENT, container.sandbox_id)

    def _forget_exited(self, runtime: ocirt.OciRuntime, container: Container) -> bool:
        """What `runc delete` does for an exited container without poststop hooks, done here without the
        exec (5-10 ms a container): remove its cgroup, which must be empty, and the runtime's state
        directory. False (the runtime deletes, --force) while anything may still run or a hook is due."""
        if container.stage != ContainerStage.EXITED or spec.declares_hooks(
            self._bundle(container.id) / "config.json", "poststop"
        ):
            return False
        try:
            if container.cgroup:
                self.cgroups.remove(container.cgroup)
        except RuntimeFailure:
            return False
        shutil.rmtree(runtime.root / container.id, ignore_errors=True)
        return True

    def _remove_files(self, container: Container) -> None:
        bundle = self._bundle(container.id)
        unmount_rootfs(bundle / "rootfs")
        namespaces.unmount(str(bundle / SHM_DIR))  # a create killed before it detached the pod's shm
        recursive_read_only.unstage_all(bundle)  # before the rmtree below, which must not walk host trees
        volumes = bundle / IMAGE_VOLUMES_DIR
        for where in sorted(volumes.iterdir()) if volumes.is_dir() else []:
            unmount_rootfs(where)  # before the rmtree below, which must never walk into an image
        self._remove_cgroup(container)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(self.config.container_state_dir(container.id), ignore_errors=True)
        (self.exit_dir / container.id).unlink(missing_ok=True)
        (self.socket_dir / container.id).unlink(missing_ok=True)

    def _target_pid_namespace(self, sandbox: PodSandbox, config: ContainerConfig) -> str:
        """CRI pid mode TARGET (the kubelet sends it for an ephemeral container with a target): the PID
        namespace of `target_id`, a running container of the same sandbox, as /proc/<pid>/ns/pid ("" for
        the other modes). Refused when the target is elsewhere or not running, as containerd refuses it."""
        options = config.security_context.namespace_options
        if options.pid != NamespaceMode.TARGET:
            return ""
        field = "ContainerConfig.linux.security_context.namespace_options.target_id"
        try:
            target = self.status(self.resolve(options.target_id).id)
        except NotFound:
            raise InvalidArgument(f"{field}: no container {options.target_id[:13]}") from None
        if target.sandbox_id != sandbox.id:
            raise InvalidArgument(f"{field}: container {target.id[:13]} is not in sandbox {sandbox.id[:13]}")
        if target.state != ContainerState.CONTAINER_RUNNING or not procs.alive(
            target.pid, target.pid_start_time
        ):
            raise FailedPrecondition(f"{field}: container {target.id[:13]} is not running")
        return namespaces.held_by(target.pid, "pid")

    # --- ContainerStatus ---------------------------------------------------------------------------

    def status(self, container_id: str) -> Container:
        """The record, with an exit applied that the watch has not delivered yet."""
        container = self.get(container_id)
        if container.state != ContainerState.CONTAINER_EXITED:
            self._apply_exit(container_id)
            container = self.get(container_id)
        return container

    # --- ExecSync ----------------------------------------------------------------------------------

    def exec_sync(self, container_id: str, cmd: builtins.list[str], timeout: int) -> ExecResult:
        """Run `cmd` in the container, collect its output. After `timeout` seconds (0: none) the exec'd
        process is killed and DeadlineExceeded raised (what the kubelet reads as a probe timeout)."""

        container = self.status(container_id)
        if container.state != ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(
                f"container {container_id[:13]} is not running ({container.state.value})"
            )
        if not cmd:
            raise InvalidArgument("exec: cmd is required")
        bundle = self._bundle(container_id)
        try:
            oci = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"container {container_id[:13]}: reading its spec: {e}") from e
        process = spec.exec_process(oci, cmd)
        runtime = self.runtime(container.runtime_handler, container.id)
        ep = runtime.exec(container_id, process, bundle)
        try:
            try:
                stdout, stderr = ep.popen.communicate(timeout=timeout if timeout > 0 else None)
            except subprocess.TimeoutExpired:
                ep.kill()
                try:
                    ep.popen.communicate(timeout=STOP_KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    ep.popen.kill()
                    ep.popen.communicate()
                raise DeadlineExceeded(  # noqa: B904 - the timeout is the error, not a cause
                    f"exec {cmd!r} in container {container_id[:13]}: timeout {timeout}s exceeded"
                )
            code = ep.popen.returncode
            if code != 0 and (error := ep.error()):
                raise RuntimeFailure(f"exec {cmd!r} in container {container_id[:13]}: {error}")
            return ExecResult(stdout=stdout, stderr=stderr, exit_code=code if code >= 0 else 128 - code)
        finally:
            ep.cleanup()

    # --- ReopenContainerLog, UpdateContainerResources, ContainerStats ------------------------------

    def reopen_log(self, container_id: str) -> None:
        container = self.status(container_id)
        if container.state != ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(f"container {container_id[:13]} is not running")
        conmon.ctl(self._bundle(container_id), conmon.CTL_REOPEN_LOG)

    def update_resources(
        self, container_id: str, resources: LinuxContainerResources, notify: bool = True
    ) -> None:
        """runc update; plugins are told (and may refuse) unless `notify` is False (their own updates)."""
        spec.validate_resources(resources)
        with self.lock(container_id):
            container = self.status(container_id)
            if container.state == ContainerState.CONTAINER_EXITED:
                raise FailedPrecondition(f"container {container_id[:13]} has exited")
            if notify:
                self.hooks.update_container(container, resources)
            runtime = self.runtime(container.runtime_handler, container.id)
            runtime.update(container_id, spec.oci_resources(resources), self._bundle(container_id))
            old = container.config.resources
            if old is not None:
                resources.oom_score_adj = old.oom_score_adj  # runc update cannot change it

            def resized(c: Container) -> None:
                c.config.resources = resources

            container = self.lifecycle.update(container_id, None, resized)
            if notify:
                self.hooks.post_update_container(container)

    def stats(self, container_id: str) -> ContainerStats:

        container = self.get(container_id)
        path = container.cgroup
        return ContainerStats(
            container_id=container_id,
            timestamp=time.time_ns(),
            cpu_usage_core_nano_seconds=self.cgroups.cpu_usage_ns(path) if path else 0,
            memory_working_set_bytes=self.cgroups.memory_working_set(path) if path else 0,
            memory_usage_bytes=self.cgroups.memory_usage(path) if path else 0,
            writable_layer_used_bytes=_disk_usage(self.config.container_state_dir(container_id) / "upper"),
        )

    # --- recovery ----------------------------------------------------------------------------------

    def recover(self, marked: dict[str, builtins.list[procs.Proc]]) -> None:
        """At daemon start, from what runs: running containers stay running (their conmon is adopted for
        reaping); exits that happened while we were down are recorded; a container killed mid-StartContainer
        is RUNNING if the runtime says so; a half-made container (stage CREATING, or a bundle without a
        record) is killed through its marked processes and the runtime, and undone. `marked` is one scan
        of the instance's marked processes (procs.marked)."""
        for container in list(self.records):
            if container.stage == ContainerStage.CREATING:
                log.warning(
                    "container %s was half-made when the daemon stopped: undoing it", container.id[:13]
                )
                self._undo_orphan(container.id, marked.get(container.id, []))
                continue
            self.names.reserve(container_name_key(container.sandbox_id, container.config), container.id)
            namespaces.unmount(str(self._bundle(container.id) / SHM_DIR))  # killed between attach and detach
            conmon_alive = _alive_conmon(container)
            if conmon_alive:  # adopt it first, whatever its container's state: its exit must be reaped
                self._watcher.watch_process(container.conmon_pid, procs.start_time(container.conmon_pid))
            if container.stage == ContainerStage.EXITED or self._apply_exit(container.id):
                continue
            if container.stage == ContainerStage.RUNNING and procs.alive(
                container.pid, container.pid_start_time
            ):
                continue
            state = self._runtime_state(container)
            status = state.get("status") if state else None
            if status == "running" and container.stage == ContainerStage.CREATED:
                log.warning("container %s was started while the daemon stopped: it runs", container.id[:13])
                started_at = procs.started_ns(container.pid_start_time)

                def running(c: Container, started_at: int = started_at) -> None:
                    c.started_at = started_at

                self.lifecycle.update(container.id, ContainerStage.RUNNING, running)
                continue
            if status in ("running", "created", "paused"):
                continue
            if conmon_alive and self._apply_exit(container.id):  # it exited while we were adopting it
                continue
            self._apply_exit(container.id, lost_message="exited while podhost was down; exit status lost")
        procs.reap_zombie_children()  # conmons of ours that exited before we could adopt them
        self._sweep_orphans(marked)
        for handler in self.config.runtimes:  # the logs of runtime calls a killed daemon never finished
            for stale in ocirt.runtime_root(self.config.run_dir, handler).glob(ocirt.CALL_LOG_GLOB):
                stale.unlink(missing_ok=True)

    def _runtime_state(self, container: Container) -> dict[str, Any] | None:
        try:
            return self.runtime(container.runtime_handler, container.id).state(container.id)
        except (RuntimeFailure, InvalidArgument):
            return None

    def _sweep_orphans(self, marked: dict[str, builtins.list[procs.Proc]]) -> None:
        known = self.known_ids()
        for parent in (self.config.run_dir / "containers", self.config.state_dir / "containers"):
            if not parent.is_dir():
                continue
            for d in parent.iterdir():
                if d.name in known:
                    continue
                log.warning("container %s has files but no record: killing and cleaning it", d.name[:13])
                self._undo_orphan(d.name, marked.get(d.name, []))
        if self.exit_dir.is_dir():
            for f in self.exit_dir.iterdir():
                if f.name not in known:
                    f.unlink(missing_ok=True)

    def _undo_orphan(self, container_id: str, marked: builtins.list[procs.Proc]) -> None:
        """Kill and remove a container known only from what is on disk and what runs: its marked
        processes (conmon, a runtime caught mid-create), its runtime state (which kills its init), its
        cgroup (from the bundle's config.json), files and record."""
        for proc in marked:
            procs.kill(proc)
        bundle = self._bundle(container_id)
        cgroup, handler = "", self.config.default_runtime
        try:
            oci = json.loads((bundle / "config.json").read_text())
            cgroup = oci.get("linux", {}).get("cgroupsPath", "")
        except (OSError, ValueError):
            pass
        for name in self.config.runtimes:
            runtime = self.runtime(name)
            if (runtime.root / container_id).exists():
                handler = name
        ghost = Container(
            id=container_id, sandbox_id="", config=ContainerConfig(), runtime_handler=handler, cgroup=cgroup
        )
        with contextlib.suppress(RuntimeFailure):
            self.runtime(handler, container_id).delete(container_id, force=True)
        self._remove_files(ghost)
        self.records.delete(container_id)


def _alive_conmon(container: Container) -> bool:
    if container.conmon_pid <= 0:
        return False
    return (
        procs.state(container.conmon_pid) not in ("", "Z", "X")
        and procs.comm(container.conmon_pid) == "conmon"
    )


def rootfs_idmap(sandbox: PodSandbox) -> Idmap | None:
    """How the rootfs of a container of `sandbox` maps ids: by the pod's user namespace, if it has one."""
    userns = sandbox.config.namespace_options.userns
    uid, gid = userns.host_id(0), userns.host_id(0, gids=True)
    if "user" not in sandbox.ns_paths or uid is None or gid is None:
        return None
    return Idmap(sandbox.ns_paths["user"], uid, gid)


def _read_etc(rootfs_dir: Path) -> tuple[str, str]:
    """The image's /etc/passwd and /etc/group, read without following symlinks out of the rootfs."""
    out = []
    for name in ("passwd", "group"):
        path = rootfs_dir / "etc" / name
        try:
            if path.is_symlink() or not path.is_file():
                out.append("")
                continue
            out.append(path.read_text(errors="replace"))
        except OSError:
            out.append("")
    return out[0], out[1]


def _disk_usage(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
