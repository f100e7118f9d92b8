"""The pod worker: one thread per pod that keeps the pod as its manifest asks, through CRI only.

Theory of operation (the kubelet's syncPod, pkg/kubelet/kuberuntime/kuberuntime_manager.go):
each `sync()` first *observes* the pod through CRI (its sandboxes and containers, found by the
`io.kubernetes.pod.uid` label), then takes the next actions that follow from spec + observation, then
publishes the pod's status. It is level-triggered: it keeps no plan between syncs beyond the back-off
and probe state, so a lost event, a daemon restart or a half-done step is repaired by the next sync.

    no sandbox, or the newest one NotReady  ->  the five steps: PodReadyToStartContainers=False (and the
        pod leaves its endpoints: the status is published before anything else), containers stopped,
        sandbox stopped (the runtime releases the IP), a new sandbox with attempt+1, containers again
    init containers                          ->  in order, each to success; a failure blocks the rest
                                                 (restarted with back-off, or the pod fails on Never)
    containers                               ->  created and started; an exited one restarted per
                                                 restartPolicy after its CrashLoopBackOff wait
    probes                                   ->  run on a shared pool; liveness (or startup) failure
                                                 kills the container, readiness sets Ready

The worker wakes on a PLEG event or relist (`wake()`), on its own timers (a back-off that ends, a probe
that is due, a retry) and on deletion. It never runs a process of its own: everything is a CRI call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import NotFound, PodhostError
from podhost.kubelet import status as st
from podhost.kubelet.backoff import CrashLoopBackOff
from podhost.kubelet.events import NORMAL, WARNING, EventRecorder
from podhost.kubelet.manifest import ContainerSpec, Pod
from podhost.kubelet.podspec import (
    LABEL_POD_UID,
    MANAGED_BY,
    MANAGER_NAME,
    container_config,
    container_mounts,
    pod_log_directory,
    sandbox_config,
)
from podhost.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeTracker, run_probe

log = logging.getLogger(__name__)

#: Wait before retrying a failed RunPodSandbox / CreateContainer / pull (doubles, like the back-off).
RETRY_BASE = 1.0
RETRY_CAP = 30.0
#: Containers kept per name in the current sandbox: the running one and the previous (for --previous).
KEEP_PER_NAME = 2


def _seconds(ns: int) -> float:
    return ns / 1e9


@dataclass
class WorkerContext:
    """What every pod worker shares: the runtime, the recorder, the pool for probes, the settings."""

    cri: CRIClient
    events: EventRecorder
    probe_pool: ThreadPoolExecutor
    log_root: Path
    volume_root: Path
    backoff_base: float = 10.0
    pod_cgroup_parent: str = ""  # when set, each pod's cgroup is <this>/pod<uid> (what containerd needs)
    runtime_name: str = "cri"
    on_status: Callable[[], None] = lambda: None


@dataclass
class Observation:
    """One look at the pod through CRI. Sandboxes newest first; statuses for every container."""

    sandboxes: list[pb.PodSandbox]
    containers: list[pb.Container]
    statuses: dict[str, pb.ContainerStatus]
    sandbox_ip: str = ""

    @property
    def sandbox(self) -> pb.PodSandbox | None:
        return self.sandboxes[0] if self.sandboxes else None

    def of(self, name: str, sandbox_id: str | None = None) -> list[pb.Container]:
        """Containers named `name` (in one sandbox, when given), newest first."""
        found = [
            c
            for c in self.containers
            if c.metadata.name == name and (sandbox_id is None or c.pod_sandbox_id == sandbox_id)
        ]
        return sorted(found, key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)


@dataclass
class _Retry:
    at: float = 0.0
    wait: float = 0.0

    def fail(self, now: float) -> float:
        self.wait = min(self.wait * 2, RETRY_CAP) if self.wait else RETRY_BASE
        self.at = now + self.wait
        return self.wait

    def clear(self) -> None:
        self.at = self.wait = 0.0


@dataclass
class _ContainerMemory:
    """What the worker remembers about one container name between syncs."""

    attempt: int = -1  # the attempt (restart count) of the newest container made for this name
    waiting_reason: str = ""  # set when a create/start/pull failed or a back-off holds the restart
    waiting_message: str = ""
    retry: _Retry = field(default_factory=_Retry)
    backoff_reported: float = -1.0  # the finish time whose BackOff event was recorded
    last_exit: st.Terminated | None = None  # the newest exit seen (its container may be gone since)


class PodWorker:
    def __init__(self, pod: Pod, ctx: WorkerContext, created_at: float | None = None) -> None:
        self.pod = pod
        self.ctx = ctx
        self.created_at = created_at or time.time()
        self.key = f"{pod.namespace}/{pod.name}"
        self.backoff = CrashLoopBackOff(base=ctx.backoff_base)
        self._wake = threading.Event()
        self._stopping = threading.Event()  # daemon shutdown: leave the pod as it is
        self.deleting = False
        self.finished = threading.Event()  # set once a deleted pod is fully gone
        self._lock = threading.Lock()
        self._status = st.PodStatus()
        self._memory: dict[str, _ContainerMemory] = {}
        self._trackers: dict[str, dict[str, ProbeTracker]] = {}  # container id -> kind -> tracker
        self._probes: dict[tuple[str, str], Future[tuple[bool, str]]] = {}
        self._exited_cache: dict[str, pb.ContainerStatus] = {}
        self._sandbox_retry = _Retry()
        self._sandbox_down_reported = ""  # the sandbox id whose death was already recorded
        self._ready_sandbox = ""  # the sandbox id last seen Ready
        self._ip_cache: dict[str, str] = {}
        self._wakeups: list[float] = []
        self._acted = False
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)

    # --- control ---------------------------------------------------------------------------------------

    @property
    def uid(self) -> str:
        return self.pod.uid

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def wake(self) -> None:
        self._wake.set()

    def delete(self) -> None:
        """Stop the pod's containers (with the grace period), remove its sandboxes, then end the worker."""
        self.deleting = True
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the worker but leave the pod running (daemon shutdown)."""
        self._stopping.set()
        self._wake.set()
        if timeout > 0 and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def snapshot(self) -> st.PodStatus:
        with self._lock:
            return self._status

    # --- the loop --------------------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("pod %s (uid %s): worker started", self.key, self.uid)
        while not self._stopping.is_set():
            self._wake.clear()
            self._wakeups = []
            self._acted = False
            try:
                self.sync()
            except PodhostError as e:
                log.warning("pod %s: sync failed: %s", self.key, e)
                self._wakeups.append(time.time() + RETRY_BASE)
            except Exception:
                log.exception("pod %s: sync failed", self.key)
                self._wakeups.append(time.time() + RETRY_BASE)
            if self.finished.is_set():
                break
            if self._acted:
                continue  # look again at once: the actions changed what there is to observe
            timeout = max(0.0, min(self._wakeups) - time.time()) if self._wakeups else None
            self._wake.wait(timeout)
        log.info("pod %s: worker ended", self.key)

    def sync(self) -> None:
        now = time.time()
        obs = self._observe()
        if self.deleting:
            self._terminate(obs)
            return
        sandbox = obs.sandbox
        if sandbox is None or sandbox.state != pb.SANDBOX_READY:
            if not self._sandbox_down(obs, now):
                self._publish(obs, now)
                return
            obs = self._observe()
            sandbox = obs.sandbox
            assert sandbox is not None
        self._sandbox_up(sandbox, obs, now)
        if self._sync_init_containers(obs, sandbox, now):
            self._sync_containers(obs, sandbox, now)
        self._collect_probes(obs, now)
        self._gc(obs, sandbox)
        status = self._publish(obs, now)
        if status.phase in (st.SUCCEEDED, st.FAILED):
            self._stop_finished_pod(obs)
        self._schedule_probes(obs, now)

    # --- observing -------------------------------------------------------------------------------------

    def _observe(self) -> Observation:
        cri = self.ctx.cri
        selector = {LABEL_POD_UID: self.uid}
        sandboxes = cri.list_pod_sandbox(pb.PodSandboxFilter(label_selector=selector))
        sandboxes.sort(key=lambda s: (s.metadata.attempt, s.created_at), reverse=True)
        containers = cri.list_containers(pb.ContainerFilter(label_selector=selector))
        statuses: dict[str, pb.ContainerStatus] = {}
        for c in containers:
            cached = self._exited_cache.get(c.id)
            if cached is not None:
                statuses[c.id] = cached
                continue
            try:
                s = cri.container_status(c.id).status
            except NotFound:
                continue
            statuses[c.id] = s
            if s.state == pb.CONTAINER_EXITED:
                self._exited_cache[c.id] = s
        containers = [c for c in containers if c.id in statuses]
        live = {c.id for c in containers}
        for cid in [k for k in self._exited_cache if k not in live]:
            del self._exited_cache[cid]
        obs = Observation(sandboxes, containers, statuses)
        if obs.sandbox is not None and obs.sandbox.state == pb.SANDBOX_READY:
            obs.sandbox_ip = self._sandbox_ip(obs.sandbox.id)
        for c in containers:  # the attempts already used, also after a daemon restart
            mem = self._mem(c.metadata.name)
            mem.attempt = max(mem.attempt, c.metadata.attempt)
        return obs

    def _sandbox_ip(self, sandbox_id: str) -> str:
        if sandbox_id not in self._ip_cache:
            try:
                status = self.ctx.cri.pod_sandbox_status(sandbox_id).status
            except NotFound:
                return ""
            self._ip_cache = {sandbox_id: status.network.ip}
        return self._ip_cache[sandbox_id]

    def _mem(self, name: str) -> _ContainerMemory:
        return self._memory.setdefault(name, _ContainerMemory())

    def _event(self, type_: str, reason: str, message: str, container: str = "") -> None:
        obj = f"pod/{self.pod.name}" + (f"/{container}" if container else "")
        self.ctx.events.record(self.pod.namespace, obj, type_, reason, message)

    # --- the sandbox -----------------------------------------------------------------------------------

    def _sandbox_config(self, attempt: int) -> pb.PodSandboxConfig:
        parent = (
            f"{self.ctx.pod_cgroup_parent.rstrip('/')}/pod{self.uid}" if self.ctx.pod_cgroup_parent else ""
        )
        config = sandbox_config(self.pod, attempt, self.log_directory, cgroup_parent=parent)
        config.annotations[MANAGED_BY] = MANAGER_NAME
        return config

    @property
    def log_directory(self) -> str:
        return pod_log_directory(str(self.ctx.log_root), self.pod)

    @property
    def volume_directory(self) -> Path:
        return self.ctx.volume_root / self.uid

    def _down_reason(self, sandbox: pb.PodSandbox) -> tuple[str, str]:
        """Why the sandbox is not ready, in the runtime's words when it gives them (podhost's verbose
        info carries reason PauseExited and "pause (pid N) killed by signal 9 (SIGKILL)")."""
        reason, message = "", ""
        try:
            resp = self.ctx.cri.pod_sandbox_status(sandbox.id, verbose=True)
            info = json.loads(resp.info.get("info", "{}") or "{}")
            if isinstance(info, dict):
                reason, message = str(info.get("reason") or ""), str(info.get("message") or "")
        except (PodhostError, ValueError):
            pass
        return (
            reason or "SandboxNotReady",
            message or f"pod sandbox {sandbox.id[:13]} (attempt {sandbox.metadata.attempt}) is not ready",
        )

    def _pod_done(self, obs: Observation) -> bool:
        """The kubelet makes no new sandbox for a pod that finished, or that ran under Never."""
        status = self.snapshot()
        if status.phase in (st.SUCCEEDED, st.FAILED):
            return True
        return self.pod.restart_policy == "Never" and bool(obs.containers) and bool(obs.sandboxes)

    def _sandbox_down(self, obs: Observation, now: float) -> bool:
        """The five steps; True once a new sandbox is Ready."""
        dead = obs.sandbox
        if dead is not None and self._sandbox_down_reported != dead.id:
            self._sandbox_down_reported = dead.id
            reason, message = self._down_reason(dead)
            with self._lock:
                self._status.pod_ip = ""
                for cs in self._status.container_statuses:
                    cs.ready = False  # their network namespace is gone with pause
            self._set_condition(st.POD_READY_TO_START_CONTAINERS, False, reason, message, now)
            self._set_condition(st.READY, False, reason, f"the pod sandbox is not ready: {message}", now)
            self._set_condition(st.CONTAINERS_READY, False, reason, message, now)
            self.ctx.on_status()  # step 1: out of every endpoint list before anything slow happens
            if self._ready_sandbox == dead.id and not self._pod_done(obs):
                self._event(
                    NORMAL,
                    "SandboxChanged",
                    f"Pod sandbox changed, it will be killed and re-created: {message}",
                )
        if self._pod_done(obs):
            self._kill_containers(obs, "the pod sandbox is gone", grace=0)
            for sb in obs.sandboxes:
                self._stop_sandbox(sb.id)
            return False
        if now < self._sandbox_retry.at:
            self._wakeups.append(self._sandbox_retry.at)
            return False
        # Step 3, forcefully: with its sandbox gone the pod has lost its network, there is nothing left to
        # drain, and a main process that ignores SIGTERM (PID 1 without a handler) would hold the pod's
        # recovery for the whole grace period.
        self._kill_containers(obs, "the pod sandbox changed", grace=0)
        for sb in obs.sandboxes:
            self._stop_sandbox(sb.id)  # step 4: CNI DEL (podhost's runtime already released the IP)
        self._remember_exits(obs)
        attempt = dead.metadata.attempt + 1 if dead is not None else 0
        self._prepare_pod_dirs()
        if dead is None:
            self._set_condition(
                st.POD_READY_TO_START_CONTAINERS, False, "SandboxCreating", "creating the pod sandbox", now
            )
        try:
            sandbox_id = self.ctx.cri.run_pod_sandbox(self._sandbox_config(attempt))  # step 5
        except PodhostError as e:
            wait = self._sandbox_retry.fail(now)
            message = f"Failed to create pod sandbox: {e} (retrying in {wait:.0f}s)"
            self._event(WARNING, "FailedCreatePodSandBox", message)
            self._set_condition(
                st.POD_READY_TO_START_CONTAINERS, False, "FailedCreatePodSandBox", message, now
            )
            self._wakeups.append(self._sandbox_retry.at)
            return False
        self._sandbox_retry.clear()
        self._acted = True
        log.info("pod %s: sandbox %s (attempt %d) ready", self.key, sandbox_id[:13], attempt)
        for sb in obs.sandboxes:  # the dead ones, with their containers (log files stay)
            try:
                self.ctx.cri.remove_pod_sandbox(sb.id)
            except PodhostError as e:
                log.warning("pod %s: removing old sandbox %s: %s", self.key, sb.id[:13], e)
        return True

    def _remember_exits(self, obs: Observation) -> None:
        """Keep each container's last exit (lastState) before its sandbox, and so its record, goes."""
        for spec in [*self.pod.init_containers, *self.pod.containers]:
            history = obs.of(spec.name)
            if not history:
                continue
            try:
                s = self.ctx.cri.container_status(history[0].id).status
            except NotFound:
                continue
            if s.state == pb.CONTAINER_EXITED:
                self._mem(spec.name).last_exit = _terminated(s)

    def _sandbox_up(self, sandbox: pb.PodSandbox, obs: Observation, now: float) -> None:
        if self._ready_sandbox != sandbox.id:
            self._ready_sandbox = sandbox.id
            with self._lock:
                self._status.sandbox_id, self._status.sandbox_attempt = sandbox.id, sandbox.metadata.attempt
                self._status.pod_ip = obs.sandbox_ip
                if not self._status.start_time:
                    self._status.start_time = now
        self._set_condition(st.POD_READY_TO_START_CONTAINERS, True, "", "", now)

    def _stop_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.ctx.cri.stop_pod_sandbox(sandbox_id)

    def _prepare_pod_dirs(self) -> None:
        Path(self.log_directory).mkdir(parents=True, exist_ok=True)
        for volume in self.pod.volumes:
            if volume.kind == "emptyDir":
                (self.volume_directory / volume.name).mkdir(parents=True, exist_ok=True)
            elif volume.host_path_type in ("DirectoryOrCreate",):
                Path(volume.path).mkdir(parents=True, exist_ok=True)
            elif volume.host_path_type == "FileOrCreate":
                Path(volume.path).parent.mkdir(parents=True, exist_ok=True)
                Path(volume.path).touch(exist_ok=True)

    def _volume_paths(self) -> dict[str, str]:
        return {
            v.name: str(self.volume_directory / v.name) if v.kind == "emptyDir" else v.path
            for v in self.pod.volumes
            if v.kind != "image"
        }

    def _image_volumes(self) -> dict[str, str]:
        """Image volumes by name: their image references (the runtime mounts them: CRI `Mount.image`)."""
        return {v.name: v.reference for v in self.pod.volumes if v.kind == "image"}

    def _stop_finished_pod(self, obs: Observation) -> None:
        """A pod that Succeeded or Failed gives its sandbox (and IP) back, as the kubelet does."""
        sandbox = obs.sandbox
        if sandbox is not None and sandbox.state == pb.SANDBOX_READY:
            log.info("pod %s: finished; stopping its sandbox", self.key)
            self._kill_containers(obs, "the pod finished")
            self._stop_sandbox(sandbox.id)
            self._sandbox_down_reported = sandbox.id

    # --- containers ------------------------------------------------------------------------------------

    def _kill_containers(self, obs: Observation, why: str, grace: int | None = None) -> None:
        """Stop every running or created container of the pod, in parallel, with `grace` seconds (the
        pod's terminationGracePeriodSeconds unless given)."""
        live = [
            c
            for c in obs.containers
            if obs.statuses[c.id].state in (pb.CONTAINER_RUNNING, pb.CONTAINER_CREATED)
        ]
        if not live:
            return
        if grace is None:
            grace = self.pod.termination_grace_period_seconds
        threads = []
        for c in live:
            self._event(NORMAL, "Killing", f"Stopping container {c.metadata.name} ({why})", c.metadata.name)
            t = threading.Thread(target=self._stop_container, args=(c.id, grace), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        self._acted = True

    def _stop_container(self, container_id: str, grace: int) -> None:
        try:
            self.ctx.cri.stop_container(container_id, grace)
        except NotFound:
            pass
        except PodhostError as e:
            log.warning("pod %s: stopping container %s: %s", self.key, container_id[:13], e)

    def _should_restart(self, exit_code: int) -> bool:
        policy = self.pod.restart_policy
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    def _sync_init_containers(self, obs: Observation, sandbox: pb.PodSandbox, now: float) -> bool:
        """Run the init containers in order; True once every one of them succeeded."""
        for spec in self.pod.init_containers:
            existing = obs.of(spec.name, sandbox.id)
            if not existing:
                self._start(spec, sandbox, obs, now)
                return False
            s = obs.statuses[existing[0].id]
            if s.state == pb.CONTAINER_CREATED:
                self._start_created(spec, existing[0].id)
                return False
            if s.state != pb.CONTAINER_EXITED:
                return False  # running: wait for it
            if s.exit_code == 0:
                continue
            if self.pod.restart_policy == "Never":
                return False  # the pod failed; pod_phase says so
            self._restart(spec, s, sandbox, obs, now)
            return False
        return True

    def _sync_containers(self, obs: Observation, sandbox: pb.PodSandbox, now: float) -> None:
        for spec in self.pod.containers:
            existing = obs.of(spec.name, sandbox.id)
            if not existing:
                self._start(spec, sandbox, obs, now)
                continue
            latest = existing[0]
            s = obs.statuses[latest.id]
            if s.state == pb.CONTAINER_CREATED:
                self._start_created(spec, latest.id)
            elif s.state == pb.CONTAINER_RUNNING:
                self._check_liveness(spec, latest.id)
            elif s.state == pb.CONTAINER_EXITED and self._should_restart(s.exit_code):
                self._restart(spec, s, sandbox, obs, now)

    def _restart(
        self, spec: ContainerSpec, s: pb.ContainerStatus, sandbox: pb.PodSandbox, obs: Observation, now: float
    ) -> None:
        mem = self._mem(spec.name)
        at = self.backoff.restart_at(spec.name, _seconds(s.started_at), _seconds(s.finished_at))
        if now < at:
            wait = self.backoff.wait(spec.name)
            mem.waiting_reason = "CrashLoopBackOff"
            mem.waiting_message = (
                f"back-off {wait:g}s restarting failed container={spec.name} "
                f"pod={self.pod.name}_{self.pod.namespace}({self.uid})"
            )
            if mem.backoff_reported != s.finished_at:
                mem.backoff_reported = s.finished_at
                self._event(WARNING, "BackOff", f"Back-off {wait:g}s restarting failed container", spec.name)
            self._wakeups.append(at)
            return
        self._start(spec, sandbox, obs, now)

    def _start(self, spec: ContainerSpec, sandbox: pb.PodSandbox, obs: Observation, now: float) -> None:
        mem = self._mem(spec.name)
        if now < mem.retry.at:
            self._wakeups.append(mem.retry.at)
            return
        attempt = mem.attempt + 1
        if not self._ensure_image(spec, mem, now):
            return
        cri = self.ctx.cri
        mounts = container_mounts(spec, self._volume_paths(), self._image_volumes())
        config = container_config(self.pod, spec, attempt, mounts)
        try:
            container_id = cri.create_container(
                sandbox.id, config, self._sandbox_config(sandbox.metadata.attempt)
            )
        except PodhostError as e:
            self._failed(spec, mem, "CreateContainerError", f"Error: {e}", now)
            return
        mem.attempt = attempt
        self._acted = True
        self._event(NORMAL, "Created", f"Created container {spec.name}", spec.name)
        self._start_created(spec, container_id)

    def _start_created(self, spec: ContainerSpec, container_id: str) -> None:
        mem = self._mem(spec.name)
        self._acted = True
        try:
            self.ctx.cri.start_container(container_id)
        except PodhostError as e:
            self._failed(
                spec, mem, "RunContainerError", f"Error: failed to start container: {e}", time.time()
            )
            # A container that cannot start is replaced by a new attempt at the retry.
            with contextlib.suppress(PodhostError):
                self.ctx.cri.remove_container(container_id)
            return
        mem.waiting_reason = mem.waiting_message = ""
        mem.retry.clear()
        self._event(NORMAL, "Started", f"Started container {spec.name}", spec.name)

    def _ensure_image(self, spec: ContainerSpec, mem: _ContainerMemory, now: float) -> bool:
        """The kubelet's IfNotPresent: ImageStatus, and PullImage only when the runtime lacks it; for the
        container's image, then for the image volumes it mounts (the runtime never pulls those)."""
        images = self._image_volumes()
        wanted = [spec.image] + [images[m.name] for m in spec.volume_mounts if m.name in images]
        return all(self._ensure_one_image(image, spec, mem, now) for image in dict.fromkeys(wanted))

    def _ensure_one_image(self, image: str, spec: ContainerSpec, mem: _ContainerMemory, now: float) -> bool:
        cri = self.ctx.cri
        try:
            present = cri.image_status(image).HasField("image")
            if present:
                if mem.attempt < 0:
                    self._event(
                        NORMAL,
                        "Pulled",
                        f'Container image "{image}" already present on machine',
                        spec.name,
                    )
                return True
            self._event(NORMAL, "Pulling", f'Pulling image "{image}"', spec.name)
            cri.pull_image(image)
            self._event(NORMAL, "Pulled", f'Successfully pulled image "{image}"', spec.name)
            return True
        except PodhostError as e:
            self._failed(spec, mem, "ErrImagePull", f'Failed to pull image "{image}": {e}', now)
            return False

    def _failed(
        self, spec: ContainerSpec, mem: _ContainerMemory, reason: str, message: str, now: float
    ) -> None:
        wait = mem.retry.fail(now)
        mem.waiting_reason, mem.waiting_message = reason, message
        self._event(WARNING, "Failed", f"{message} (retrying in {wait:.0f}s)", spec.name)
        self._wakeups.append(mem.retry.at)

    # --- probes ----------------------------------------------------------------------------------------

    def _trackers_for(
        self, spec: ContainerSpec, container_id: str, started: float
    ) -> dict[str, ProbeTracker]:
        trackers = self._trackers.get(container_id)
        if trackers is None:
            trackers = {}
            for kind, probe in (
                (STARTUP, spec.startup_probe),
                (LIVENESS, spec.liveness_probe),
                (READINESS, spec.readiness_probe),
            ):
                if probe is not None:
                    trackers[kind] = ProbeTracker.start(kind, probe, started)
            self._trackers[container_id] = trackers
        return trackers

    def _running(self, obs: Observation) -> list[tuple[ContainerSpec, str, pb.ContainerStatus]]:
        sandbox = obs.sandbox
        if sandbox is None or sandbox.state != pb.SANDBOX_READY:
            return []
        out = []
        for spec in self.pod.containers:
            existing = obs.of(spec.name, sandbox.id)
            if existing and obs.statuses[existing[0].id].state == pb.CONTAINER_RUNNING:
                out.append((spec, existing[0].id, obs.statuses[existing[0].id]))
        return out

    def _schedule_probes(self, obs: Observation, now: float) -> None:
        live_ids = set()
        for spec, cid, s in self._running(obs):
            live_ids.add(cid)
            trackers = self._trackers_for(spec, cid, _seconds(s.started_at))
            started = STARTUP not in trackers or trackers[STARTUP].verdict
            for kind, tracker in trackers.items():
                if kind != STARTUP and not started:
                    continue
                if kind == STARTUP and tracker.verdict:
                    continue
                if (cid, kind) in self._probes:
                    continue
                if tracker.due(now):
                    future = self.ctx.probe_pool.submit(
                        run_probe, tracker.probe, self.ctx.cri, cid, spec, obs.sandbox_ip
                    )
                    self._probes[(cid, kind)] = future
                    future.add_done_callback(lambda _f: self._wake.set())
                else:
                    self._wakeups.append(tracker.next_due)
        for cid in [c for c in self._trackers if c not in live_ids]:
            del self._trackers[cid]

    def _collect_probes(self, obs: Observation, now: float) -> None:
        names = {c.id: c.metadata.name for c in obs.containers}
        for (cid, kind), future in list(self._probes.items()):
            if not future.done():
                continue
            del self._probes[(cid, kind)]
            tracker = self._trackers.get(cid, {}).get(kind)
            if tracker is None:
                continue
            try:
                ok, message = future.result()
            except Exception as e:  # a probe runner bug must not stop the worker
                ok, message = False, f"probe error: {e}"
            flipped = tracker.record(ok, message, now)
            name = names.get(cid, "?")
            if not ok:
                self._event(WARNING, "Unhealthy", f"{kind.capitalize()} probe failed: {message}", name)
            elif flipped:
                log.info("pod %s: container %s %s probe succeeded", self.key, name, kind)
            self._wakeups.append(tracker.next_due)

    def _check_liveness(self, spec: ContainerSpec, container_id: str) -> None:
        trackers = self._trackers.get(container_id, {})
        live, startup = trackers.get(LIVENESS), trackers.get(STARTUP)
        if live is not None and not live.verdict:
            why = f"Container {spec.name} failed liveness probe, will be restarted"
        elif startup is not None and not startup.verdict and startup.failed:
            why = f"Container {spec.name} failed startup probe, will be restarted"
        else:
            return
        self._event(NORMAL, "Killing", why, spec.name)
        del self._trackers[container_id]
        self._stop_container(container_id, self.pod.termination_grace_period_seconds)
        self._acted = True

    # --- clean-up --------------------------------------------------------------------------------------

    def _gc(self, obs: Observation, sandbox: pb.PodSandbox) -> None:
        """Keep the newest two containers per name in the current sandbox (now and --previous)."""
        for spec in [*self.pod.init_containers, *self.pod.containers]:
            for old in obs.of(spec.name, sandbox.id)[KEEP_PER_NAME:]:
                if obs.statuses[old.id].state == pb.CONTAINER_EXITED:
                    try:
                        self.ctx.cri.remove_container(old.id)
                    except PodhostError as e:
                        log.warning("pod %s: removing old container %s: %s", self.key, old.id[:13], e)

    def _terminate(self, obs: Observation) -> None:
        """Deletion: stop the containers with the grace period, then remove every sandbox and file."""
        self._kill_containers(obs, "the pod is being deleted")
        for sb in obs.sandboxes:
            self._stop_sandbox(sb.id)
            self.ctx.cri.remove_pod_sandbox(sb.id)
        for future in self._probes.values():
            future.cancel()
        shutil.rmtree(self.log_directory, ignore_errors=True)
        shutil.rmtree(self.volume_directory, ignore_errors=True)
        self._event(NORMAL, "Deleted", "Pod deleted: containers stopped, sandbox removed")
        self.finished.set()

    # --- status ----------------------------------------------------------------------------------------

    def _set_condition(self, type_: str, value: bool, reason: str, message: str, now: float) -> None:
        with self._lock:
            self._status.set_condition(type_, value, reason, message, now)

    def _container_status(
        self, spec: ContainerSpec, obs: Observation, sandbox_id: str | None, now: float
    ) -> st.ContainerStatus:
        mem = self._mem(spec.name)
        cs = st.ContainerStatus(name=spec.name, image=spec.image)
        cs.restart_count = max(mem.attempt, 0)
        cs.log_path = f"{self.log_directory}/{spec.name}/{cs.restart_count}.log"
        if cs.restart_count:
            cs.previous_log_path = f"{self.log_directory}/{spec.name}/{cs.restart_count - 1}.log"
        history = obs.of(spec.name)
        current = [c for c in history if sandbox_id is not None and c.pod_sandbox_id == sandbox_id]
        latest = current[0] if current else (history[0] if history else None)
        previous = [c for c in history if latest is None or c.id != latest.id]
        prev_exited = [c for c in previous if obs.statuses[c.id].state == pb.CONTAINER_EXITED]
        if prev_exited:
            cs.last_state = _terminated(obs.statuses[prev_exited[0].id])
        elif mem.last_exit is not None and (latest is None or mem.last_exit.container_id != latest.id):
            cs.last_state = mem.last_exit  # its sandbox was removed after a sandbox change
        if latest is None:
            cs.reason = mem.waiting_reason or (
                "PodInitializing" if self.pod.init_containers else "ContainerCreating"
            )
            cs.message = mem.waiting_message
            return cs
        s = obs.statuses[latest.id]
        cs.container_id, cs.image_id = latest.id, s.image_ref
        cs.log_path = s.log_path or cs.log_path
        if s.state == pb.CONTAINER_RUNNING and latest.pod_sandbox_id == sandbox_id:
            cs.state, cs.started_at = "running", _seconds(s.started_at)
            trackers = self._trackers.get(latest.id, {})
            startup, readiness = trackers.get(STARTUP), trackers.get(READINESS)
            cs.started = startup is None or startup.verdict
            cs.ready = cs.started and (readiness is None or readiness.verdict)
            if not cs.started:
                cs.unready_reason = "startup probe has not succeeded yet" + (
                    f" ({startup.message})" if startup and startup.message else ""
                )
            elif readiness is not None and not readiness.verdict:
                cs.unready_reason = (
                    f"readiness probe failed: {readiness.message}"
                    if readiness.message
                    else "readiness probe pending"
                )
        elif s.state == pb.CONTAINER_EXITED:
            terminated = _terminated(s)
            mem.last_exit = terminated
            if mem.waiting_reason and (self._should_restart(s.exit_code) or spec in self.pod.init_containers):
                cs.state, cs.reason, cs.message = st.WAITING, mem.waiting_reason, mem.waiting_message
                cs.last_state = terminated
            else:
                cs.state, cs.terminated = st.TERMINATED, terminated
        else:
            cs.reason = "ContainerCreating"
        return cs

    def _publish(self, obs: Observation, now: float) -> st.PodStatus:
        sandbox = obs.sandbox
        sandbox_id = sandbox.id if sandbox is not None and sandbox.state == pb.SANDBOX_READY else None
        init = [self._container_status(c, obs, sandbox_id, now) for c in self.pod.init_containers]
        containers = [self._container_status(c, obs, sandbox_id, now) for c in self.pod.containers]
        initialized = all(
            c.state == st.TERMINATED and c.terminated and c.terminated.exit_code == 0 for c in init
        )
        if not initialized and sandbox_id is None and any(c.container_id for c in containers):
            initialized = True  # init ran in an earlier sandbox; the containers did run
        phase = st.pod_phase(self.pod.restart_policy, init, containers, initialized)
        with self._lock:
            old = self._status
            new = st.PodStatus(
                phase=phase,
                pod_ip=obs.sandbox_ip if sandbox_id else "",
                sandbox_id=sandbox.id if sandbox is not None else "",
                sandbox_attempt=sandbox.metadata.attempt if sandbox is not None else 0,
                start_time=old.start_time or now,
                conditions=dict(old.conditions),
                init_container_statuses=init,
                container_statuses=containers,
            )
            if sandbox_id is None and st.POD_READY_TO_START_CONTAINERS not in new.conditions:
                new.set_condition(
                    st.POD_READY_TO_START_CONTAINERS,
                    False,
                    "SandboxCreating",
                    "creating the pod sandbox",
                    now,
                )
            if initialized:
                new.set_condition(st.INITIALIZED, True, "", "", now)
            else:
                pending = [c for c in init if not (c.terminated and c.terminated.exit_code == 0)]
                new.set_condition(
                    st.INITIALIZED,
                    False,
                    "ContainersNotInitialized",
                    st.unready_message(pending).replace("unready", "incomplete"),
                    now,
                )
            all_ready = sandbox_id is not None and all(c.ready for c in containers)
            if all_ready:
                new.set_condition(st.CONTAINERS_READY, True, "", "", now)
                new.set_condition(st.READY, True, "", "", now)
            elif sandbox_id is not None or phase in (st.SUCCEEDED, st.FAILED):
                reason = "PodCompleted" if phase in (st.SUCCEEDED, st.FAILED) else "ContainersNotReady"
                message = st.unready_message(containers)
                new.set_condition(st.CONTAINERS_READY, False, reason, message, now)
                new.set_condition(st.READY, False, reason, message, now)
            if phase in (st.SUCCEEDED, st.FAILED) and sandbox_id is None:
                c = new.conditions.get(st.POD_READY_TO_START_CONTAINERS)
                if c is None or c.status:
                    new.set_condition(
                        st.POD_READY_TO_START_CONTAINERS,
                        False,
                        "PodCompleted",
                        f"the pod {phase.lower()}",
                        now,
                    )
            self._status = new
            changed = old.to_dict() != new.to_dict()
        if changed:
            self.ctx.on_status()
        return new


def _terminated(s: pb.ContainerStatus) -> st.Terminated:
    reason = s.reason or ("Completed" if s.exit_code == 0 else "Error")
    return st.Terminated(
        exit_code=s.exit_code,
        reason=reason,
        message=s.message,
        started_at=_seconds(s.started_at),
        finished_at=_seconds(s.finished_at),
        container_id=s.id,
    )
