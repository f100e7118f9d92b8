"""Container probes: running one (exec, httpGet, tcpSocket) and turning results into a verdict.

`ProbeTracker` is the pure part: the kubelet's thresholds (a verdict flips after `failureThreshold`
failures or `successThreshold` successes in a row), its initial verdicts (liveness starts "alive",
readiness and startup start "not yet"), and when the next run is due. `run_probe` does the I/O: an exec
probe is CRI ExecSync with the probe's timeout (the runtime kills the command when it runs over, and
reaps it), httpGet and tcpSocket connect from the node to the pod's IP, as the kubelet does.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass

from podhost.cri.client import CRIClient
from podhost.errors import DeadlineExceeded, PodhostError
from podhost.kubelet.manifest import ContainerSpec, Probe

LIVENESS = "liveness"
READINESS = "readiness"
STARTUP = "startup"
#: Bytes of a failed probe's output kept for its event message.
MESSAGE_BYTES = 200


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
    """A probe's port: a number, or the name of one of the container's ports."""
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


def run_probe(
    probe: Probe, cri: CRIClient, container_id: str, container: ContainerSpec, pod_ip: str
) -> tuple[bool, str]:
    """Run `probe` once: (success, what failed)."""
    if probe.handler == "exec":
        try:
            r = cri.exec_sync(container_id, probe.command, probe.timeout_seconds)
        except DeadlineExceeded:
            return False, f"command {probe.command!r} timed out after {probe.timeout_seconds}s"
        except PodhostError as e:
            return False, f"exec {probe.command!r}: {e}"
        if r.exit_code == 0:
            return True, ""
        output = _clip(r.stdout + r.stderr)
        return False, f"command {probe.command!r} exited with {r.exit_code}" + (
            f": {output}" if output else ""
        )
    try:
        port = resolve_port(probe.port, container)
    except ValueError as e:
        return False, str(e)
    host = probe.host or pod_ip
    if not host:
        return False, "the pod has no IP yet"
    if probe.handler == "tcpSocket":
        try:
            with socket.create_connection((host, port), timeout=probe.timeout_seconds):
                return True, ""
        except OSError as e:
            return False, f"dial tcp {host}:{port}: {e.strerror or e}"
    conn = http.client.HTTPConnection(host, port, timeout=probe.timeout_seconds)
    try:
        conn.request(
            "GET", probe.path, headers={"User-Agent": "kube-probe/podhost", **dict(probe.http_headers)}
        )
        resp = conn.getresponse()
        body = resp.read(MESSAGE_BYTES)
    except (OSError, http.client.HTTPException) as e:
        return False, f'Get "http://{host}:{port}{probe.path}": {e}'
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {resp.status} {_clip(body)}".rstrip()
