"""Container lifecycle hooks and the grace period of a kill, as the kubelet has them.

The kubelet's lifecycle.HandlerRunner (pkg/kubelet/lifecycle/handlers.go) and the arithmetic of its
killContainer (pkg/kubelet/kuberuntime/kuberuntime_container.go):

    postStart   runs right after StartContainer, in the start; until it returns the container is not
                reported running (the pod worker publishes nothing meanwhile). A failure: a Warning
                FailedPostStartHook event ("PostStartHook failed": no hook output in events, it may hold
                secrets), the container killed (its preStop and grace included), the start's error
                PostStartHookError; the exit then restarts it per the restart policy, after its back-off.
    kill        grace = the deletion's gracePeriodSeconds (the manager puts it in the pod), else a failed
                liveness or startup probe's own terminationGracePeriodSeconds, else the pod's
                (`kill_grace`, setTerminationGracePeriod). With grace > 0 the preStop hook runs first and
                is waited for at most `grace` seconds; the whole seconds it took come off the grace
                (FailedPreStopHook on failure, "PreStopHook failed"). StopContainer gets what is left,
                at least 2 s (minimumGracePeriodInSeconds) (`stop_timeout`): the runtime sends the stop
                signal (the image's StopSignal, else SIGTERM) and SIGKILL when that runs out.

Handlers: exec is CRI ExecSync (no timeout of its own for postStart, as the kubelet's; a preStop's is its
grace), httpGet connects from the node to the pod's IP (or the hook's host) and any HTTP response counts
as success (only a failure to get one fails a hook, unlike a probe), sleep waits. The actions are the
probes' own runners (probes.py): one implementation of each.

Where podhost differs: a kill with grace 0 stays 0 (SIGKILL at once), where the kubelet gives every kill
2 s: podhost kills that way only when the sandbox died (nothing to drain without a network) or on a
forced deletion (the pod object stays until its containers are gone, so "force" has to mean now). A
postStart hook that is still running when the pod is deleted is no longer waited for (the kubelet cancels
the sync's context likewise); an httpGet hook's connection gives up after HTTP_HOOK_TIMEOUT of silence
(the kubelet's client has no timeout at all) so that no thread waits forever on a pod that is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import PodhostError
from podhost.kubelet.manifest import ContainerSpec, LifecycleHandler, Pod
from podhost.kubelet.probes import (
    LIVENESS,
    STARTUP,
    USER_AGENT_LIFECYCLE,
    exec_action,
    http_get,
    target,
)

log = logging.getLogger(__name__)

#: The kubelet's minimumGracePeriodInSeconds: no container is stopped with less (but see the docstring).
MINIMUM_GRACE_SECONDS = 2
#: An httpGet hook's connection gives up after this many seconds without progress.
HTTP_HOOK_TIMEOUT = 60.0
POST_START_HOOK_ERROR = "PostStartHookError"  # the waiting reason after a failed postStart
FAILED_POST_START_HOOK = "FailedPostStartHook"  # the events' reasons
FAILED_PRE_STOP_HOOK = "FailedPreStopHook"


def kill_grace(pod: Pod, spec: ContainerSpec | None, probe: str = "") -> int:
    """The grace period of killing `spec`'s container (setTerminationGracePeriod): a liveness or startup
    probe that failed it (`probe`) may have its own; else the pod's (a deletion's, once the manager set
    it)."""
    if spec is not None:
        failed = {LIVENESS: spec.liveness_probe, STARTUP: spec.startup_probe}.get(probe)
        if failed is not None and failed.termination_grace_period_seconds is not None:
            return failed.termination_grace_period_seconds
    return pod.termination_grace_period_seconds


def runs_pre_stop(spec: ContainerSpec | None, grace: int) -> bool:
    """The preStop hook runs when there is one and time for it (the kubelet skips it at grace 0)."""
    return spec is not None and spec.pre_stop is not None and grace > 0


def stop_timeout(grace: int, hook_seconds: float = 0.0) -> int:
    """StopContainer's timeout after a preStop hook that took `hook_seconds` of `grace`: what is left (the
    hook's time counted in whole seconds, as the kubelet truncates it), never under
    MINIMUM_GRACE_SECONDS; a grace of 0 (an immediate kill) stays 0."""
    if grace <= 0:
        return 0
    return max(grace - int(hook_seconds), MINIMUM_GRACE_SECONDS)


def pod_ref(pod: Pod) -> str:
    """A pod as the kubelet's messages name it (format.Pod): name_namespace(uid)."""
    return f"{pod.name}_{pod.namespace}({pod.uid})"


def failure_message(hook: LifecycleHandler, container: str, pod: Pod, error: str) -> str:
    """A failed hook in the kubelet's words (handlerRunner.Run)."""
    what = {
        "exec": f"Exec lifecycle hook ([{' '.join(hook.command)}])",
        "httpGet": f"HTTP lifecycle hook ({hook.path})",
        "sleep": f"Sleep lifecycle hook ({hook.seconds})",
    }.get(hook.handler, f"{hook.handler} lifecycle hook")
    return f'{what} for Container "{container}" in Pod "{pod_ref(pod)}" failed - error: {error}'


def pod_ip_of(cri: CRIClient, container_id: str) -> str:
    """The IP of the sandbox the container runs in (the kubelet asks GetPodStatus for it, likewise)."""
    found = cri.list_containers(pb.ContainerFilter(id=container_id))
    if not found:
        return ""
    return cri.pod_sandbox_status(found[0].pod_sandbox_id).status.network.ip


def run_hook(
    hook: LifecycleHandler,
    cri: CRIClient,
    container_id: str,
    container: ContainerSpec,
    timeout: int,
    interrupted: threading.Event,
) -> str:
    """Run one hook to its end: "" when it succeeded, else what failed (not yet in the kubelet's words).
    `timeout`: an exec hook's (0: none); `interrupted` ends a sleep early."""
    if hook.handler == "sleep":
        if interrupted.wait(hook.seconds):
            return "container terminated before sleep hook finished"
        return ""
    if hook.handler == "exec":
        ok, message = exec_action(cri, container_id, hook.command, timeout)
        return "" if ok else message
    try:
        host, port = target(hook, container, "" if hook.host else pod_ip_of(cri, container_id))
    except (ValueError, PodhostError) as e:
        return f"failed to find networking container: {e}"
    status, text = http_get(hook, host, port, HTTP_HOOK_TIMEOUT, USER_AGENT_LIFECYCLE)
    return "" if status else text  # any HTTP response will do: only a failed request fails a hook


@dataclass
class HookResult:
    finished: bool  # False: not waited for to its end (over its time, or the pod is being deleted)
    message: str  # "" when it succeeded; the kubelet's words for its failure
    seconds: float  # how long it was waited for


def call_hook(
    pod: Pod,
    hook: LifecycleHandler,
    cri: CRIClient,
    container_id: str,
    container: ContainerSpec,
    wait: float | None,
    interrupted: threading.Event,
) -> HookResult:
    """Run `hook` on a thread of its own and wait for it: at most `wait` seconds (None: as long as it
    runs), and no longer once `interrupted` is set. A hook not waited for goes on until the container's
    stop ends it."""
    result: list[str] = []
    exec_timeout = 0 if wait is None else max(1, int(wait))
    runner = threading.Thread(
        target=lambda: result.append(run_hook(hook, cri, container_id, container, exec_timeout, interrupted)),
        name=f"hook-{container.name}",
        daemon=True,
    )
    start = time.monotonic()
    runner.start()
    deadline = None if wait is None else start + wait
    while runner.is_alive() and not interrupted.is_set():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        runner.join(0.2 if left is None else min(0.2, left))
    seconds = time.monotonic() - start
    if not result:
        return HookResult(False, "", seconds)
    message = failure_message(hook, container.name, pod, result[0]) if result[0] else ""
    return HookResult(True, message, seconds)
