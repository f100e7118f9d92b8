"""One pod's CRI operations: the kubelet's kubeGenericRuntimeManager (pkg/kubelet/kuberuntime) for a pod.

`PodRuntime` carries out what the pod worker decided (pod_actions) and nothing else: RunPodSandbox with
its config (kuberuntime_sandbox.go), startContainer's two halves (kuberuntime_container.go: the images and
CreateContainer, then StartContainer; a container that cannot start is removed, so the retry makes a new
attempt; then the postStart hook), killing containers (killContainer: the preStop hook, then StopContainer
with the grace period left; lifecycle.py) in parallel, stopping and removing sandboxes. A failure
comes back in the words of the container's status ("ErrImagePull", "CreateContainerError", ...); what it
means for the next try is the worker's retry timer. Every event names the pod (and the container).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import NotFound, PodhostError, Unimplemented
from podhost.kubelet import images, lifecycle, volumes
from podhost.kubelet.backoff import DEFAULT_BASE, image_pull_backoff
from podhost.kubelet.config_volumes import RESYNC_SECONDS, PodVolumes, VolumeError, host_path
from podhost.kubelet.configobjects import ConfigObjects, ConfigSource
from podhost.kubelet.downward_api import NodeInfo, PodFacts
from podhost.kubelet.envvars import CREATE_CONTAINER_CONFIG_ERROR, ContainerConfigError, make_environment
from podhost.kubelet.events import NORMAL, WARNING
from podhost.kubelet.images import Event
from podhost.kubelet.manifest import ContainerSpec, Pod
from podhost.kubelet.podspec import (
    MANAGED_BY,
    MANAGER_NAME,
    container_config,
    container_mounts,
    sandbox_config,
)

log = logging.getLogger(__name__)

ERR_IMAGE_PULL = "ErrImagePull"
POST_START_HOOK_ERROR = lifecycle.POST_START_HOOK_ERROR
MINIMUM_GRACE = 2  # seconds a sidecar stopped after the app containers gets at least


class PodRuntime:
    def __init__(
        self,
        cri: CRIClient,
        pod: Pod,
        event: Event,
        log_directory: str,
        volume_directory: Path,
        pod_cgroup_parent: str = "",
        pull_backoff_base: float = DEFAULT_BASE,
        config: ConfigSource | None = None,
        node: NodeInfo | None = None,
    ) -> None:
        self.cri, self.pod, self.event = cri, pod, event
        self.config: ConfigSource = config or ConfigObjects()
        self.node = node or NodeInfo()
        self.volumes = PodVolumes(pod, volume_directory, self.config, self.node)
        # the config version, the pod's labels and annotations, and the time of the last volume sync
        self._volumes_synced: tuple[int, object, float] = (-1, None, 0.0)
        self.pulls = image_pull_backoff(pull_backoff_base)  # by image: what ImagePullBackOff waits for
        self.log_directory, self.volume_directory = log_directory, volume_directory
        self.pod_cgroup_parent = pod_cgroup_parent
        self.key = f"{pod.namespace}/{pod.name}"
        self.terminating = threading.Event()  # set on deletion: a postStart hook is no longer waited for

    # --- the sandbox -----------------------------------------------------------------------------------

    def sandbox_config(self, attempt: int) -> pb.PodSandboxConfig:
        """RunPodSandbox's config; with a pod cgroup parent, the pod's cgroup is <it>/pod<uid> (containerd
        needs it named), and the annotation that marks the sandbox as the pod manager's."""
        parent = self.pod_cgroup_parent
        cgroup = f"{parent.rstrip('/')}/pod{self.pod.uid}" if parent else ""
        config = sandbox_config(self.pod, attempt, self.log_directory, cgroup_parent=cgroup)
        config.annotations[MANAGED_BY] = MANAGER_NAME
        return config

    def run_pod_sandbox(self, attempt: int) -> str:
        """RunPodSandbox (after `mount_volumes`); raises what the runtime raised."""
        return self.cri.run_pod_sandbox(self.sandbox_config(attempt))

    # --- volumes (config_volumes.py) --------------------------------------------------------------------

    def mount_volumes(self) -> str:
        """The pod's directories, then its config and memory volumes (before RunPodSandbox, as the
        kubelet's WaitForAttachAndMount); "" when all are set up, else the FailedMount message told."""
        volumes.prepare_pod_dirs(self.pod, self.log_directory, self.volume_directory)
        failures = self.volumes.set_up()
        for name, message in failures:
            self._failed_mount(name, message)
        self._volumes_synced = (self.config.version, self._pod_metadata(), time.time())
        if not failures:
            return ""
        names = ", ".join(sorted(n for n, _ in failures))
        return f"Unable to attach or mount volumes: unmounted volumes=[{names}]"

    def sync_volumes(self, now: float) -> list[float]:
        """Rewrite the config volumes when a ConfigMap or Secret changed, the pod's own labels or annotations
        changed (its downward API files show them: the kubelet remounts such volumes on a pod update), or
        the resync period passed; when to look again (none for a pod without config volumes)."""
        if not self.volumes.config_volumes:
            return []
        version, metadata, last = self._volumes_synced
        current = self._pod_metadata()
        if version != self.config.version or metadata != current or now - last >= RESYNC_SECONDS:
            for name, message in self.volumes.sync():
                self._failed_mount(name, message)
            self._volumes_synced = self.config.version, current, now
            last = now
        return [last + RESYNC_SECONDS]

    def _pod_metadata(self) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.pod.labels), dict(self.pod.annotations)

    def _failed_mount(self, volume: str, message: str) -> None:
        self.event(WARNING, "FailedMount", f'MountVolume.SetUp failed for volume "{volume}" : {message}', "")

    def tear_down_volumes(self) -> None:
        self.volumes.tear_down()

    def down_reason(self, sandbox: pb.PodSandbox) -> tuple[str, str]:
        """Why the sandbox is not ready, in the runtime's words when it gives them (podhost's verbose
        info carries reason PauseExited and "pause (pid N) killed by signal 9 (SIGKILL)")."""
        reason, message = "", ""
        try:
            resp = self.cri.pod_sandbox_status(sandbox.id, verbose=True)
            info = json.loads(resp.info.get("info", "{}") or "{}")
            if isinstance(info, dict):
                reason, message = str(info.get("reason") or ""), str(info.get("message") or "")
        except (PodhostError, ValueError):
            pass
        return (
            reason or "SandboxNotReady",
            message or f"pod sandbox {sandbox.id[:13]} (attempt {sandbox.metadata.attempt}) is not ready",
        )

    def stop_pod_sandboxes(self, sandboxes: Iterable[pb.PodSandbox]) -> None:
        """StopPodSandbox (the runtime runs CNI DEL and releases the IP); one already gone is stopped."""
        for sb in sandboxes:
            with contextlib.suppress(NotFound):
                self.cri.stop_pod_sandbox(sb.id)

    def kill_pod_meanwhile(
        self, containers: list[pb.Container], why: str, sandboxes: Iterable[pb.PodSandbox]
    ) -> threading.Thread:
        """On a thread of its own, to be joined: the containers SIGKILLed, then the sandboxes stopped (CNI
        DEL). A dead sandbox's containers and network touch nothing of the next sandbox, so both overlap
        its creation instead of preceding it (about 17 and 20 ms of a pause death)."""

        def kill_then_stop() -> None:
            try:
                self.kill_containers(containers, why, grace=0)
                self.stop_pod_sandboxes(sandboxes)
            except Exception:  # the next sync sees what is left and repairs it, as after a failed sync
                log.exception("pod %s: stopping the old sandbox failed", self.key)

        thread = threading.Thread(target=kill_then_stop, name=f"kill-{self.key}", daemon=True)
        thread.start()
        return thread

    def remove_pod(self, sandboxes: Iterable[pb.PodSandbox]) -> None:
        """A deleted pod's end, once its containers are stopped: every sandbox stopped and removed (CNI DEL,
        the IP back), then its log and volume directories."""
        for sb in sandboxes:
            self.stop_pod_sandboxes([sb])
            self.cri.remove_pod_sandbox(sb.id)
        shutil.rmtree(self.log_directory, ignore_errors=True)
        self.volumes.tear_down()  # its tmpfs mounts first: no rmtree may walk into one

    def remove_pod_sandboxes(self, sandboxes: Iterable[pb.PodSandbox]) -> list[pb.PodSandbox]:
        """RemovePodSandbox of dead sandboxes, with their containers (their log files stay); the ones
        that could not be removed are returned, for another try."""
        failed = []
        for sb in sandboxes:
            try:
                self.cri.remove_pod_sandbox(sb.id)
            except PodhostError as e:
                log.warning("pod %s: removing old sandbox %s: %s", self.key, sb.id[:13], e)
                failed.append(sb)
        return failed

    # --- containers ------------------------------------------------------------------------------------

    def create_container(
        self, spec: ContainerSpec, attempt: int, sandbox: pb.PodSandbox, now: float, target_id: str = ""
    ) -> tuple[str, str, str]:
        """The images, then CreateContainer: (container id, "", "") once created, or ("", waiting
        reason, message) when a pull (ErrImagePull; its image's back-off stepped) or the create failed.
        `target_id`: an ephemeral container's target, whose PID namespace it joins."""
        pod = self.pod
        if failure := images.ensure_images(self.cri, pod, spec, self.event, attempt == 0, self.pulls, now):
            self.event(WARNING, "Failed", f"Error: {ERR_IMAGE_PULL}", spec.name)  # as startContainer's
            return "", ERR_IMAGE_PULL, failure
        try:
            envs = make_environment(pod, spec, self.config, self._facts(spec, sandbox))
            mounts = self._mounts(spec)
        except (ContainerConfigError, VolumeError) as e:  # the worker tells it (event Failed) and retries
            return "", CREATE_CONTAINER_CONFIG_ERROR, str(e)
        config = container_config(pod, spec, attempt, mounts, target_id=target_id, envs=envs)
        try:
            container_id = self.cri.create_container(
                sandbox.id, config, self.sandbox_config(sandbox.metadata.attempt)
            )
        except PodhostError as e:
            return "", "CreateContainerError", f"Error: {e}"
        self.event(NORMAL, "Created", f"Created container {spec.name}", spec.name)
        return container_id, "", ""

    def _facts(self, spec: ContainerSpec, sandbox: pb.PodSandbox) -> PodFacts:
        """The node, and the pod's IPs when an env var asks for them (from the sandbox's status, as the
        kubelet reads them)."""
        wanted = any(v.value_from and v.value_from.field_path.startswith("status.pod") for v in spec.env)
        ips: tuple[str, ...] = ()
        if wanted:
            status = self.cri.pod_sandbox_status(sandbox.id).status
            ips = tuple(
                ip for ip in [status.network.ip, *(a.ip for a in status.network.additional_ips)] if ip
            )
        return PodFacts(self.node, ips)

    def _mounts(self, spec: ContainerSpec) -> list[pb.Mount]:
        """CRI mounts of `spec`; the config volumes read-only (as the kubelet mounts them), a subPath of
        one bound as it resolves now."""
        paths = volumes.volume_paths(self.pod, self.volume_directory)
        mounts = container_mounts(spec, paths, images.image_volumes(self.pod))
        config_names = {v.name for v in self.volumes.config_volumes}
        for m, mount in zip(spec.volume_mounts, mounts, strict=True):
            if m.name in config_names:
                mount.readonly = True
                if m.sub_path:
                    mount.host_path = host_path(Path(paths[m.name]), m.sub_path)
        return mounts

    def pull_back_off_at(self, spec: ContainerSpec, now: float) -> float:
        """After ErrImagePull, when a sync tells ImagePullBackOff: halfway through the pull's back-off (the
        kubelet's pod worker syncs again some seconds after a failed sync; at the end the pull is due)."""
        _, until, wait = images.pull_backoff(self.pod, spec, self.pulls, now)
        return until - wait / 2 if wait else now

    def start_container(self, spec: ContainerSpec, container_id: str) -> tuple[str, str]:
        """StartContainer, then the postStart hook (lifecycle.py): ("", "") once both ran, else (reason,
        message): RunContainerError (the container is removed, for a new attempt) or PostStartHookError
        (the container is killed; its exit restarts it per the restart policy)."""
        try:
            self.cri.start_container(container_id)
        except PodhostError as e:
            with contextlib.suppress(PodhostError):  # a new attempt replaces it at the retry
                self.cri.remove_container(container_id)
            return "RunContainerError", f"Error: failed to start container: {e}"
        self.event(NORMAL, "Started", f"Started container {spec.name}", spec.name)
        if spec.post_start is None:
            return "", ""
        hook = lifecycle.call_hook(
            self.pod, spec.post_start, self.cri, container_id, spec, None, self.terminating
        )
        if not hook.message or self.terminating.is_set():  # or the pod is being deleted: its kill ends all
            return "", ""
        log.warning("pod %s: container %s: %s", self.key, spec.name, hook.message)
        self.event(WARNING, lifecycle.FAILED_POST_START_HOOK, "PostStartHook failed", spec.name)
        self.kill_container(container_id, spec.name, lifecycle.FAILED_POST_START_HOOK)
        return POST_START_HOOK_ERROR, hook.message

    def update_container_resources(self, container_id: str, resources: pb.LinuxContainerResources) -> str:
        """UpdateContainerResources (an in-place resize); "" once done, else the runtime's error."""
        try:
            self.cri.update_container_resources(container_id, resources)
        except PodhostError as e:
            return f"updating container {container_id[:13]}: {e}"
        return ""

    def update_pod_sandbox_resources(self, sandbox_id: str, resources: pb.LinuxContainerResources) -> None:
        """UpdatePodSandboxResources after a resize, which tells the runtime (and its NRI plugins) the
        pod's new total; a runtime without it (Unimplemented, podhost's own) is fine, as for the kubelet:
        the pod cgroup podhost's pod manager asks for carries no limits of its own."""
        try:
            self.cri.update_pod_sandbox_resources(sandbox_id, resources)
        except Unimplemented:
            pass
        except PodhostError as e:
            log.warning("pod %s: UpdatePodSandboxResources: %s", self.key, e)

    def memory_usage(self, container_id: str) -> int:
        """The container's memory working set in bytes (ContainerStats; 0 when it cannot be read)."""
        try:
            return int(self.cri.container_stats(container_id).memory.working_set_bytes.value)
        except PodhostError:
            return 0

    def _spec(self, name: str) -> ContainerSpec | None:
        return next((c for c in [*self.pod.init_containers, *self.pod.containers] if c.name == name), None)

    def stop_container(self, container_id: str, grace: int | None = None, name: str = "") -> None:
        """killContainer's second half: the preStop hook of container `name` when it has one and `grace`
        (the pod's terminationGracePeriodSeconds unless given) is not 0, its time counted against the
        grace; then StopContainer with what is left (lifecycle.stop_timeout)."""
        grace = self.pod.termination_grace_period_seconds if grace is None else grace
        spec, hook_seconds = self._spec(name), 0.0
        if lifecycle.runs_pre_stop(spec, grace):
            assert spec is not None and spec.pre_stop is not None
            hook = lifecycle.call_hook(
                self.pod, spec.pre_stop, self.cri, container_id, spec, grace, threading.Event()
            )
            hook_seconds = hook.seconds
            if not hook.finished:
                log.info("pod %s: container %s: preStop hook not completed in grace period", self.key, name)
            elif hook.message:
                log.warning("pod %s: container %s: %s", self.key, name, hook.message)
                self.event(WARNING, lifecycle.FAILED_PRE_STOP_HOOK, "PreStopHook failed", name)
        try:
            self.cri.stop_container(container_id, lifecycle.stop_timeout(grace, hook_seconds))
        except NotFound:
            pass
        except PodhostError as e:
            log.warning("pod %s: stopping container %s: %s", self.key, container_id[:13], e)

    def kill_container(self, container_id: str, name: str, message: str, probe: str = "") -> None:
        """killContainer: the Killing event, then `stop_container` with the kill's grace period (a failed
        liveness or startup probe's own, when it has one: lifecycle.kill_grace)."""
        self.event(NORMAL, "Killing", message, name)
        self.stop_container(container_id, lifecycle.kill_grace(self.pod, self._spec(name), probe), name)

    def kill_containers(self, containers: list[pb.Container], why: str, grace: int | None = None) -> bool:
        """Stop the containers, each with `grace` seconds (the pod's terminationGracePeriodSeconds unless
        given); True when there were any. As the kubelet's killContainersWithSyncResult: the app
        containers (and regular init containers) in parallel first, then the sidecars one at a time in
        reverse order, so each sidecar outlives what may still use it. The grace period is the pod's, not
        each container's: a sidecar gets what is left of it, at least MINIMUM_GRACE seconds (as the
        kubelet's minimumGracePeriodInSeconds)."""
        grace = self.pod.termination_grace_period_seconds if grace is None else grace
        order = {c.name: i for i, c in enumerate(self.pod.sidecars)}
        apps = [c for c in containers if c.metadata.name not in order]
        sidecars = sorted(
            (c for c in containers if c.metadata.name in order),
            key=lambda c: order[c.metadata.name],
            reverse=True,
        )
        deadline = time.monotonic() + grace
        self._kill_in_parallel(apps, why, grace)
        for c in sidecars:
            left = max(math.ceil(deadline - time.monotonic()), min(MINIMUM_GRACE, grace))
            self._kill_in_parallel([c], why, left)
        return bool(containers)

    def _kill_in_parallel(self, containers: list[pb.Container], why: str, grace: int) -> None:
        threads = []
        for c in containers:
            name = c.metadata.name
            self.event(NORMAL, "Killing", f"Stopping container {name} ({why})", name)
            threads.append(
                threading.Thread(target=self.stop_container, args=(c.id, grace, name), daemon=True)
            )
            threads[-1].start()
        for t in threads:
            t.join()

    def restart_all_containers(self, kill: Iterable[pb.Container], remove: Iterable[str]) -> bool:
        """KEP-5532's in-place restart: kill the live containers at once (no grace period, as the kubelet
        does here), then remove every container of the sandbox (the runtime keeps their log files), so
        the next sync starts the pod from its first init container in the same sandbox. True: it acted."""
        self.kill_containers(list(kill), "all containers are restarting", grace=0)
        for container_id in remove:
            with contextlib.suppress(NotFound):
                self.cri.remove_container(container_id)
        return True
