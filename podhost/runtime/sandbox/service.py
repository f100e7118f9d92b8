"""SandboxService: the CRI sandbox lifecycle (RunPodSandbox, StopPodSandbox, RemovePodSandbox, status).

Theory of operation. A sandbox is Ready when its pause process is alive and its network is set up. Its
record moves only through podhost.runtime.lifecycle (CREATING -> READY -> LOST -> STOPPED -> deleted).

RunPodSandbox reserves the pod's name, writes the record in stage CREATING *before* the first side
effect, and goes through the named stages of podhost.runtime.stages, each registering its undo on an
ExitStack that is discarded only on success: an error, a timeout and a cancelled call all unwind the same
way. pause is started marked with the sandbox's id (podhost.runtime.procs), and its PID is written to the
record the moment it is known, so a daemon killed at any instant leaves a record (or, if the record is
unreadable, a run dir) from which `recover()` finds and kills it, releases the network and removes the
rest. Nothing half-made is ever finished by recovery: it is undone.

Pause's exit reaches us through its pidfd (podhost.runtime.procs). An exit we did not ask for means the
pod lost its network: the sandbox turns NotReady (LOST) with the reason in words, CNI DEL releases the IP
at once and the namespace pins are dropped, so the namespaces die with their last process. The pod
manager (or the kubelet) then stops the containers and makes a new sandbox with attempt+1.

Owns sandbox records, pause, the pins, the pod's run dir and shm, the pod cgroup; the network belongs to
PodNetwork, containers to the container service (the runtime facade orders the two).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from podhost import linux
from podhost.atomicfile import write_atomic
from podhost.config import Config
from podhost.errors import FailedPrecondition, RuntimeFailure
from podhost.runtime import metrics, namespaces, procs
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.events import EventBus
from podhost.runtime.hooks import LifecycleHooks
from podhost.runtime.lifecycle import (
    SANDBOX_TRANSITIONS,
    Lifecycle,
    NameIndex,
    RecordLookup,
    sandbox_cri_state,
)
from podhost.runtime.model import (
    ContainerEventType,
    NamespaceMode,
    NetworkInterfaceStats,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxState,
    PodSandboxStats,
    SandboxStage,
)
from podhost.runtime.network import conflist
from podhost.runtime.network.cni import PodNetwork
from podhost.runtime.sandbox import files, sysctls
from podhost.runtime.sandbox.pause import PauseSpec, id_map_lines, start_pause
from podhost.runtime.stages import StageTimer, UndoStack
from podhost.runtime.state import RecordStore

log = logging.getLogger(__name__)

SHM_SIZE = 64 * 1024 * 1024  # the kubelet's and containerd's default /dev/shm
SHM_ATTRS = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
PAUSE_EXIT_WAIT_S = 5.0
NAMESPACE_KINDS = ("net", "ipc", "uts", "pid", "user")
#: The sandbox's cgroup path, kept in its run dir: what cleans up after a sandbox whose record is lost.
CGROUP_FILE = "cgroup"


def sandbox_name_key(config: PodSandboxConfig) -> str:
    """The reserved name of a sandbox, as containerd forms it: name_namespace_uid_attempt."""
    m = config.metadata
    return f"{m.name}_{m.namespace}_{m.uid}_{m.attempt}"


def pod_namespaces(config: PodSandboxConfig) -> list[str]:
    """The namespaces pause founds. hostNetwork pods keep the node's network and UTS namespaces."""
    ns = []
    if not config.host_network:
        ns += ["net", "uts"]
    if config.namespace_options.ipc != NamespaceMode.NODE:
        ns.append("ipc")
    if config.shares_pid:
        ns.append("pid")
    return ns


class SandboxService(RecordLookup[PodSandbox, SandboxStage]):
    def __init__(
        self,
        config: Config,
        records: RecordStore[PodSandbox],
        events: EventBus,
        watcher: procs.ProcessWatcher,
        network: PodNetwork,
        cgroups: Cgroups,
    ) -> None:
        self.config = config
        self.records = records
        self.lifecycle: Lifecycle[PodSandbox, SandboxStage] = Lifecycle(
            records, SANDBOX_TRANSITIONS, sandbox_cri_state, events, lambda s: s.id, "pod sandbox"
        )
        self.events = events
        self.watcher = watcher
        self.network = network
        self.cgroups = cgroups
        self.names = NameIndex("pod sandbox")
        self._lock = threading.Lock()  # guards the maps below
        self._inflight: dict[str, Future[str]] = {}
        self._exited: dict[str, threading.Event] = {}
        self._expected_exit: set[str] = set()
        #: called (sandbox) when pause died unexpectedly, after the sandbox turned NotReady.
        self.on_sandbox_death: Callable[[PodSandbox], None] | None = None
        #: NRI's part in the lifecycle (podhost.runtime.hooks); does nothing without plugins.
        self.hooks = LifecycleHooks()

    # --- helpers -----------------------------------------------------------------------------------

    def lock(self, sandbox_id: str) -> contextlib.AbstractContextManager[None]:
        """The sandbox's lock: held by every change of it, and by the facade across a whole Stop/Remove."""
        return self.lifecycle.locks.hold(sandbox_id)

    def list_sandboxes(self) -> list[PodSandbox]:
        """The sandboxes callers may see: a RunPodSandbox still under way is not one yet."""
        return self.lifecycle.visible()

    def cgroup_path(self, sandbox_id: str, config: PodSandboxConfig) -> str:
        parent = config.cgroup_parent or self.config.cgroup_parent
        return parent.rstrip("/") + "/pod-" + sandbox_id[:32]

    def _make_pod_cgroup(self, path: str, pause_pid: Future[int]) -> None:
        """Make the pod cgroup, then move pause into it once it runs (a cancelled `pause_pid`: never)."""
        self.cgroups.create(path)
        self.cgroups.add_process(path, pause_pid.result())

    @staticmethod
    def _new_shm() -> int:
        """The pod's /dev/shm, a tmpfs mounted nowhere, for pause to hold (namespaces.attach_held)."""
        try:
            return linux.detached_mount(
                b"tmpfs", {b"size": str(SHM_SIZE).encode(), b"mode": b"1777"}, SHM_ATTRS
            )
        except OSError as e:
            raise RuntimeFailure(f"the pod's /dev/shm: {e.strerror}") from e

    # --- RunPodSandbox -----------------------------------------------------------------------------

    def run(self, config: PodSandboxConfig, runtime_handler: str = "") -> str:
        """Create and start a sandbox; a retry of an in-flight call for the same pod gets the same id."""
        key = sandbox_name_key(config)
        sandbox_id = secrets.token_hex(32)
        with self._lock:
            pending = self._inflight.get(key)
            if pending is None:
                self.names.reserve(key, sandbox_id)  # AlreadyExists when a sandbox holds the name
                future: Future[str] = Future()
                self._inflight[key] = future
        if pending is not None:
            log.info("RunPodSandbox %s retried while in flight: waiting for the first call", key)
            return pending.result()
        try:
            self._run(sandbox_id, config, runtime_handler)
        except BaseException as e:
            self.names.release(key, sandbox_id)
            future.set_exception(e)
            raise
        else:
            future.set_result(sandbox_id)
            return sandbox_id
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _run(self, sandbox_id: str, config: PodSandboxConfig, runtime_handler: str) -> None:
        stages = StageTimer("RunPodSandbox")
        sandbox = PodSandbox(
            id=sandbox_id,
            config=config,
            runtime_handler=runtime_handler,
            created_at=time.time_ns(),
            stage=SandboxStage.CREATING,
            cgroup=self.cgroup_path(sandbox_id, config),
        )
        run_dir = self.config.sandbox_run_dir(sandbox_id)
        network = None if config.host_network else self.network.new_pod_network()
        pod_sysctls = config.sysctls
        if network is not None and conflist.ipv4_only(network):
            pod_sysctls = sysctls.for_ipv4_only_network(pod_sysctls)
        encoded_sysctls = sysctls.pause_sysctls(
            pod_sysctls, config.host_network, config.namespace_options.ipc == NamespaceMode.NODE
        )
        with self.lock(sandbox_id), UndoStack() as undo:
            # Write-ahead: the record exists before any side effect, so recovery undoes what this call
            # leaves. Not fsynced: after a machine crash nothing it names survives either, and what
            # does (a CNI attachment) is released for having no record.
            self.lifecycle.create(sandbox, durable=False)
            undo.callback(self.lifecycle.delete, sandbox_id)

            stages.enter("sandbox files")
            run_dir.mkdir(parents=True, exist_ok=True)
            undo.callback(shutil.rmtree, run_dir, True)
            write_atomic(run_dir / CGROUP_FILE, sandbox.cgroup.encode(), 0o644, durable=False)
            hostname = files.pod_hostname(config.hostname, config.metadata.name)
            self._write_files(sandbox, hostname, ips=[])

            stages.enter("pod cgroup")
            # Made on a daemon thread while pause starts, which then moves pause in (overlapping pins and
            # CNI ADD): the first migration into a cgroup after a quiet spell waits ~10 ms for an RCU grace
            # period, and the mkdirs in every v1 hierarchy take ~1 ms.
            undo.callback(self.cgroups.remove, sandbox.cgroup)
            pause_pid: Future[int] = Future()
            cgroup_join: Future[None] = Future()
            joiner = threading.Thread(
                target=_run_into,
                args=(cgroup_join, self._make_pod_cgroup, sandbox.cgroup, pause_pid),
                name=f"cgroup-join-{sandbox_id[:8]}",
                daemon=True,
            )
            joiner.start()
            undo.callback(joiner.join, 10)  # the cgroup is made (or never will be) before it is removed
            undo.callback(pause_pid.cancel)  # no pause: the joiner stops waiting for one

            stages.enter("pause")
            ns = pod_namespaces(config)
            userns = config.namespace_options.userns
            id_maps = (
                (id_map_lines(userns.uids), id_map_lines(userns.gids))
                if config.namespace_options.pod_userns
                else None
            )
            shm_fd = self._new_shm() if config.namespace_options.ipc != NamespaceMode.NODE else -1
            if shm_fd >= 0:
                sandbox.shm_fd, sandbox.shm_dev = shm_fd, os.fstat(shm_fd).st_dev
            spec = PauseSpec(ns, hostname if "uts" in ns else "", [], encoded_sysctls, id_maps, shm_fd)
            # Registered before the start: whatever ran under this sandbox's mark dies on any failure.
            undo.callback(self._kill_pause, sandbox_id, True)
            try:
                pause = start_pause(
                    self.config.pause_path,
                    spec,
                    self.config.instance_id,
                    sandbox_id,
                    self.config.pause_start_timeout,
                )
            except RuntimeFailure as e:
                raise RuntimeFailure(f"{stages.current}: {e}") from e
            finally:
                if shm_fd >= 0:
                    os.close(shm_fd)  # pause has its own copy, at the same number
            stages.enter("pause started")
            sandbox.pid, sandbox.pid_start_time = pause.pid, pause.start_time

            def started(s: PodSandbox) -> None:
                s.pid, s.pid_start_time = pause.pid, pause.start_time
                s.shm_fd, s.shm_dev = sandbox.shm_fd, sandbox.shm_dev

            self.lifecycle.update(sandbox_id, None, started, durable=False)  # the PID, the moment it is known
            with self._lock:
                self._exited[sandbox_id] = threading.Event()
            self.watcher.watch(pause.pid, pause.start_time, functools.partial(self._pause_exited, sandbox_id))
            pause_pid.set_result(pause.pid)

            stages.enter("namespace pins")
            for kind in ns + (["user"] if id_maps is not None else []):
                if kind not in namespaces.PINNED:
                    sandbox.ns_paths[kind] = namespaces.held_by(pause.pid, kind)
                    continue
                sandbox.ns_paths[kind] = namespaces.pin(pause.pid, kind, run_dir / "ns" / kind)
                undo.callback(namespaces.unpin, sandbox.ns_paths[kind])

            if not config.host_network:
                stages.enter("sandbox network creation")
                m = config.metadata
                try:
                    # A failed ADD is DELeted by setup itself (a failed ADD may still have allocated),
                    # and its attachment kept if that DEL fails too, for a retry at daemon start.
                    with self.pod_netns(sandbox) as netns:
                        if not netns:
                            raise RuntimeFailure(
                                f"pause (pid {pause.pid}) exited before its network was made"
                            )
                        result = self.network.setup(
                            sandbox_id, netns, m.namespace, m.name, m.uid, config.port_mappings, network
                        )
                except RuntimeFailure as e:
                    raise RuntimeFailure(f"{stages.current}: {e}") from e
                undo.callback(self._teardown_network, sandbox)
                ips = list(result.get("ips") or ([result["ip"]] if result.get("ip") else []))
                sandbox.ip = ips[0] if ips else ""
                sandbox.additional_ips = ips[1:]
                self._write_files(sandbox, hostname, ips)

            stages.enter("pod cgroup join")
            try:
                cgroup_join.result(timeout=10)
            except (RuntimeFailure, TimeoutError) as e:
                raise RuntimeFailure(f"pod cgroup: {e}") from e
            stages.enter("NRI plugins")  # the sandbox is whole but hidden: plugins may still refuse it
            undo.callback(self.hooks.pod_sandbox_undone, sandbox)
            self.hooks.run_pod_sandbox(sandbox)
            stages.enter("record")
            if not pause.alive():
                raise RuntimeFailure(f"pause (pid {pause.pid}) exited while the sandbox was being created")
            made = sandbox

            def ready(s: PodSandbox) -> None:
                s.pid, s.pid_start_time, s.ns_paths = made.pid, made.pid_start_time, dict(made.ns_paths)
                s.shm_fd, s.shm_dev = made.shm_fd, made.shm_dev
                s.ip, s.additional_ips = made.ip, list(made.additional_ips)

            self.lifecycle.update(sandbox_id, SandboxStage.READY, ready)
            undo.pop_all()
        stages.enter("")
        log.info(
            "sandbox %s (%s) ready: %s ip=%s", sandbox_id[:13], sandbox_name_key(config), stages, sandbox.ip
        )
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_CREATED_EVENT, sandbox_id)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_STARTED_EVENT, sandbox_id)

    def _write_files(self, sandbox: PodSandbox, hostname: str, ips: list[str]) -> None:
        run_dir = self.config.sandbox_run_dir(sandbox.id)
        config = sandbox.config
        if config.host_network:
            hosts = Path("/etc/hosts").read_bytes() if Path("/etc/hosts").exists() else b""
            hostname = os.uname().nodename
        else:
            hosts = files.hosts_file(hostname, ips).encode()
        write_atomic(run_dir / "hosts", hosts, 0o644, durable=False)
        write_atomic(run_dir / "hostname", (hostname + "\n").encode(), 0o644, durable=False)
        if files.has_dns(config.dns_config):
            assert config.dns_config is not None
            resolv = files.resolv_conf(config.dns_config).encode()
        else:
            try:
                resolv = self.config.default_resolv_conf.read_bytes()
            except OSError:
                resolv = b""
        write_atomic(run_dir / "resolv.conf", resolv, 0o644, durable=False)

    # --- pause exits -------------------------------------------------------------------------------

    def _kill_pause(self, sandbox_id: str, scan: bool = False, marked: Iterable[procs.Proc] = ()) -> None:
        """SIGKILL the sandbox's recorded pause and wait until it is gone. `scan` also kills whatever runs
        under the sandbox's mark (a pause whose PID never reached the record: a failed start, a crash);
        it reads every process's environment, so only failure and recovery paths ask for it, and recovery
        passes what one scan found as `marked`."""
        with self._lock:
            self._expected_exit.add(sandbox_id)
            exited = self._exited.get(sandbox_id)
        sandbox = self.records.get(sandbox_id)
        recorded = procs.Proc(sandbox.pid, sandbox.pid_start_time) if sandbox is not None else None
        victims = [recorded] if recorded is not None and recorded.pid > 0 else []
        victims += marked
        if scan:  # with whatever they started, until nothing under the mark is left
            victims = procs.kill_owner(self.config.instance_id, sandbox_id, victims)
        for proc in victims:
            procs.kill(proc)
        if recorded in victims and exited is not None:
            exited.wait(PAUSE_EXIT_WAIT_S)  # the watcher has reaped it: its exit is no news to handle
        if procs.await_gone(victims, PAUSE_EXIT_WAIT_S):
            log.error("sandbox %s: pause survives SIGKILL: %s", sandbox_id[:13], victims)
        if victims:
            procs.reap_zombie_children()  # a pause killed before its pidfd was watched

    def _pause_exited(self, sandbox_id: str, status: procs.ExitStatus) -> None:
        with self._lock:
            exited = self._exited.get(sandbox_id)
            expected = sandbox_id in self._expected_exit
        if exited is not None:
            exited.set()  # before taking any sandbox lock: stop() may hold it while waiting for this
        if expected:
            return
        threading.Thread(
            target=self._handle_pause_death,
            args=(sandbox_id, status),
            daemon=True,
            name=f"pause-death-{sandbox_id[:8]}",
        ).start()

    def _handle_pause_death(self, sandbox_id: str, status: procs.ExitStatus) -> None:
        with self.lock(sandbox_id):
            sandbox = self.records.get(sandbox_id)
            if sandbox is None or sandbox.stage != SandboxStage.READY:
                return
            message = status.describe("pause")
            log.warning("sandbox %s: %s; the pod lost its network", sandbox_id[:13], message)

            def lost(s: PodSandbox) -> None:
                s.reason, s.message = "PauseExited", message

            # NotReady is visible before the slow part; not fsynced, as recovery finds pause dead anyway.
            sandbox = self.lifecycle.update(
                sandbox_id, SandboxStage.LOST, lost, ContainerEventType.CONTAINER_STOPPED_EVENT, durable=False
            )
            with contextlib.suppress(RuntimeFailure):  # retried at stop and at daemon start
                sandbox = self._release_network(sandbox)
        if self.on_sandbox_death is not None:
            self.on_sandbox_death(sandbox)

    @contextlib.contextmanager
    def pod_netns(self, sandbox: PodSandbox) -> Iterator[str]:
        """A path to the pod's netns that stays it while the block runs; "" once pause is gone."""
        if sandbox.pid <= 0 or sandbox.config.host_network:
            yield ""
            return
        with namespaces.entered(procs.Proc(sandbox.pid, sandbox.pid_start_time), "net") as path:
            yield path

    def _teardown_network(self, sandbox: PodSandbox) -> None:
        """CNI DEL in pause's netns while pause runs, else with an empty CNI_NETNS (SPEC.md: DEL succeeds
        when the namespace is gone): the namespace dies with its last process and the kernel removes the
        veth in its own time. Removing the veth inside the namespace was ~30 of a DEL's ~37 ms; host-local
        hands the released IP out again only after the rest of its range, long after the kernel is done."""
        with self.pod_netns(sandbox) as netns:
            self.network.teardown(sandbox.id, netns)

    def _release_network(self, sandbox: PodSandbox) -> PodSandbox:
        """CNI DEL (releases the IP even when the netns is gone), then drop the namespace pins and the
        shm; the record says so afterwards. A failed DEL raises, leaving pins and record for a retry."""
        run_dir = self.config.sandbox_run_dir(sandbox.id)
        if not sandbox.config.host_network:
            try:
                self._teardown_network(sandbox)
            except RuntimeFailure:
                log.exception(
                    "sandbox %s: CNI DEL failed; retried at stop and at daemon start", sandbox.id[:13]
                )
                raise
        for kind in NAMESPACE_KINDS:
            namespaces.unpin(str(run_dir / "ns" / kind))
        namespaces.unmount(str(run_dir / "shm"))
        if not sandbox.ns_paths:
            return sandbox

        def unpinned(s: PodSandbox) -> None:
            s.ns_paths = {}

        return self.lifecycle.update(sandbox.id, None, unpinned)

    # --- StopPodSandbox / RemovePodSandbox ---------------------------------------------------------

    def stop(self, sandbox_id: str, stages: StageTimer | None = None) -> None:
        """Kill pause, tear down the network, drop pins. Idempotent; an unknown id is fine (CRI).
        Containers are stopped by the caller. `stages` is the StopPodSandbox request's own timer."""
        stages = stages or StageTimer("")
        with self.lock(sandbox_id):
            sandbox = self.records.get(sandbox_id)
            if sandbox is None or sandbox.stage in (SandboxStage.STOPPED, SandboxStage.CREATING):
                return
            # Once per sandbox (a second stop returns above), its containers stopped, pause still up.
            stages.enter("NRI plugins")
            self.hooks.stop_pod_sandbox(sandbox)
            stages.enter("kill pause")
            if sandbox.stage == SandboxStage.READY:
                self._kill_pause(sandbox_id)

                def stopping(s: PodSandbox) -> None:
                    s.reason, s.message = "Stopped", "StopPodSandbox"

                # NotReady before the network goes; not fsynced: recovery finds pause dead anyway.
                sandbox = self.lifecycle.update(sandbox_id, SandboxStage.LOST, stopping, durable=False)
            stages.enter("network teardown")
            sandbox = self._release_network(sandbox)
            stages.enter("record")
            self.lifecycle.update(
                sandbox_id, SandboxStage.STOPPED, None, ContainerEventType.CONTAINER_STOPPED_EVENT
            )

    def remove(self, sandbox_id: str, stages: StageTimer | None = None) -> None:
        """Stop, then delete every trace: run dir, cgroup, record. Unknown ids are fine (CRI: idempotent).
        Containers are removed by the caller first. `stages` is the RemovePodSandbox request's timer."""
        stages = stages or StageTimer("")
        with self.lock(sandbox_id):
            sandbox = self.records.get(sandbox_id)
            if sandbox is None or sandbox.stage == SandboxStage.CREATING:
                return
            stages.enter("stop")
            self.stop(sandbox_id)
            stages.enter("cgroup")
            self.cgroups.remove(sandbox.cgroup)
            stages.enter("files")
            shutil.rmtree(self.config.sandbox_run_dir(sandbox_id), ignore_errors=True)
            stages.enter("record")
            self.records.delete(sandbox_id)
            self.names.release(sandbox_name_key(sandbox.config), sandbox_id)
            self.hooks.remove_pod_sandbox(sandbox)
            with self._lock:
                self._exited.pop(sandbox_id, None)
                self._expected_exit.discard(sandbox_id)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_DELETED_EVENT, sandbox_id)

    def stats(self, sandbox_id: str) -> PodSandboxStats:
        """CPU, memory and processes of the pod cgroup; interface counters of the pod's netns (read through
        pause's /proc/<pid>/net/dev, which shows the namespace the process is in)."""
        sandbox = self.get(sandbox_id)
        interfaces = [
            NetworkInterfaceStats(i.name, i.rx_bytes, i.rx_errors, i.tx_bytes, i.tx_errors)
            for i in metrics.read_interfaces(sandbox)
            if i.name != "lo"
        ]
        cgroups = self.cgroups
        return PodSandboxStats(
            sandbox=sandbox,
            timestamp=time.time_ns(),
            cpu_usage_core_nano_seconds=cgroups.cpu_usage_ns(sandbox.cgroup),
            memory_working_set_bytes=cgroups.memory_working_set(sandbox.cgroup),
            memory_usage_bytes=cgroups.memory_usage(sandbox.cgroup),
            process_count=len(cgroups.pids(sandbox.cgroup)),
            interfaces=interfaces,
        )

    def require_ready(self, sandbox_id: str) -> PodSandbox:
        sandbox = self.get(sandbox_id)
        if sandbox.state != PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(
                f"pod sandbox {sandbox_id} is not ready ({sandbox.message or sandbox.stage.value})"
            )
        return sandbox

    # --- recovery ----------------------------------------------------------------------------------

    def recover(self) -> None:
        """Reconcile records with what runs after a (re)start. A half-made sandbox is undone, never
        finished; a Ready one whose pause died while we were away turns LOST; a sandbox whose record is
        unreadable or missing is found through its run dir and its processes' marks, killed and cleaned."""
        procs.reap_zombie_children()
        self.network.sweep_partial_writes()
        marked = procs.marked(self.config.instance_id)
        runs = self.config.run_dir / "sandboxes"
        for sandbox in list(self.records):
            if sandbox.stage == SandboxStage.CREATING:
                log.warning("sandbox %s was half-made when the daemon stopped: undoing it", sandbox.id[:13])
                self._clean_up(sandbox.id, sandbox.cgroup, marked.get(sandbox.id, []))
                continue
            self.names.reserve(sandbox_name_key(sandbox.config), sandbox.id)
            if sandbox.stage == SandboxStage.READY:
                if self._adopt(sandbox):
                    continue
                self._handle_pause_death(sandbox.id, procs.ExitStatus(sandbox.pid))
            else:  # LOST or STOPPED: a crash may have come between the kill and the record, or mid-release
                self._kill_pause(sandbox.id, marked=marked.get(sandbox.id, []))
                if sandbox.ns_paths:
                    with contextlib.suppress(RuntimeFailure):
                        self._release_network(sandbox)
        for orphan in sorted(set(_dir_names(runs)) - self.known_ids()):
            log.warning("sandbox %s has a run dir but no record: killing and cleaning it", orphan[:13])
            self._clean_up(orphan, _read_text(runs / orphan / CGROUP_FILE), marked.get(orphan, []))
        for sandbox_id in self.network.attachments():
            owner = self.records.get(sandbox_id)
            if owner is None or owner.state != PodSandboxState.SANDBOX_READY:
                log.info("releasing the CNI attachment of gone sandbox %s", sandbox_id[:13])
                try:
                    if owner is None:
                        self.network.teardown(sandbox_id, None)
                    else:
                        self._teardown_network(owner)
                except RuntimeFailure:
                    log.exception("CNI DEL for %s failed", sandbox_id[:13])

    def _adopt(self, sandbox: PodSandbox) -> bool:
        """Watch a Ready sandbox's pause again; False when it is gone."""
        if not procs.alive(sandbox.pid, sandbox.pid_start_time):
            return False
        with self._lock:
            self._exited[sandbox.id] = threading.Event()
        self.watcher.watch(
            sandbox.pid, sandbox.pid_start_time, functools.partial(self._pause_exited, sandbox.id)
        )
        return procs.alive(sandbox.pid, sandbox.pid_start_time)

    def _clean_up(self, sandbox_id: str, cgroup: str, marked: list[procs.Proc]) -> None:
        """Undo every trace of a sandbox from what is on disk and what runs: its processes (recorded or
        marked), its network, pins, shm, cgroup, run dir and record."""
        self._kill_pause(sandbox_id, marked=marked)
        run_dir = self.config.sandbox_run_dir(sandbox_id)
        with contextlib.suppress(RuntimeFailure):
            self.network.teardown(sandbox_id, str(run_dir / "ns" / "net"))
        for kind in NAMESPACE_KINDS:
            namespaces.unpin(str(run_dir / "ns" / kind))
        namespaces.unmount(str(run_dir / "shm"))
        if cgroup:
            with contextlib.suppress(RuntimeFailure):
                self.cgroups.remove(cgroup)
        shutil.rmtree(run_dir, ignore_errors=True)
        self.records.delete(sandbox_id)
        with self._lock:
            self._exited.pop(sandbox_id, None)


def _dir_names(path: Path) -> Iterator[str]:
    if path.is_dir():
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                yield entry.name


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _run_into(future: Future[None], fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on this thread and settle `future` with its outcome."""
    try:
        fn(*args)
    except BaseException as e:  # handed to the waiting thread, which re-raises it
        future.set_exception(e)
    else:
        future.set_result(None)
