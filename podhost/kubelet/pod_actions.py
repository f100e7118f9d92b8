"""Pod actions: from the pod's spec and what CRI shows of it, what the pod worker must do next. Pure.

The kubelet's computePodActions (pkg/kubelet/kuberuntime/kuberuntime_manager.go): `SyncPod` only carries
out what this function returns, so every decision of the pod lifecycle is here, testable with tables
(tests/unit/test_pod_actions.py), and nothing here makes a call, reads a clock or changes state:

    no sandbox, or the newest one not Ready   ->  kill the pod (its containers, at once: their network is
        (sandbox_changed)                         gone) and create a sandbox with attempt+1; unless the pod
                                                  is done (it finished, or ran under Never: pod_done), or a
                                                  failed RunPodSandbox's retry has not waited out (wake_at)
    an exit a RestartAllContainers rule       ->  restart_all (KEP-5532): kill every container at once and
        matches (restartPolicyRules)              remove them all, the sandbox (pause, IP, volumes) stays;
                                                  the next sync starts the pod again, init containers first.
                                                  Held by the exited container's CrashLoopBackOff wait
    init containers, in order                 ->  start the first one not yet succeeded
                                                  (next_init_container); a running one is waited for; a
                                                  failed one is restarted after its back-off, or blocks the
                                                  pod for good under Never. A sidecar (restartPolicy
                                                  Always, KEP-753) lets the next one start once it runs and
                                                  its startup probe (if any) succeeded; it is restarted
                                                  whenever it exits, also after initialization
    containers, once initialized              ->  start the missing ones; restart an exited one as its
                                                  exit_action says (restartPolicyRules, first match; else
                                                  its own restartPolicy; else the pod's) after its
                                                  CrashLoopBackOff wait (back_off); kill a running one
                                                  (or sidecar) whose liveness or startup probe failed
    any start                                 ->  held while the pull back-off of one of its images
                                                  runs (ImagePullBackOff, a back_off entry), or the retry
                                                  of a failed create or start (wake_at)

A container that was created but not started (the daemon stopped between the two calls) is started, not
made again. Containers are looked at only in the newest, Ready sandbox: the ones of dead sandboxes go with
them. The back-offs are only asked (`peek`, `until`), never stepped: the worker steps CrashLoopBackOff when
it starts the container (`ContainerToStart.exited`) or reports the wait (`BackOff.exited`), and the image
manager steps a pull's back-off when the pull fails (kubelet/images.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from podhost.cri import api_pb2 as pb
from podhost.kubelet.backoff import SANDBOX, Backoff, CrashLoopBackOff, image_pull_backoff
from podhost.kubelet.events import NORMAL, WARNING
from podhost.kubelet.images import pull_backoff
from podhost.kubelet.manifest import RESTART, RESTART_ALL_CONTAINERS, ContainerSpec, Pod
from podhost.kubelet.observation import Observation, seconds
from podhost.kubelet.probes import STARTUP, ProbeTracker


@dataclass(frozen=True)
class ContainerToStart:
    spec: ContainerSpec
    reason: str  # why it starts: "not created yet", "exited with code 1 (restartPolicy Always)", ...
    container_id: str = ""  # a container created but not started: start it, make no other
    exited: pb.ContainerStatus | None = None  # the exit this start restarts after
    target_id: str = ""  # an ephemeral container's target: it joins that container's PID namespace


@dataclass(frozen=True)
class ContainerToKill:
    container_id: str
    name: str
    message: str  # the Killing event's words: "Container web failed liveness probe, will be restarted"
    probe: str = ""  # the probe kind that failed it (its terminationGracePeriodSeconds may apply)


CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"


@dataclass(frozen=True)
class BackOff:
    """A start held until `until`: by CrashLoopBackOff (a restart after an exit) or by ImagePullBackOff
    (an image whose pull failed)."""

    spec: ContainerSpec
    until: float
    wait: float
    reason: str  # the waiting state's: CRASH_LOOP_BACK_OFF or IMAGE_PULL_BACK_OFF
    message: str  # its message: "back-off 20s restarting failed container=web pod=p_ns(uid)", ...
    events: tuple[tuple[str, str, str], ...]  # (type, reason, message): told once per back-off
    exited: pb.ContainerStatus | None = None  # the exit a CrashLoopBackOff restart comes after


@dataclass(frozen=True)
class RestartAll:
    """KEP-5532's in-place restart, triggered by `spec`'s exit: kill `kill` (at once: no grace period, as
    the kubelet does for this restart), then remove `remove` (the trigger last, so a restart cut short is
    seen again by the next sync); the sandbox stays."""

    spec: ContainerSpec
    exited: pb.ContainerStatus
    message: str  # the AllContainersRestarting condition's
    kill: tuple[pb.Container, ...]
    remove: tuple[str, ...]


RESTART_ALL_STARTED = "RestartAllContainersStarted"  # the condition's reason, as the kubelet's


@dataclass
class PodActions:
    sandbox_changed: bool = False  # no sandbox, or the newest one is not Ready (podSandboxChanged)
    pod_done: bool = False  # and no new one is made: the pod finished, or ran once under Never
    kill_pod: bool = False  # stop every container at once (grace 0) and every sandbox
    kill_reason: str = ""
    create_sandbox: bool = False
    attempt: int = 0  # of the sandbox to create
    next_init_container: ContainerToStart | None = None
    containers_to_start: list[ContainerToStart] = field(default_factory=list)
    containers_to_kill: list[ContainerToKill] = field(default_factory=list)
    back_off: list[BackOff] = field(default_factory=list)
    wake_at: list[float] = field(default_factory=list)  # when a held start (back-off, retry) is due
    restart_all: RestartAll | None = None

    @property
    def starts(self) -> list[ContainerToStart]:
        """Every container to start, in order."""
        first = [self.next_init_container] if self.next_init_container else []
        return [*first, *self.containers_to_start]

    @property
    def exits(self) -> list[tuple[str, float, float]]:
        """(container name, started, finished) of each exit these actions restart after or hold: what
        moves the back-off one step when they are carried out."""
        held = [(b.spec.name, b.exited) for b in self.back_off if b.exited is not None]
        restarted = [(s.spec.name, s.exited) for s in self.starts if s.exited is not None]
        if self.restart_all is not None:
            restarted.append((self.restart_all.spec.name, self.restart_all.exited))
        return [(name, seconds(e.started_at), seconds(e.finished_at)) for name, e in [*held, *restarted]]


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether an exited container is restarted (the kubelet's ShouldContainerBeRestarted, for exits)."""
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


def restart_policy(pod: Pod, spec: ContainerSpec) -> str:
    """The container's restart policy: its own (KEP-5307) when set; a regular init container's is
    OnFailure (Never in a Never pod); a regular container's is the pod's."""
    if spec.restart_policy:
        return spec.restart_policy
    if any(c is spec for c in pod.init_containers):
        return "Never" if pod.restart_policy == "Never" else "OnFailure"
    return pod.restart_policy


def exit_action(pod: Pod, spec: ContainerSpec, exit_code: int) -> str:
    """What an exit of `spec` leads to: RESTART, RESTART_ALL_CONTAINERS, or "" (it stays exited). The
    kubelet's order (KEP-5307): the container's restartPolicyRules in order, the first that matches
    decides; else its restart policy (`restart_policy`). A sidecar is always restarted."""
    for rule in spec.restart_policy_rules:
        if rule.matches(exit_code):
            return rule.action
    if pod.is_sidecar(spec) or should_restart(restart_policy(pod, spec), exit_code):
        return RESTART
    return ""


def startup_passed(trackers: Mapping[str, Mapping[str, ProbeTracker]]) -> set[str]:
    """The container ids whose startup probe succeeded (from ProberManager.trackers)."""
    return {cid for cid, kinds in trackers.items() if STARTUP in kinds and kinds[STARTUP].verdict}


def pod_done(pod: Pod, obs: Observation, pod_finished: bool) -> bool:
    """The kubelet makes no new sandbox for a pod that finished, or that ran under Never."""
    return pod_finished or (pod.restart_policy == "Never" and bool(obs.containers) and bool(obs.sandboxes))


def compute_pod_actions(
    pod: Pod,
    obs: Observation,
    now: float,
    crash_loop: CrashLoopBackOff,
    retry: Backoff,
    unhealthy: Mapping[str, str] | None = None,
    pod_finished: bool = False,
    pulls: Backoff | None = None,
    started: Collection[str] = (),
) -> PodActions:
    """What to do next for `pod`, seen as `obs` at `now`.

    `crash_loop`, `retry` and `pulls` (by image) are the worker's back-off timers (asked, not stepped);
    `unhealthy` maps a running container's id to the probe kind (probes.LIVENESS, probes.STARTUP) that
    failed it; `pod_finished` says the phase last published is Succeeded or Failed; `started` holds the
    ids of running containers whose startup probe succeeded (`startup_passed`)."""
    actions = PodActions()
    held = _Held(pod, now, retry, pulls or image_pull_backoff(), actions)
    sandbox = obs.ready_sandbox
    if sandbox is None:
        return _sandbox_changed(pod, obs, now, retry, pod_finished, actions)
    if _restart_all(pod, obs, sandbox, crash_loop, held):
        return actions
    # The kubelet's HasAnyRegularContainerStarted: once an app container ran in this sandbox, the init
    # sequence is over; only sidecars are looked after from then on.
    initialized = any(obs.of(c.name, sandbox.id) for c in pod.containers)
    unhealthy = unhealthy or {}
    for spec in pod.init_containers:
        latest = obs.latest(spec.name, sandbox.id)
        if pod.is_sidecar(spec):
            if (
                not _sidecar(spec, latest, crash_loop, held, unhealthy, started, initialized)
                and not initialized
            ):
                return actions  # the next init container waits until this sidecar has started
            continue
        if initialized or (
            latest is not None and latest[1].state == pb.CONTAINER_EXITED and latest[1].exit_code == 0
        ):
            continue  # done: the next one
        if latest is None or latest[1].state == pb.CONTAINER_CREATED:
            actions.next_init_container = held.start(spec, latest, "init container")
        elif latest[1].state == pb.CONTAINER_EXITED and exit_action(pod, spec, latest[1].exit_code):
            actions.next_init_container = _restart(spec, latest[1], crash_loop, held)
        # otherwise running (wait for it) or failed under Never (the pod failed; pod_phase says so)
        return actions
    for spec in pod.containers:
        latest = obs.latest(spec.name, sandbox.id)
        if latest is None or latest[1].state == pb.CONTAINER_CREATED:
            start = held.start(spec, latest, "container")
        elif latest[1].state == pb.CONTAINER_RUNNING:
            probe = unhealthy.get(latest[0].id)
            if probe is not None:
                message = f"Container {spec.name} failed {probe} probe, will be restarted"
                actions.containers_to_kill.append(ContainerToKill(latest[0].id, spec.name, message, probe))
            continue
        elif latest[1].state == pb.CONTAINER_EXITED and exit_action(pod, spec, latest[1].exit_code):
            start = _restart(spec, latest[1], crash_loop, held)
        else:
            continue  # exited for good under its restart policy, or in a state CRI does not know
        if start is not None:
            actions.containers_to_start.append(start)
    return actions


def _sidecar(
    spec: ContainerSpec,
    latest: tuple[pb.Container, pb.ContainerStatus] | None,
    crash_loop: CrashLoopBackOff,
    held: _Held,
    unhealthy: Mapping[str, str],
    started: Collection[str],
    initialized: bool,
) -> bool:
    """A sidecar's action; True when it has started (it runs, and its startup probe, if it has one,
    succeeded), so the next init container may start. Before initialization its start is the init
    sequence's next one; after, a restart goes with the containers'."""
    actions, start = held.actions, None
    if latest is None or latest[1].state == pb.CONTAINER_CREATED:
        start = held.start(spec, latest, "sidecar container")
    elif latest[1].state == pb.CONTAINER_RUNNING:
        probe = unhealthy.get(latest[0].id)
        if probe is None:
            return spec.startup_probe is None or latest[0].id in started
        message = f"Container {spec.name} failed {probe} probe, will be restarted"
        actions.containers_to_kill.append(ContainerToKill(latest[0].id, spec.name, message))
    elif latest[1].state == pb.CONTAINER_EXITED:
        start = _restart(spec, latest[1], crash_loop, held)
    if start is not None:
        if initialized:
            actions.containers_to_start.append(start)
        else:
            actions.next_init_container = start
    return False


def _restart_all(
    pod: Pod, obs: Observation, sandbox: pb.PodSandbox, crash_loop: CrashLoopBackOff, held: _Held
) -> bool:
    """KEP-5532: True when an exit in the sandbox matched a RestartAllContainers rule; then the pod's
    every container is killed and removed (`restart_all`), or, within the exited container's
    CrashLoopBackOff wait, nothing happens but the wait (a pod that keeps asking loops slower)."""
    mine = [c for c in obs.containers if c.pod_sandbox_id == sandbox.id]
    for spec in [*pod.init_containers, *pod.containers]:
        latest = obs.latest(spec.name, sandbox.id)
        if latest is None or latest[1].state != pb.CONTAINER_EXITED:
            continue
        trigger, exited = latest
        if exit_action(pod, spec, exited.exit_code) != RESTART_ALL_CONTAINERS:
            continue
        if _crash_loop_wait(spec, exited, crash_loop, held):
            return True
        message = (
            f"container exited with restart policy rule: {spec.name} exited with code {exited.exit_code}"
        )
        live = tuple(
            c for c in mine if obs.statuses[c.id].state in (pb.CONTAINER_RUNNING, pb.CONTAINER_CREATED)
        )
        remove = (*(c.id for c in mine if c.id != trigger.id), trigger.id)
        held.actions.restart_all = RestartAll(spec, exited, message, live, remove)
        return True
    return False


def _sandbox_changed(
    pod: Pod, obs: Observation, now: float, retry: Backoff, pod_finished: bool, actions: PodActions
) -> PodActions:
    actions.sandbox_changed = True
    actions.pod_done = pod_done(pod, obs, pod_finished)
    if actions.pod_done:
        actions.kill_pod, actions.kill_reason = True, "the pod sandbox is gone"
        return actions
    until = retry.until(SANDBOX)
    if now < until:
        actions.wake_at.append(until)  # the failed RunPodSandbox's retry; nothing else changes meanwhile
        return actions
    dead = obs.sandbox
    actions.kill_pod, actions.kill_reason = True, "the pod sandbox changed"
    actions.create_sandbox = True
    actions.attempt = dead.metadata.attempt + 1 if dead is not None else 0
    return actions


@dataclass(frozen=True)
class _Held:
    """What can hold a start: an image's pull back-off, the container's retry."""

    pod: Pod
    now: float
    retry: Backoff
    pulls: Backoff
    actions: PodActions

    def start(
        self,
        spec: ContainerSpec,
        latest: tuple[pb.Container, pb.ContainerStatus] | None,
        what: str,
        exited: pb.ContainerStatus | None = None,
        reason: str = "",
    ) -> ContainerToStart | None:
        if latest is not None:  # created, never started: start that one
            return ContainerToStart(spec, f"{what} created, not started", container_id=latest[0].id)
        image, until, wait = pull_backoff(self.pod, spec, self.pulls, self.now)
        if image:  # the kubelet's ErrImagePullBackOff: the start waits, its words are the waiting state's
            message = f'Back-off pulling image "{image}"'
            told = ((NORMAL, "BackOff", message), (WARNING, "Failed", f"Error: {IMAGE_PULL_BACK_OFF}"))
            self.actions.back_off.append(BackOff(spec, until, wait, IMAGE_PULL_BACK_OFF, message, told))
            self.actions.wake_at.append(until)
            return None
        until = self.retry.until(spec.name)
        if self.now < until:  # a failed create or start of this container waits for its retry
            self.actions.wake_at.append(until)
            return None
        return ContainerToStart(spec, reason or f"{what} not created yet", exited=exited)


def _restart(
    spec: ContainerSpec, exited: pb.ContainerStatus, crash_loop: CrashLoopBackOff, held: _Held
) -> ContainerToStart | None:
    if _crash_loop_wait(spec, exited, crash_loop, held):
        return None
    policy = "Always" if held.pod.is_sidecar(spec) else restart_policy(held.pod, spec)
    reason = f"exited with code {exited.exit_code} (restartPolicy {policy})"
    return held.start(spec, None, "container", exited=exited, reason=reason)


def _crash_loop_wait(
    spec: ContainerSpec, exited: pb.ContainerStatus, crash_loop: CrashLoopBackOff, held: _Held
) -> bool:
    """True (and the wait told, in back_off) while the restart after `exited` waits for CrashLoopBackOff."""
    pod, now = held.pod, held.now
    until, wait = crash_loop.peek_restart(spec.name, seconds(exited.started_at), seconds(exited.finished_at))
    if now >= until or wait <= 0:  # (an exit seen after `now` was read ends after it: no wait is no wait)
        return False
    message = f"back-off {wait:g}s restarting failed container={spec.name} pod={pod.name}_{pod.namespace}({pod.uid})"
    told = ((WARNING, "BackOff", f"Back-off {wait:g}s restarting failed container"),)
    held.actions.back_off.append(BackOff(spec, until, wait, CRASH_LOOP_BACK_OFF, message, told, exited))
    held.actions.wake_at.append(until)
    return True
