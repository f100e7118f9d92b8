"""SandboxService: the CRI sandbox lifecycle (RunPodSandbox, StopPodSandbox, RemovePodSandbox, status).

Theory of operation. A sandbox is Ready when its pause process is alive and its network is set up.
RunPodSandbox goes through named stages; the record is written *before* the first side effect with
stage "creating", and every step registers its undo on an ExitStack that is discarded only on success,
so a failure unwinds everything, and a daemon killed mid-way leaves a record that `recover()` rolls back.

    creating --pause started--> started --CNI ADD--> ready --stop / pause died--> stopped (NotReady)

Pause's exit reaches us through its pidfd (podhost.runtime.procs). An exit we did not ask for means the
pod lost its network: the sandbox turns NotReady with the reason in words, CNI DEL releases the IP at once
and the namespace pins are dropped, so the namespaces die with their last process. The pod manager (or
the kubelet) then stops the containers and makes a new sandbox with attempt+1.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from podhost.config import Config
from podhost.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from podhost.runtime import mount, namespaces, procs
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.events import EventBus
from podhost.runtime.model import (
    ContainerEventType,
    NamespaceMode,
    NetworkInterfaceStats,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxState,
    PodSandboxStats,
)
from podhost.runtime.network.cni import PodNetwork
from podhost.runtime.sandbox import files, sysctls
from podhost.runtime.sandbox.pause import PauseSpec, start_pause
from podhost.runtime.state import RecordStore, write_atomic

log = logging.getLogger(__name__)

SHM_SIZE = 64 * 1024 * 1024  # the kubelet's and containerd's default /dev/shm


def sandbox_name_key(config: PodSandboxConfig) -> str:
    """The reserved name of a sandbox, as containerd forms it: name_namespace_uid_attempt."""
    m = config.metadata
    return f"{m.name}_{m.namespace}_{m.uid}_{m.attempt}"


def validate(config: PodSandboxConfig) -> None:
    m = config.metadata
    for field_name in ("name", "namespace", "uid"):
        if not getattr(m, field_name):
            raise InvalidArgument(f"PodSandboxConfig.metadata.{field_name} is required")
    if m.attempt < 0:
        raise InvalidArgument("PodSandboxConfig.metadata.attempt must not be negative")
    for pm in config.port_mappings:
        if pm.protocol.upper() not in ("TCP", "UDP", "SCTP"):
            raise InvalidArgument(f"port_mappings: unknown protocol {pm.protocol!r}")
        if not 0 < pm.container_port < 65536 or not 0 <= pm.host_port < 65536:
            raise InvalidArgument(f"port_mappings: invalid port {pm.container_port}->{pm.host_port}")


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


class SandboxService:
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
        self.events = events
        self.watcher = watcher
        self.network = network
        self.cgroups = cgroups
        self._lock = threading.Lock()  # guards the maps below
        self._sandbox_locks: dict[str, threading.RLock] = {}
        self._inflight: dict[str, Future[str]] = {}
        self._exited: dict[str, threading.Event] = {}
        self._expected_exit: set[str] = set()
        #: called (sandbox) when pause died unexpectedly, after the sandbox turned NotReady.
        self.on_sandbox_death: Callable[[PodSandbox], None] | None = None

    # --- helpers -----------------------------------------------------------------------------------

    def _lock_for(self, sandbox_id: str) -> threading.RLock:
        with self._lock:
            return self._sandbox_locks.setdefault(sandbox_id, threading.RLock())

    def get(self, sandbox_id: str) -> PodSandbox:
        sandbox = self.records.get(sandbox_id)
        if sandbox is None:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found")
        return sandbox

    def resolve(self, id_or_prefix: str) -> PodSandbox:
        """A sandbox by full id or unique prefix (as crictl allows)."""
        sandbox = self.records.get(id_or_prefix)
        if sandbox is not None:
            return sandbox
        matches = [s for s in self.records if id_or_prefix and s.id.startswith(id_or_prefix)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"pod sandbox id prefix {id_or_prefix!r} is ambiguous")
        raise NotFound(f"pod sandbox {id_or_prefix!r} not found")

    def list_sandboxes(self) -> list[PodSandbox]:
        return sorted(self.records, key=lambda s: s.created_at)

    def _save(self, sandbox: PodSandbox) -> None:
        self.records.put(sandbox.id, sandbox)

    def cgroup_path(self, sandbox_id: str, config: PodSandboxConfig) -> str:
        parent = config.cgroup_parent or self.config.cgroup_parent
        return parent.rstrip("/") + "/pod-" + sandbox_id[:32]

    # --- RunPodSandbox -----------------------------------------------------------------------------

    def run(self, config: PodSandboxConfig, runtime_handler: str = "") -> str:
        """Create and start a sandbox; a retry of an in-flight call for the same pod gets the same id."""
        validate(config)
        key = sandbox_name_key(config)
        with self._lock:
            pending = self._inflight.get(key)
            if pending is None:
                for existing in self.records:
                    if sandbox_name_key(existing.config) == key:
                        raise AlreadyExists(f"pod sandbox name {key!r} is reserved for {existing.id}")
                future: Future[str] = Future()
                self._inflight[key] = future
        if pending is not None:
            log.info("RunPodSandbox %s retried while in flight: waiting for the first call", key)
            return pending.result()
        try:
            sandbox_id = self._run(config, runtime_handler)
        except BaseException as e:
            future.set_exception(e)
            raise
        else:
            future.set_result(sandbox_id)
            return sandbox_id
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _run(self, config: PodSandboxConfig, runtime_handler: str) -> str:
        sandbox_id = secrets.token_hex(32)
        stages = StageTimer()
        sandbox = PodSandbox(
            id=sandbox_id,
            config=config,
            runtime_handler=runtime_handler,
            created_at=time.time_ns(),
            stage="creating",
        )
        sandbox.cgroup = self.cgroup_path(sandbox_id, config)
        run_dir = self.config.sandbox_run_dir(sandbox_id)
        encoded_sysctls = sysctls.pause_sysctls(
            config.sysctls, config.host_network, config.namespace_options.ipc == NamespaceMode.NODE
        )
        with self._lock_for(sandbox_id), contextlib.ExitStack() as undo:
            self._save(sandbox)  # before any side effect: recovery rolls back what this call leaves
            undo.callback(self.records.delete, sandbox_id)

            stages.enter("sandbox files")
            run_dir.mkdir(parents=True, exist_ok=True)
            undo.callback(shutil.rmtree, run_dir, True)
            hostname = files.pod_hostname(config.hostname, config.metadata.name)
            self._write_files(sandbox, hostname, ips=[])
            shm = run_dir / "shm"
            shm.mkdir(mode=0o1777, exist_ok=True)
            if config.namespace_options.ipc != NamespaceMode.NODE:
                mount.mount(
                    "shm",
                    str(shm),
                    "tmpfs",
                    mount.MS_NOSUID | mount.MS_NODEV | mount.MS_NOEXEC,
                    f"mode=1777,size={SHM_SIZE}",
                )
                undo.callback(namespaces.unmount, str(shm))

            stages.enter("pod cgroup")
            self.cgroups.create(sandbox.cgroup)
            undo.callback(self.cgroups.remove, sandbox.cgroup)

            stages.enter("pause")
            ns = pod_namespaces(config)
            # pause joins the pod cgroup from a daemon thread, overlapping pins and CNI ADD: the first
            # migration into a cgroup after a quiet spell waits ~10 ms for an RCU grace period.
            spec = PauseSpec(ns, hostname if "uts" in ns else "", [], encoded_sysctls)
            try:
                pid = start_pause(self.config.pause_path, spec)
            except RuntimeFailure as e:
                raise _in_stage(e, stages.current) from e
            sandbox.pid, sandbox.pid_start_time = pid, procs.start_time(pid)
            undo.callback(self._kill_pause, sandbox)
            exited = threading.Event()
            with self._lock:
                self._exited[sandbox_id] = exited
            self.watcher.watch(pid, sandbox.pid_start_time, functools.partial(self._pause_exited, sandbox_id))
            cgroup_join: Future[None] = Future()
            threading.Thread(
                target=_run_into,
                args=(cgroup_join, self.cgroups.add_process, sandbox.cgroup, pid),
                name=f"cgroup-join-{sandbox_id[:8]}",
                daemon=True,
            ).start()

            stages.enter("namespace pins")
            for kind in ns:
                sandbox.ns_paths[kind] = namespaces.pin(pid, kind, run_dir / "ns" / kind)
                undo.callback(namespaces.unpin, sandbox.ns_paths[kind])
            sandbox.stage = "started"

            if not config.host_network:
                stages.enter("sandbox network creation")
                # Registered before ADD: a failed ADD may still have allocated (CNI spec, DEL is idempotent).
                undo.callback(self.network.teardown, sandbox_id, sandbox.netns_path)
                m = config.metadata
                try:
                    result = self.network.setup(
                        sandbox_id, sandbox.netns_path, m.namespace, m.name, m.uid, config.port_mappings
                    )
                except RuntimeFailure as e:
                    raise _in_stage(e, stages.current) from e
                ips = list(result.get("ips") or ([result["ip"]] if result.get("ip") else []))
                sandbox.ip = ips[0] if ips else ""
                sandbox.additional_ips = ips[1:]
                sandbox.network = result.get("result", {})
                self._write_files(sandbox, hostname, ips)

            stages.enter("pod cgroup join")
            try:
                cgroup_join.result(timeout=10)
            except (RuntimeFailure, TimeoutError) as e:
                raise RuntimeFailure(f"pod cgroup: {e}") from e
            stages.enter("record")
            if not procs.alive(sandbox.pid, sandbox.pid_start_time):
                raise RuntimeFailure(f"pause (pid {pid}) exited while the sandbox was being created")
            sandbox.stage = "ready"
            sandbox.state = PodSandboxState.SANDBOX_READY
            self._save(sandbox)
            undo.pop_all()
        stages.enter("")
        log.info(
            "sandbox %s (%s) ready: %s ip=%s", sandbox_id[:13], sandbox_name_key(config), stages, sandbox.ip
        )
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_CREATED_EVENT, sandbox_id)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_STARTED_EVENT, sandbox_id)
        return sandbox_id

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

    def _kill_pause(self, sandbox: PodSandbox) -> None:
        """SIGKILL pause (if it is still the process we started) and wait for it to be gone."""
        with self._lock:
            self._expected_exit.add(sandbox.id)
            exited = self._exited.get(sandbox.id)
        if procs.alive(sandbox.pid, sandbox.pid_start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(sandbox.pid, signal.SIGKILL)
            if exited is None or not exited.wait(5):
                deadline = time.monotonic() + 5
                while procs.alive(sandbox.pid, sandbox.pid_start_time) and time.monotonic() < deadline:
                    time.sleep(0.01)

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
        with self._lock_for(sandbox_id):
            sandbox = self.records.get(sandbox_id)
            if sandbox is None or sandbox.state != PodSandboxState.SANDBOX_READY:
                return
            message = status.describe("pause")
            log.warning("sandbox %s: %s; the pod lost its network", sandbox_id[:13], message)
            sandbox.state = PodSandboxState.SANDBOX_NOTREADY
            sandbox.reason, sandbox.message = "PauseExited", message
            self._save(sandbox)  # NotReady is visible before the slow part
            self._release_network(sandbox)
            self._save(sandbox)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_STOPPED_EVENT, sandbox_id)
        if self.on_sandbox_death is not None:
            self.on_sandbox_death(sandbox)

    def _release_network(self, sandbox: PodSandbox) -> None:
        """CNI DEL (releases the IP even when the netns is gone) and drop the namespace pins. The caller
        writes the record."""
        if not sandbox.config.host_network:
            try:
                self.network.teardown(sandbox.id, sandbox.netns_path or None)
            except RuntimeFailure:
                log.exception(
                    "sandbox %s: CNI DEL failed; retried at stop and at daemon start", sandbox.id[:13]
                )
                raise
        for pin in sandbox.ns_paths.values():
            namespaces.unpin(pin)
        sandbox.ns_paths = {}

    # --- StopPodSandbox / RemovePodSandbox ---------------------------------------------------------

    def stop(self, sandbox_id: str) -> None:
        """Kill pause, tear down the network, drop pins. Idempotent. Containers are stopped by the caller."""
        with self._lock_for(sandbox_id):
            sandbox = self.get(sandbox_id)
            if sandbox.stage == "stopped":
                return
            self._kill_pause(sandbox)
            self._release_network(sandbox)
            namespaces.unmount(str(self.config.sandbox_run_dir(sandbox_id) / "shm"))
            sandbox.state = PodSandboxState.SANDBOX_NOTREADY
            sandbox.stage = "stopped"
            self._save(sandbox)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_STOPPED_EVENT, sandbox_id)

    def remove(self, sandbox_id: str) -> None:
        """Stop, then delete every trace: run dir, cgroup, record. Unknown ids are fine (CRI: idempotent)."""
        if self.records.get(sandbox_id) is None:
            return
        self.stop(sandbox_id)
        with self._lock_for(sandbox_id):
            sandbox = self.records.get(sandbox_id)
            if sandbox is None:
                return
            self.cgroups.remove(sandbox.cgroup)
            shutil.rmtree(self.config.sandbox_run_dir(sandbox_id), ignore_errors=True)
            self.records.delete(sandbox_id)
            with self._lock:
                self._exited.pop(sandbox_id, None)
                self._expected_exit.discard(sandbox_id)
        with self._lock:
            self._sandbox_locks.pop(sandbox_id, None)
        self.events.publish(sandbox_id, ContainerEventType.CONTAINER_DELETED_EVENT, sandbox_id)

    def stats(self, sandbox_id: str) -> PodSandboxStats:
        """CPU, memory and processes of the pod cgroup; interface counters of the pod's netns (read through
        pause's /proc/<pid>/net/dev, which shows the namespace the process is in)."""
        sandbox = self.get(sandbox_id)
        interfaces: list[NetworkInterfaceStats] = []
        if not sandbox.config.host_network and procs.alive(sandbox.pid, sandbox.pid_start_time):
            try:
                with open(f"/proc/{sandbox.pid}/net/dev") as f:
                    interfaces = [i for i in parse_net_dev(f.read()) if i.name != "lo"]
            except OSError:
                pass
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
                f"pod sandbox {sandbox_id} is not ready ({sandbox.message or sandbox.stage})"
            )
        return sandbox

    # --- recovery ----------------------------------------------------------------------------------

    def recover(self) -> None:
        """Reconcile records with reality after a (re)start: finish nothing half-made, roll it back."""
        procs.reap_zombie_children()
        for sandbox in list(self.records):
            if sandbox.stage in ("creating", "started"):
                log.warning("sandbox %s was half-made when the daemon stopped: rolling back", sandbox.id[:13])
                self._rollback(sandbox)
                continue
            if sandbox.stage == "stopped":
                continue
            if procs.alive(sandbox.pid, sandbox.pid_start_time):
                with self._lock:
                    self._exited[sandbox.id] = threading.Event()
                self.watcher.watch(
                    sandbox.pid,
                    sandbox.pid_start_time,
                    functools.partial(self._pause_exited, sandbox.id),
                )
                if procs.alive(sandbox.pid, sandbox.pid_start_time):
                    continue
            self._handle_pause_death(sandbox.id, procs.ExitStatus(sandbox.pid))
        known = set(self.records.ids())
        for sandbox_id in self.network.attachments():
            owner = self.records.get(sandbox_id)
            if sandbox_id not in known or (
                owner is not None and owner.state != PodSandboxState.SANDBOX_READY
            ):
                log.info("releasing the CNI attachment of gone sandbox %s", sandbox_id[:13])
                try:
                    self.network.teardown(sandbox_id, owner.netns_path if owner else None)
                except RuntimeFailure:
                    log.exception("CNI DEL for %s failed", sandbox_id[:13])

    def _rollback(self, sandbox: PodSandbox) -> None:
        with self._lock:
            self._expected_exit.add(sandbox.id)
        self._kill_pause(sandbox)
        with contextlib.suppress(RuntimeFailure):
            self.network.teardown(sandbox.id, sandbox.netns_path or None)
        run_dir = self.config.sandbox_run_dir(sandbox.id)
        for kind in ("net", "ipc", "uts", "pid"):
            namespaces.unpin(str(run_dir / "ns" / kind))
        namespaces.unmount(str(run_dir / "shm"))
        with contextlib.suppress(RuntimeFailure):
            self.cgroups.remove(sandbox.cgroup)
        shutil.rmtree(run_dir, ignore_errors=True)
        self.records.delete(sandbox.id)


def parse_net_dev(text: str) -> list[NetworkInterfaceStats]:
    """/proc/net/dev: two header lines, then `name: rx_bytes rx_packets rx_errs ... tx_bytes tx_packets
    tx_errs ...` (8 receive columns, then 8 transmit columns)."""
    found = []
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if len(fields) >= 11:
            found.append(
                NetworkInterfaceStats(
                    name.strip(), int(fields[0]), int(fields[2]), int(fields[8]), int(fields[10])
                )
            )
    return found


def _run_into(future: Future[None], fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on this thread and settle `future` with its outcome."""
    try:
        fn(*args)
    except BaseException as e:  # handed to the waiting thread, which re-raises it
        future.set_exception(e)
    else:
        future.set_result(None)


class StageTimer:
    """Names the stage a request is in (for errors) and how long each took (for the log line)."""

    def __init__(self) -> None:
        self.current = ""
        self._start = self._mark = time.monotonic()
        self._times: list[tuple[str, float]] = []

    def enter(self, stage: str) -> None:
        now = time.monotonic()
        if self.current:
            self._times.append((self.current, (now - self._mark) * 1e3))
        self.current, self._mark = stage, now

    def __str__(self) -> str:
        total = (self._mark - self._start) * 1e3
        return f"{total:.1f} ms (" + ", ".join(f"{name} {ms:.1f}" for name, ms in self._times) + ")"


def _in_stage(error: RuntimeFailure, stage: str) -> RuntimeFailure:
    return RuntimeFailure(f"{stage}: {error}")
