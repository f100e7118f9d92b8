"""Container probes: running one (exec, httpGet, tcpSocket, grpc), turning results into verdicts, scheduling.

`ProbeTracker` is the pure part: the kubelet's thresholds (a verdict flips after `failureThreshold`
failures or `successThreshold` successes in a row), its initial verdicts (liveness starts "alive",
readiness and startup start "not yet"), and when the next run is due. `run_probe` does the I/O: an exec
probe is CRI ExecSync with the probe's timeout (the runtime kills the command when it runs over, and
reaps it), httpGet, tcpSocket and grpc (grpc.health.v1 Health/Check, health.proto) connect from the node
to the pod's IP, as the kubelet does. Each kind of action has one runner here (`exec_action`,
`http_get`, `tcp_socket`, `grpc_check`), which the lifecycle hooks (lifecycle.py) use as well.

`ProberManager` is one pod's prober (the kubelet's prober.Manager, pkg/kubelet/prober/prober_manager.go):
it keeps a tracker per probe of each running container, runs the due probes on the shared pool, and
turns finished runs into verdicts. Readiness and liveness wait until the startup probe succeeded. It
decides nothing about the container: the pod worker asks it which containers are `unhealthy` (for the
pod actions) and reads its trackers for the status; a finished probe only wakes the worker.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from podhost.cri.client import CRIClient
from podhost.errors import DeadlineExceeded, PodhostError
from podhost.kubelet import health_pb2
from podhost.kubelet.manifest import Action, ContainerSpec, Pod, Probe
from podhost.kubelet.observation import Observation, seconds

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
STARTUP = "startup"
#: Bytes of a failed probe's output kept for its event message.
MESSAGE_BYTES = 200
#: The User-Agent of probes and of httpGet hooks (the kubelet's kube-probe/<major>.<minor>, and
#: "kube-lifecycle/..." for hooks: NewRequestForHTTPGetAction's userAgentFragment).
USER_AGENT_PROBE = "kube-probe/1.36"
USER_AGENT_LIFECYCLE = "kube-lifecycle/1.36"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@dataclass
class ProbeTracker:
    """The state of one probe of one running container."""

    kind: str
    probe: Probe
    next_due: float
    verdict: bool  # alive / ready / started
    successes: int = 0
    failures: int = 0
    message: str = ""  # the latest failure's words

    @classmethod
    def start(cls, kind: str, probe: Probe, container_started: float) -> ProbeTracker:
        return cls(kind, probe, container_started + probe.initial_delay_seconds, verdict=kind == LIVENESS)

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def record(self, ok: bool, message: str, now: float) -> bool:
        """Count one result; True when the verdict flipped."""
        self.next_due = now + self.probe.period_seconds
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures, self.message = 0, self.failures + 1, message
        before = self.verdict
        if ok and not self.verdict and self.successes >= self.probe.success_threshold:
            self.verdict = True
        elif not ok and self.verdict and self.failures >= self.probe.failure_threshold:
            self.verdict = False
        return self.verdict != before

    @property
    def failed(self) -> bool:
        """True when the probe's failures reached its threshold (liveness: restart; startup: gave up)."""
        return self.failures >= self.probe.failure_threshold


def resolve_port(port: int | str, container: ContainerSpec) -> int:
    """A probe's or hook's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.ports:
        if p.name == port:
            return p.container_port
    raise ValueError(f"container {container.name} has no port named {port!r}")


def _clip(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    return text if len(text) <= MESSAGE_BYTES else text[:MESSAGE_BYTES] + "..."


# --- the actions: one implementation each, for probes and lifecycle hooks alike ----------------------------


def exec_action(cri: CRIClient, container_id: str, command: list[str], timeout: int) -> tuple[bool, str]:
    """CRI ExecSync of `command` (`timeout` 0: as long as it runs); success is exit code 0."""
    try:
        r = cri.exec_sync(container_id, command, timeout)
    except DeadlineExceeded:
        return False, f"command {command!r} timed out after {timeout}s"
    except PodhostError as e:
        return False, f"exec {command!r}: {e}"
    if r.exit_code == 0:
        return True, ""
    output = _clip(r.stdout + r.stderr)
    return False, f"command {command!r} exited with {r.exit_code}" + (f": {output}" if output else "")


def target(action: Action, container: ContainerSpec, pod_ip: str) -> tuple[str, int]:
    """Where a network action connects: (host, port); the pod's IP unless the action names a host
    (grpc never does). Raises ValueError when there is nowhere to connect."""
    port = resolve_port(action.port, container)
    host = action.host if action.handler != "grpc" and action.host else pod_ip
    if not host:
        raise ValueError("the pod has no IP yet")
    return host, port


def http_get(action: Action, host: str, port: int, timeout: float, user_agent: str) -> tuple[int, str]:
    """GET http(s)://host:port/path with the action's headers: (status code, the body's start), or (0,
    what failed) when no response came. HTTPS verifies no certificate, as the kubelet's prober does."""
    conn: http.client.HTTPConnection
    if action.scheme == "HTTPS":
        import ssl

        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=unverified)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", action.path, headers={"User-Agent": user_agent, **dict(action.http_headers)})
        resp = conn.getresponse()
        return resp.status, _clip(resp.read(MESSAGE_BYTES))
    except (OSError, http.client.HTTPException) as e:
        return 0, f'Get "{action.scheme.lower()}://{host}:{port}{action.path}": {e}'
    finally:
        conn.close()


def tcp_socket(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"dial tcp {host}:{port}: {e.strerror or e}"


def grpc_check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    """grpc.health.v1.Health/Check, in plain text (a probe carries no credentials), as the kubelet's gRPC
    prober (pkg/probe/grpc) calls it; success is SERVING. The failures read as the kubelet words them."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # Straight to the pod: never through a proxy the daemon's environment may name.
    options = [("grpc.primary_user_agent", USER_AGENT_PROBE), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False, f"timeout: failed to connect service {address!r} within {timeout:g}s"
        check = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            resp = check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            details = e.details() if isinstance(e, grpc.Call) else str(e)
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return False, (
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health): "
                    f"{details}"
                )
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f"timeout: health rpc did not complete within {timeout:g}s"
            return False, f"error: health rpc probe failed: {code.name if code else ''} {details}".strip()
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return False, f'service unhealthy (responded with "{name}")'
    return True, ""


def run_probe(
    probe: Probe, cri: CRIClient, container_id: str, container: ContainerSpec, pod_ip: str
) -> tuple[bool, str]:
    """Run `probe` once: (success, what failed)."""
    timeout = probe.timeout_seconds
    if probe.handler == "exec":
        return exec_action(cri, container_id, probe.command, timeout)
    try:
        host, port = target(probe, container, pod_ip)
    except ValueError as e:
        return False, str(e)
    if probe.handler == "tcpSocket":
        return tcp_socket(host, port, timeout)
    if probe.handler == "grpc":
        return grpc_check(host, port, probe.service, timeout)
    status, text = http_get(probe, host, port, timeout, USER_AGENT_PROBE)
    if not status:
        return False, text
    if 200 <= status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {status} {text}".rstrip()


#: A running container to probe: its spec, its id, when it started (seconds).
Running = tuple[ContainerSpec, str, float]


class ProberManager:
    """The probes of one pod's running containers: trackers, runs on the shared pool, verdicts."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        cri: CRIClient,
        pod_key: str,
        wake: Callable[[], None],
        unhealthy_event: Callable[[str, str], None],
    ) -> None:
        self.pool, self.cri, self.pod_key = pool, cri, pod_key
        self._wake = wake  # a finished probe wakes the pod worker
        self._unhealthy_event = unhealthy_event  # (container name, message): the Unhealthy event
        self.trackers: dict[str, dict[str, ProbeTracker]] = {}  # container id -> kind -> tracker
        self._runs: dict[tuple[str, str], Future[tuple[bool, str]]] = {}

    def _trackers_for(
        self, spec: ContainerSpec, container_id: str, started: float
    ) -> dict[str, ProbeTracker]:
        trackers = self.trackers.get(container_id)
        if trackers is None:
            trackers = {}
            for kind, probe in (
                (STARTUP, spec.startup_probe),
                (LIVENESS, spec.liveness_probe),
                (READINESS, spec.readiness_probe),
            ):
                if probe is not None:
                    trackers[kind] = ProbeTracker.start(kind, probe, started)
            self.trackers[container_id] = trackers
        return trackers

    def schedule_pod(self, pod: Pod, obs: Observation, now: float) -> list[float]:
        """`schedule` for the pod's running sidecars and app containers (the ones that have probes)."""
        specs = {c.name: c for c in [*pod.sidecars, *pod.containers]}
        running = [(specs[n], c.id, seconds(s.started_at)) for n, c, s in obs.running(specs)]
        return self.schedule(running, obs.sandbox_ip, now)

    def schedule(self, running: list[Running], pod_ip: str, now: float) -> list[float]:
        """Start the probes that are due; forget the containers no longer running. When to look again."""
        wakeups = []
        for spec, cid, started_at in running:
            trackers = self._trackers_for(spec, cid, started_at)
            started = STARTUP not in trackers or trackers[STARTUP].verdict
            for kind, tracker in trackers.items():
                if kind != STARTUP and not started:
                    continue
                if kind == STARTUP and tracker.verdict:
                    continue
                if (cid, kind) in self._runs:
                    continue
                if tracker.due(now):
                    future = self.pool.submit(run_probe, tracker.probe, self.cri, cid, spec, pod_ip)
                    self._runs[(cid, kind)] = future
                    future.add_done_callback(lambda _f: self._wake())
                else:
                    wakeups.append(tracker.next_due)
        live = {cid for _, cid, _ in running}
        for cid in [c for c in self.trackers if c not in live]:
            del self.trackers[cid]
        return wakeups

    def collect(self, names: dict[str, str], now: float) -> list[float]:
        """Count the finished runs (`names`: container id -> name, for the events). When to look again."""
        wakeups = []
        for (cid, kind), future in list(self._runs.items()):
            if not future.done():
                continue
            del self._runs[(cid, kind)]
            tracker = self.trackers.get(cid, {}).get(kind)
            if tracker is None:
                continue
            try:
                ok, message = future.result()
            except Exception as e:  # a probe runner bug must not stop the worker
                ok, message = False, f"probe error: {e}"
            flipped = tracker.record(ok, message, now)
            name = names.get(cid, "?")
            if not ok:
                self._unhealthy_event(name, f"{kind.capitalize()} probe failed: {message}")
            elif flipped:
                log.info("pod %s: container %s %s probe succeeded", self.pod_key, name, kind)
            wakeups.append(tracker.next_due)
        return wakeups

    def unhealthy(self) -> dict[str, str]:
        """Running containers to kill, by id: the probe that failed them (liveness, or startup that gave up)."""
        out = {}
        for cid, trackers in self.trackers.items():
            live, startup = trackers.get(LIVENESS), trackers.get(STARTUP)
            if live is not None and not live.verdict:
                out[cid] = LIVENESS
            elif startup is not None and not startup.verdict and startup.failed:
                out[cid] = STARTUP
        return out

    def forget(self, container_id: str) -> None:
        """The container is being killed: its probes start afresh with the next container."""
        self.trackers.pop(container_id, None)

    def cancel(self) -> None:
        for future in self._runs.values():
            future.cancel()
