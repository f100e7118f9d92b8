"""The pod worker: one thread per pod that keeps the pod as its manifest asks, through CRI only.

Theory of operation (the kubelet's pod worker and SyncPod, pkg/kubelet/kuberuntime/kuberuntime_manager.go):
each `sync()` *observes* the pod through CRI (observation.py), asks the pure `compute_pod_actions`
(pod_actions.py) what follows from spec + observation, carries that out through CRI (kuberuntime.py),
then publishes the pod's status (status.py). Level-triggered, it keeps no plan between syncs beyond the
back-offs, retries and probe state: the next sync repairs a lost event, a daemon restart, a half-done step.

A changed sandbox (pause died): PodReadyToStartContainers=False (the pod leaves its endpoints first),
containers killed, the old sandbox stopped (CNI DEL) while the new one (attempt+1) is made, containers
again, the old sandbox removed once all that settled. Probes: probes.ProberManager; pulls: images.py.

The worker wakes on a PLEG event or relist (`wake()`), on its own timers (a back-off that ends, a probe
that is due, a retry) and on deletion. It never runs a process of its own: everything is a CRI call.
"""

from __future__ import annotations

import logging
import threading
import time

from podhost.cri import api_pb2 as pb
from podhost.errors import PodhostError
from podhost.kubelet import container_gc
from podhost.kubelet import status as st
from podhost.kubelet.backoff import RETRY_BASE, SANDBOX, CrashLoopBackOff, retry_backoff
from podhost.kubelet.context import WorkerContext
from podhost.kubelet.ephemeral import ephemeral_containers_to_start
from podhost.kubelet.events import NORMAL, WARNING
from podhost.kubelet.kuberuntime import ERR_IMAGE_PULL, POST_START_HOOK_ERROR, PodRuntime
from podhost.kubelet.manifest import ContainerSpec, Pod
from podhost.kubelet.observation import Observation, Observer
from podhost.kubelet.pod_actions import ContainerToStart, PodActions, compute_pod_actions, startup_passed
from podhost.kubelet.podspec import pod_log_directory
from podhost.kubelet.probes import ProberManager
from podhost.kubelet.resize import sync_resize

log = logging.getLogger(__name__)


class PodWorker:
    def __init__(self, pod: Pod, ctx: WorkerContext, created_at: float | None = None) -> None:
        self.pod, self.ctx = pod, ctx
        self.created_at = created_at or time.time()
        self.key, self.uid = f"{pod.namespace}/{pod.name}", pod.uid
        self.log_directory = pod_log_directory(str(ctx.log_root), pod)
        self.volume_directory = ctx.volume_root / pod.uid
        self.backoff = CrashLoopBackOff(base=ctx.backoff_base)  # restarts, by container name
        self.retry = retry_backoff()  # failed RunPodSandbox (SANDBOX) and container starts (by name)
        self._wake = threading.Event()
        self._stopping = threading.Event()  # daemon shutdown: leave the pod as it is
        self.finished = threading.Event()  # set once a deleted pod is fully gone
        self.status = st.StatusManager(lambda: self.ctx.on_status())
        self.history: dict[str, st.ContainerHistory] = {}
        self._backoff_reported: dict[str, float] = {}  # container name -> the back-off (until) told
        self._observer = Observer(ctx.cri, pod.uid)
        settings = (self.log_directory, self.volume_directory, ctx.pod_cgroup_parent, ctx.backoff_base)
        self.runtime = PodRuntime(ctx.cri, pod, self._event, *settings, config=ctx.config, node=ctx.node)
        self.prober = ProberManager(
            ctx.probe_pool, ctx.cri, self.key, self.wake, lambda c, m: self._event(WARNING, "Unhealthy", m, c)
        )
        self._sandbox_down_reported = ""  # the sandbox id whose death was already recorded
        self._ready_sandbox = ""  # the sandbox id last seen Ready
        self._wakeups, self._acted = list[float](), False  # of one sync: when to look again; whether it acted
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)

    # --- control ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def wake(self) -> None:
        self._wake.set()

    def delete(self) -> None:
        """Stop the pod's containers (with the grace period), remove its sandboxes, then end the worker."""
        self.runtime.terminating.set()  # (a postStart hook in progress is no longer waited for)
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the worker but leave the pod running (daemon shutdown)."""
        self._stopping.set()
        self._wake.set()
        if timeout > 0 and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the loop --------------------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("pod %s (uid %s): worker started", self.key, self.uid)
        while not self._stopping.is_set():
            self._wake.clear()
            self._wakeups, self._acted = [], False
            try:
                self.sync()
            except Exception as e:  # the next sync repairs what this one left half done
                if isinstance(e, PodhostError):
                    log.warning("pod %s: sync failed: %s", self.key, e)
                else:
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
        """SyncPod: observe, compute the pod actions, carry them out, publish the status."""
        now = time.time()
        obs = self._observe()
        if self.runtime.terminating.is_set():  # deleted
            self._terminate(obs)
            return
        actions = self._compute(obs, now)
        if actions.sandbox_changed:
            if not self._change_sandbox(obs, actions, now):
                self._publish(obs, now)
                return
            obs = self._observe()
            actions = self._compute(obs, now)
        if (sandbox := obs.ready_sandbox) is None:  # the new one died at once: the next sync sees to it
            self._publish(obs, now)
            return
        if self._ready_sandbox != sandbox.id:
            self._ready_sandbox = sandbox.id
            self.status.sandbox_ready(sandbox.id, sandbox.metadata.attempt, obs.sandbox_ip, now)
        self.status.set_condition(st.POD_READY_TO_START_CONTAINERS, True, "", "", now)
        debug = ephemeral_containers_to_start(self.pod, obs, self.history, self.retry, now)
        resized = sync_resize(self.pod, obs, self.history, self.runtime, self.status, now, self.ctx.allotted)
        self._wakeups += debug.wake_at + resized.wake_at
        self._acted |= resized.acted
        self._wakeups += self.runtime.sync_volumes(now)  # config volumes follow their objects
        self._run_containers(actions, sandbox, now, [*debug.starts, *resized.restarts])  # before init
        if (restart := actions.restart_all) is not None:  # KEP-5532: the sandbox, its IP, its volumes stay
            self.status.restarting_all(restart.message, now)  # False once build_pod_status sees them gone
            st.remember_exits(self.pod, obs, self.history)
            self._acted = self.runtime.restart_all_containers(restart.kill, restart.remove)
            return
        self._wakeups += self.prober.collect({c.id: c.metadata.name for c in obs.containers}, now)
        container_gc.remove_dead_containers(self.ctx.cri, self.pod, obs, sandbox.id)
        if self._publish(obs, now, dry=True).phase in (st.SUCCEEDED, st.FAILED):
            obs = self._stop_finished_pod(obs)  # its sandbox goes back before the phase is out
        self._publish(obs, now)
        self._wakeups += self.prober.schedule_pod(self.pod, obs, now)
        if not self._acted:  # settled (the new containers run, their status is out): the old sandboxes go,
            # as seen, not as remembered: one a daemon restart interrupted the change of goes too.
            self.runtime.remove_pod_sandboxes(s for s in obs.sandboxes[1:] if s.state != pb.SANDBOX_READY)

    def _observe(self) -> Observation:
        obs = self._observer.observe()
        st.remember_attempts(obs, self.history)
        return obs

    def _publish(self, obs: Observation, now: float, dry: bool = False) -> st.PodStatus:
        """The pod's status from `obs`; made public (status.py tells the manager) unless `dry`."""

        def build(old: st.PodStatus) -> st.PodStatus:
            trackers, log_dir = self.prober.trackers, self.log_directory
            return st.build_pod_status(self.pod, obs, old, self.history, trackers, log_dir, now)

        return build(self.status.get()) if dry else self.status.publish(build)

    def _compute(self, obs: Observation, now: float) -> PodActions:
        finished = self.status.get().phase in (st.SUCCEEDED, st.FAILED)
        args = self.prober.unhealthy(), finished, self.runtime.pulls, startup_passed(self.prober.trackers)
        return compute_pod_actions(self.pod, obs, now, self.backoff, self.retry, *args)

    def _mem(self, name: str) -> st.ContainerHistory:
        return self.history.setdefault(name, st.ContainerHistory())

    def _event(self, type_: str, reason: str, message: str, container: str = "") -> None:
        obj = f"pod/{self.pod.name}" + (f"/{container}" if container else "")
        self.ctx.events.record(self.pod.namespace, obj, type_, reason, message)

    # --- the sandbox -----------------------------------------------------------------------------------

    def _change_sandbox(self, obs: Observation, actions: PodActions, now: float) -> bool:
        """Report the dead sandbox, kill and stop it, make the next one; True once that one is Ready."""
        dead = obs.sandbox
        if dead is not None and self._sandbox_down_reported != dead.id:
            self._sandbox_down_reported = dead.id
            reason, message = self.runtime.down_reason(dead)
            self.status.sandbox_not_ready(reason, message, now)  # first: out of every endpoint list
            if self._ready_sandbox == dead.id and not actions.pod_done:
                changed = f"Pod sandbox changed, it will be killed and re-created: {message}"
                self._event(NORMAL, "SandboxChanged", changed)
        self._wakeups += actions.wake_at
        live, old = (obs.live(), obs.sandboxes) if actions.kill_pod else ([], [])
        self._acted |= bool(live)
        # SIGKILL (nothing to drain without a network; a PID 1 ignoring SIGTERM would hold the pod up),
        # then CNI DEL: neither touches the next sandbox, so both overlap its creation.
        killing = self.runtime.kill_pod_meanwhile(live, actions.kill_reason, old)
        try:
            sandbox_id = self._run_pod_sandbox(actions, dead is None, now) if actions.create_sandbox else ""
        finally:
            killing.join()  # the new sandbox's containers start once the old ones are gone
        if not sandbox_id:
            return False
        st.remember_exits(self.pod, self._observe(), self.history)  # their records go with the sandbox
        self.retry.forget(SANDBOX)
        self._acted = True
        log.info("pod %s: sandbox %s (attempt %d) ready", self.key, sandbox_id[:13], actions.attempt)
        return True

    def _run_pod_sandbox(self, actions: PodActions, first: bool, now: float) -> str:
        """The pod's volumes, then RunPodSandbox; the new sandbox's id, or "" (told in status and events,
        retried by a later sync)."""
        if message := self.runtime.mount_volumes():  # FailedMount told; the pod waits for them
            self.status.not_ready_to_start("FailedMount", message, now)
            self._wakeups.append(now + RETRY_BASE)
            return ""
        if first:
            self.status.not_ready_to_start("SandboxCreating", "creating the pod sandbox", now)
        try:
            return self.runtime.run_pod_sandbox(actions.attempt)
        except PodhostError as e:
            self._wakeups.append(self.retry.step(SANDBOX, now))
            message = f"Failed to create pod sandbox: {e} (retrying in {self.retry.wait(SANDBOX):.0f}s)"
            self._event(WARNING, "FailedCreatePodSandBox", message)
            self.status.not_ready_to_start("FailedCreatePodSandBox", message, now)
            return ""

    def _stop_finished_pod(self, obs: Observation) -> Observation:
        """A pod that Succeeded or Failed gives its sandbox (and IP) back, as the kubelet does."""
        if (sandbox := obs.ready_sandbox) is not None:
            log.info("pod %s: finished; stopping its sandbox", self.key)
            self._acted |= self.runtime.kill_containers(obs.live(), "the pod finished")
            self.runtime.stop_pod_sandboxes([sandbox])
            self._sandbox_down_reported, obs = sandbox.id, self._observe()
        return obs

    def _terminate(self, obs: Observation) -> None:
        """Deletion: stop the containers with the grace period, then remove every sandbox and file."""
        self.runtime.kill_containers(obs.live(), "the pod is being deleted")
        self._publish(self._observe(), time.time())  # their exits (137: killed at the grace period)
        self.runtime.remove_pod(obs.sandboxes)
        self.prober.cancel()
        self._event(NORMAL, "Deleted", "Pod deleted: containers stopped, sandbox removed")
        self.finished.set()

    # --- containers ------------------------------------------------------------------------------------

    def _run_containers(
        self, actions: PodActions, sandbox: pb.PodSandbox, now: float, first: list[ContainerToStart]
    ) -> None:
        """Carry out the container actions: kills (failed probes), back-offs, then starts (`first` first)."""
        for kill in actions.containers_to_kill:  # with its preStop hook and grace period
            self.prober.forget(kill.container_id)
            self.runtime.kill_container(kill.container_id, kill.name, kill.message, kill.probe)
            self._acted = True
        for name, started, finished in actions.exits:
            self.backoff.restart_at(name, started, finished)
        for held in actions.back_off:  # CrashLoopBackOff, ImagePullBackOff: told once per wait
            self._mem(name := held.spec.name).wait(held.reason, held.message)
            if self._backoff_reported.get(name) != held.until:
                self._backoff_reported[name] = held.until
                for type_, reason, message in held.events:
                    self._event(type_, reason, message, name)
        self._wakeups += actions.wake_at
        for start in [*first, *actions.starts]:
            self._start(start, sandbox, now)

    def _start(self, start: ContainerToStart, sandbox: pb.PodSandbox, now: float) -> None:
        """startContainer: the images and CreateContainer (unless it was created already), StartContainer."""
        spec, mem, container_id = start.spec, self._mem(start.spec.name), start.container_id
        log.debug("pod %s: starting container %s: %s", self.key, spec.name, start.reason)
        if not container_id:
            container_id, reason, message = self.runtime.create_container(
                spec, mem.attempt + 1, sandbox, now, start.target_id
            )
            if not container_id:
                self._failed(spec, reason, message, now)
                return
            mem.attempt += 1
        self._acted = True
        reason, message = self.runtime.start_container(spec, container_id)  # then postStart
        if reason:
            self._failed(spec, reason, message, time.time())
            return
        mem.wait("", "")
        self.retry.forget(spec.name)

    def _failed(self, spec: ContainerSpec, reason: str, message: str, now: float) -> None:
        self._mem(spec.name).wait(reason, message)
        if reason == ERR_IMAGE_PULL:  # its image's back-off holds the retry: a later sync tells it
            self._wakeups.append(self.runtime.pull_back_off_at(spec, now))
        elif reason != POST_START_HOOK_ERROR:  # (that container was killed: its exit restarts it)
            self._wakeups.append(self.retry.step(spec.name, now))
            retrying = f"{message} (retrying in {self.retry.wait(spec.name):.0f}s)"
            self._event(WARNING, "Failed", retrying, spec.name)
