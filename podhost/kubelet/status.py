"""Pod status as the kubelet reports it: phase, conditions and container statuses. Pure, no I/O.

`build_pod_status` is the kubelet's generateAPIPodStatus: from what the pod worker observed through CRI,
what it remembers of each container (`ContainerHistory`: restart count, the reason a start is held, the
last exit) and the probe trackers, it makes the `ContainerStatus` records, the phase (`pod_phase`, the
kubelet's getPhase) and the conditions with their reasons and messages. Unlike the kubelet, every
condition that is False says what happened in its message ("pause (pid 4121) killed by signal 9
(SIGKILL)", "containers with unready status: [web]: readiness probe failed: ...").
`to_dict` renders the Kubernetes shape (`status.containerStatuses[].state.waiting.reason`, ...).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from podhost.cri import api_pb2 as pb
from podhost.kubelet import allocation
from podhost.kubelet.manifest import RESTART_ALL_CONTAINERS, ContainerSpec, Pod, Resources
from podhost.kubelet.observation import Observation, seconds
from podhost.kubelet.pod_actions import RESTART_ALL_STARTED, exit_action
from podhost.kubelet.probes import READINESS, STARTUP, ProbeTracker

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
WAITING, TERMINATED = "waiting", "terminated"

POD_READY_TO_START_CONTAINERS = "PodReadyToStartContainers"
INITIALIZED = "Initialized"
CONTAINERS_READY = "ContainersReady"
READY = "Ready"
ALL_CONTAINERS_RESTARTING = "AllContainersRestarting"  # KEP-5532, while an in-place restart runs
#: The conditions the kubelet owns, in the order it reports them; any other (a readiness gate's, set
#: through the API) follows them.
CONDITION_TYPES = (
    POD_READY_TO_START_CONTAINERS,
    INITIALIZED,
    CONTAINERS_READY,
    READY,
    allocation.POD_RESIZE_PENDING,
    allocation.POD_RESIZE_IN_PROGRESS,
    ALL_CONTAINERS_RESTARTING,
)


def rfc3339(ts: float) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Terminated:
    exit_code: int
    reason: str  # Completed, Error, OOMKilled, ...
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    container_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason}
        if self.message:
            d["message"] = self.message
        d["startedAt"], d["finishedAt"] = rfc3339(self.started_at), rfc3339(self.finished_at)
        if self.container_id:
            d["containerID"] = self.container_id
        return d


@dataclass
class ContainerStatus:
    name: str
    image: str
    state: str = WAITING  # waiting, running or terminated
    reason: str = "ContainerCreating"  # for waiting (and terminated, in `terminated`)
    message: str = ""
    started_at: float = 0.0  # running
    terminated: Terminated | None = None  # when state is terminated
    last_state: Terminated | None = None
    container_id: str = ""
    image_id: str = ""
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    log_path: str = ""
    previous_log_path: str = ""
    unready_reason: str = ""  # why not ready (probe failure), for the conditions' messages
    allocated_resources: dict[str, str] | None = None  # the allocated requests (in-place resize)
    resources: dict[str, Any] | None = None  # what the runtime runs it with (ContainerStatus.resources)
    ephemeral: bool = False  # an ephemeral container's status has no `started`

    def to_dict(self, runtime: str = "cri") -> dict[str, Any]:
        state: dict[str, Any]
        if self.state == "running":
            state = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == TERMINATED and self.terminated is not None:
            state = {"terminated": self.terminated.to_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        d: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": state,
            "lastState": {"terminated": self.last_state.to_dict()} if self.last_state else {},
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.ephemeral:
            del d["started"]
        if self.container_id:
            d["containerID"] = f"{runtime}://{self.container_id}"
        if self.allocated_resources:
            d["allocatedResources"] = self.allocated_resources
        if self.resources is not None:
            d["resources"] = self.resources
        return d


@dataclass
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""
    last_transition: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type,
            "status": "True" if self.status else "False",
            "lastTransitionTime": rfc3339(self.last_transition),
        }
        if self.reason:
            d["reason"] = self.reason
        if self.message:
            d["message"] = self.message
        return d


@dataclass
class PodStatus:
    phase: str = PENDING
    reason: str = ""
    message: str = ""
    pod_ip: str = ""
    sandbox_id: str = ""
    sandbox_attempt: int = 0
    start_time: float = 0.0
    conditions: dict[str, Condition] = field(default_factory=dict)
    init_container_statuses: list[ContainerStatus] = field(default_factory=list)
    container_statuses: list[ContainerStatus] = field(default_factory=list)
    ephemeral_container_statuses: list[ContainerStatus] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        c = self.conditions.get(READY)
        return bool(c and c.status)

    def set_condition(self, type_: str, status: bool, reason: str, message: str, now: float) -> None:
        """Set a condition; its transition time moves only when its status changes."""
        old = self.conditions.get(type_)
        since = old.last_transition if old is not None and old.status == status else now
        self.conditions[type_] = Condition(type_, status, reason, message, since)

    def to_dict(self, runtime: str = "cri") -> dict[str, Any]:
        """The v1 PodStatus shape; `runtime` prefixes container ids ("podhost://...")."""
        d: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [self.conditions[t].to_dict() for t in CONDITION_TYPES if t in self.conditions]
            + [c.to_dict() for t, c in sorted(self.conditions.items()) if t not in CONDITION_TYPES],
        }
        if self.reason:
            d["reason"] = self.reason
        if self.message:
            d["message"] = self.message
        if self.pod_ip:
            d["podIP"] = self.pod_ip
            d["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            d["startTime"] = rfc3339(self.start_time)
        if self.init_container_statuses:
            d["initContainerStatuses"] = [c.to_dict(runtime) for c in self.init_container_statuses]
        d["containerStatuses"] = [c.to_dict(runtime) for c in self.container_statuses]
        if self.ephemeral_container_statuses:
            d["ephemeralContainerStatuses"] = [c.to_dict(runtime) for c in self.ephemeral_container_statuses]
        return d


class StatusManager:
    """One pod's published status (the kubelet's status manager, for one pod): other threads read it with
    `get`; only the pod worker changes it, through these methods, under one lock; `on_status` hears of
    every change that matters to the pod's endpoints and watchers."""

    def __init__(self, on_status: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._status = PodStatus()
        self._on_status = on_status

    def get(self) -> PodStatus:
        with self._lock:
            return self._status

    def set_condition(self, type_: str, status: bool, reason: str, message: str, now: float) -> None:
        """Set one condition; `on_status` hears of it when that changed the condition."""
        with self._lock:
            old = self._status.conditions.get(type_)
            self._status.set_condition(type_, status, reason, message, now)
            changed = old != self._status.conditions[type_]
        if changed:
            self._on_status()

    def clear_condition(self, type_: str) -> None:
        """Remove a condition that no longer applies (the resize conditions are there only while so)."""
        with self._lock:
            changed = self._status.conditions.pop(type_, None) is not None
        if changed:
            self._on_status()

    def not_ready_to_start(self, reason: str, message: str, now: float) -> None:
        """PodReadyToStartContainers=False: a sandbox is being made, or making it failed."""
        self.set_condition(POD_READY_TO_START_CONTAINERS, False, reason, message, now)

    def sandbox_not_ready(self, reason: str, message: str, now: float) -> None:
        """The pod's sandbox died: no IP, nothing ready (their network namespace is gone with pause). Told
        at once, so the pod leaves every endpoint list before anything slow happens."""
        with self._lock:
            status = self._status
            status.pod_ip = ""
            for cs in status.container_statuses:
                cs.ready = False
            status.set_condition(POD_READY_TO_START_CONTAINERS, False, reason, message, now)
            status.set_condition(READY, False, reason, f"the pod sandbox is not ready: {message}", now)
            status.set_condition(CONTAINERS_READY, False, reason, message, now)
        self._on_status()

    def set_external_conditions(self, conditions: list[dict[str, Any]], now: float) -> None:
        """The conditions not the kubelet's (`CONDITION_TYPES`, PodScheduled), as the API has them now:
        the ones it set, such as a readiness gate's. "Unknown" counts as not True."""
        theirs = {
            str(c["type"]): c for c in conditions if c["type"] not in (*CONDITION_TYPES, "PodScheduled")
        }
        with self._lock:
            status = self._status
            for type_ in [t for t in status.conditions if t not in CONDITION_TYPES and t not in theirs]:
                del status.conditions[type_]
            for type_, c in theirs.items():
                reason, message = str(c.get("reason", "")), str(c.get("message", ""))
                status.set_condition(type_, c.get("status") == "True", reason, message, now)
        self._on_status()

    def restarting_all(self, message: str, now: float) -> None:
        """AllContainersRestarting=True with `message`: the in-place restart kills and removes every
        container; the pod is not Ready meanwhile. Told at once (build_pod_status turns it False once
        the containers are gone)."""
        with self._lock:
            status = self._status
            status.set_condition(ALL_CONTAINERS_RESTARTING, True, RESTART_ALL_STARTED, message, now)
            for cs in [*status.container_statuses, *status.init_container_statuses]:
                cs.ready = False
            why = f"all containers are restarting: {message}"
            status.set_condition(CONTAINERS_READY, False, "ContainersNotReady", why, now)
            status.set_condition(READY, False, "ContainersNotReady", why, now)
        self._on_status()

    def sandbox_ready(self, sandbox_id: str, attempt: int, pod_ip: str, now: float) -> None:
        """A new sandbox is Ready: the pod's IP is its IP."""
        with self._lock:
            status = self._status
            status.sandbox_id, status.sandbox_attempt, status.pod_ip = sandbox_id, attempt, pod_ip
            status.start_time = status.start_time or now

    def publish(self, build: Callable[[PodStatus], PodStatus]) -> PodStatus:
        """Replace the status with `build(the current one)`; tell when its Kubernetes shape changed."""
        with self._lock:
            old = self._status
            new = self._status = build(old)
        if old.to_dict() != new.to_dict():
            self._on_status()
        return new


def _counts_as_stopped(c: ContainerStatus) -> bool:
    return c.state == TERMINATED or (c.state == WAITING and c.last_state is not None)


def pod_phase(
    restart_policy: str,
    init: list[ContainerStatus],
    containers: list[ContainerStatus],
    initialized: bool,
    will_restart: Callable[[str, int], bool] | None = None,
    sidecars: Collection[str] = (),
) -> str:
    """The kubelet's getPhase: from the containers' states and their restart policies.

    `will_restart(name, exit code)`: whether that exit is restarted (pod_actions.exit_action; by default
    the pod's `restart_policy`, init containers unless it is Never). A sidecar (`sidecars`, by name) never
    decides the phase: it is restarted whatever its exit, and stopped once the app containers are done."""
    if will_restart is None:
        init_names = {c.name for c in init}

        def will_restart(name: str, code: int) -> bool:
            if name in init_names:
                return restart_policy != "Never"
            return restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0)

    for c in init:
        if c.name in sidecars or c.state != TERMINATED or c.terminated is None:
            continue
        if c.terminated.exit_code != 0 and not will_restart(c.name, c.terminated.exit_code):
            return FAILED
    if not initialized:
        return PENDING
    running = restarting = waiting = done = succeeded = 0
    for c in containers:
        if c.state == "running":
            running += 1
        elif c.state == TERMINATED and c.terminated is not None:
            if will_restart(c.name, c.terminated.exit_code):
                restarting += 1
            else:
                done += 1
                succeeded += c.terminated.exit_code == 0
        elif _counts_as_stopped(c):
            restarting += 1  # waiting for its restart (a back-off), after an exit
        else:
            waiting += 1
    if waiting > 0:
        return PENDING
    if running > 0 or restarting > 0:
        return RUNNING
    if done > 0:
        return SUCCEEDED if succeeded == done else FAILED
    return PENDING


def readiness_gates_message(pod: Pod, conditions: Mapping[str, Condition]) -> str:
    """Why the pod's readiness gates hold Ready ("" when every gate's condition is True), in the
    kubelet's words (GeneratePodReadyCondition)."""
    why = []
    for gate in pod.readiness_gates:
        c = conditions.get(gate)
        if c is None:
            why.append(
                f"corresponding condition of pod readiness gate {gate!r} does not exist.".replace("'", '"')
            )
        elif not c.status:
            why.append(f'the status of pod readiness gate "{gate}" is not "True", but False')
    return ", ".join(why)


def unready_message(containers: list[ContainerStatus]) -> str:
    """ "containers with unready status: [a b]" plus, per container, why (a probe's words, a wait)."""
    unready = [c for c in containers if not c.ready]
    names = " ".join(c.name for c in unready)
    why = []
    for c in unready:
        if c.unready_reason:
            why.append(f"{c.name}: {c.unready_reason}")
        elif c.state == WAITING:
            why.append(f"{c.name}: {c.reason}" + (f" ({c.message})" if c.message else ""))
        elif c.state == TERMINATED and c.terminated is not None:
            why.append(f"{c.name}: terminated ({c.terminated.reason}, exit code {c.terminated.exit_code})")
    return f"containers with unready status: [{names}]" + ("; " + "; ".join(why) if why else "")


@dataclass
class ContainerHistory:
    """What the pod worker remembers of one container name between syncs (the kubelet's reasonCache,
    plus the restart count and the last exit, which outlive a sandbox the runtime removed)."""

    attempt: int = -1  # the attempt (restart count) of the newest container made for this name
    waiting_reason: str = ""  # set when a create/start/pull failed or a back-off holds the restart
    waiting_message: str = ""
    last_exit: Terminated | None = None  # the newest exit seen (its container may be gone since)
    allocated: Resources | None = None  # the resources allotted to it (allocation.py; in-place resize)

    def wait(self, reason: str, message: str) -> None:
        self.waiting_reason, self.waiting_message = reason, message


def terminated(s: pb.ContainerStatus) -> Terminated:
    """A CRI status of an exited container as the pod status's `terminated` state."""
    reason = s.reason or ("Completed" if s.exit_code == 0 else "Error")
    return Terminated(
        exit_code=s.exit_code,
        reason=reason,
        message=s.message,
        started_at=seconds(s.started_at),
        finished_at=seconds(s.finished_at),
        container_id=s.id,
    )


def remember_attempts(obs: Observation, history: dict[str, ContainerHistory]) -> None:
    """The attempts already used per name (the restart count), also after a daemon restart."""
    for c in obs.containers:
        mem = history.setdefault(c.metadata.name, ContainerHistory())
        mem.attempt = max(mem.attempt, c.metadata.attempt)


def remember_exits(pod: Pod, obs: Observation, history: dict[str, ContainerHistory]) -> None:
    """Keep each container's last exit (its lastState) before its sandbox, and so its record, goes."""
    for spec in [*pod.init_containers, *pod.containers, *pod.ephemeral_containers]:
        found = obs.of(spec.name)
        if found and obs.statuses[found[0].id].state == pb.CONTAINER_EXITED:
            history.setdefault(spec.name, ContainerHistory()).last_exit = terminated(
                obs.statuses[found[0].id]
            )


def container_status(
    pod: Pod,
    spec: ContainerSpec,
    obs: Observation,
    sandbox_id: str | None,
    history: ContainerHistory,
    trackers: Mapping[str, Mapping[str, ProbeTracker]],
    log_directory: str,
) -> ContainerStatus:
    """One container's status; the newest exit seen is recorded in `history` (its `last_exit`).

    `trackers`: the probe trackers by container id, then by kind (ProberManager.trackers)."""
    ephemeral = spec in pod.ephemeral_containers
    cs = ContainerStatus(name=spec.name, image=spec.image, ephemeral=ephemeral)
    cs.restart_count = max(history.attempt, 0)
    if history.allocated is not None and not ephemeral:
        cs.allocated_resources = allocation.requests(history.allocated) or None
    cs.log_path = f"{log_directory}/{spec.name}/{cs.restart_count}.log"
    if cs.restart_count:
        cs.previous_log_path = f"{log_directory}/{spec.name}/{cs.restart_count - 1}.log"
    all_of = obs.of(spec.name)
    current = [c for c in all_of if sandbox_id is not None and c.pod_sandbox_id == sandbox_id]
    latest = current[0] if current else (all_of[0] if all_of else None)
    previous = [c for c in all_of if latest is None or c.id != latest.id]
    prev_exited = [c for c in previous if obs.statuses[c.id].state == pb.CONTAINER_EXITED]
    if prev_exited:
        cs.last_state = terminated(obs.statuses[prev_exited[0].id])
    elif history.last_exit is not None and (latest is None or history.last_exit.container_id != latest.id):
        cs.last_state = history.last_exit  # its sandbox was removed after a sandbox change
    if latest is None:
        cs.reason = history.waiting_reason or (
            "PodInitializing" if pod.init_containers else "ContainerCreating"
        )
        cs.message = history.waiting_message
        return cs
    s = obs.statuses[latest.id]
    cs.container_id, cs.image_id = latest.id, s.image_ref
    cs.log_path = s.log_path or cs.log_path
    if s.state == pb.CONTAINER_RUNNING and latest.pod_sandbox_id == sandbox_id:
        cs.state, cs.started_at = "running", seconds(s.started_at)
        if history.allocated is not None and not ephemeral and s.resources.HasField("linux"):
            cs.resources = allocation.actual_resources(history.allocated, s.resources.linux)
        # A probe the spec has but no tracker yet (the container started in this sync; the prober makes
        # its trackers after the status is out) counts as not yet passed: a new container with a
        # readiness probe is never Ready (nor in an endpoint list) before the probe passes.
        probes = trackers.get(latest.id, {})
        startup, readiness = probes.get(STARTUP), probes.get(READINESS)
        cs.started = startup.verdict if startup is not None else spec.startup_probe is None
        passed = readiness.verdict if readiness is not None else spec.readiness_probe is None
        cs.ready = cs.started and passed and not ephemeral
        if not cs.started:
            cs.unready_reason = "startup probe has not succeeded yet" + (
                f" ({startup.message})" if startup and startup.message else ""
            )
        elif not passed:
            cs.unready_reason = (
                f"readiness probe failed: {readiness.message}"
                if readiness is not None and readiness.message
                else "readiness probe pending"
            )
    elif s.state == pb.CONTAINER_EXITED:
        exit_ = terminated(s)
        history.last_exit = exit_
        restarts = not ephemeral and bool(exit_action(pod, spec, s.exit_code))
        if history.waiting_reason and restarts:
            cs.state, cs.reason, cs.message = WAITING, history.waiting_reason, history.waiting_message
            cs.last_state = exit_
        else:
            cs.state, cs.terminated = TERMINATED, exit_
    else:
        cs.reason = "ContainerCreating"
    return cs


def build_pod_status(
    pod: Pod,
    obs: Observation,
    old: PodStatus,
    history: dict[str, ContainerHistory],
    trackers: Mapping[str, Mapping[str, ProbeTracker]],
    log_directory: str,
    now: float,
) -> PodStatus:
    """The pod's status from one observation; `old` (the last one published) keeps the conditions'
    transition times and the start time. Missing `history` entries are added."""
    sandbox = obs.sandbox
    sandbox_id = obs.ready_sandbox.id if obs.ready_sandbox is not None else None

    def one(spec: ContainerSpec) -> ContainerStatus:
        mem = history.setdefault(spec.name, ContainerHistory())
        return container_status(pod, spec, obs, sandbox_id, mem, trackers, log_directory)

    init = [one(c) for c in pod.init_containers]
    containers = [one(c) for c in pod.containers]
    ephemeral = [one(c) for c in pod.ephemeral_containers]
    sidecars = {c.name for c in pod.sidecars}
    # GeneratePodInitializedCondition: every regular init container succeeded and every sidecar started;
    # or an app container ever ran (a sidecar restarting later does not un-initialize the pod).
    pending = [
        c
        for c in init
        if not (c.started if c.name in sidecars else c.terminated is not None and c.terminated.exit_code == 0)
    ]
    initialized = not pending or any(c.container_id or c.last_state is not None for c in containers)
    specs = {c.name: c for c in [*pod.init_containers, *pod.containers]}

    def will_restart(name: str, code: int) -> bool:
        return bool(exit_action(pod, specs[name], code))

    phase = pod_phase(pod.restart_policy, init, containers, initialized, will_restart, sidecars)
    new = PodStatus(
        phase=phase,
        pod_ip=obs.sandbox_ip if sandbox_id else "",
        sandbox_id=sandbox.id if sandbox is not None else "",
        sandbox_attempt=sandbox.metadata.attempt if sandbox is not None else 0,
        start_time=old.start_time or now,
        conditions=dict(old.conditions),
        init_container_statuses=init,
        container_statuses=containers,
        ephemeral_container_statuses=ephemeral,
    )
    if sandbox_id is None and POD_READY_TO_START_CONTAINERS not in new.conditions:
        new.set_condition(
            POD_READY_TO_START_CONTAINERS, False, "SandboxCreating", "creating the pod sandbox", now
        )
    if initialized:
        new.set_condition(INITIALIZED, True, "", "", now)
    else:
        message = unready_message(pending).replace("unready", "incomplete")
        new.set_condition(INITIALIZED, False, "ContainersNotInitialized", message, now)
    finished = phase in (SUCCEEDED, FAILED)
    terminal = "PodFailed" if phase == FAILED else "PodCompleted"
    counted = [c for c in init if c.name in sidecars] + containers  # sidecars count toward Ready
    if sandbox_id is not None and all(c.ready for c in counted):
        new.set_condition(CONTAINERS_READY, True, "", "", now)
        gates = readiness_gates_message(pod, new.conditions)
        new.set_condition(READY, not gates, "ReadinessGatesNotReady" if gates else "", gates, now)
    elif sandbox_id is not None or finished:
        reason = terminal if finished else "ContainersNotReady"
        message = unready_message(counted)
        new.set_condition(CONTAINERS_READY, False, reason, message, now)
        new.set_condition(READY, False, reason, message, now)
    if any(r.action == RESTART_ALL_CONTAINERS for c in specs.values() for r in c.restart_policy_rules):
        # True from the worker's `restarting_all` until every container of the sandbox is gone (the
        # kubelet's termination phase of the restart); then False, with no reason, as the kubelet has it.
        restarting = new.conditions.get(ALL_CONTAINERS_RESTARTING)
        gone = sandbox_id is not None and not any(c.pod_sandbox_id == sandbox_id for c in obs.containers)
        if finished:
            new.set_condition(ALL_CONTAINERS_RESTARTING, False, terminal, "", now)
        elif (
            restarting is None
            or (restarting.status and gone)
            or (restarting.reason and not restarting.status)
        ):
            new.set_condition(ALL_CONTAINERS_RESTARTING, False, "", "", now)
    if finished and sandbox_id is None:
        c = new.conditions.get(POD_READY_TO_START_CONTAINERS)
        if c is None or c.status:
            new.set_condition(
                POD_READY_TO_START_CONTAINERS, False, "PodCompleted", f"the pod {phase.lower()}", now
            )
    return new
