"""The side-by-side benchmark: podhost and containerd, one CRI client, one workload, one run.

What it owns: the two runtimes under test (a podhost daemon on its own root, bridge phbp0 and subnet
10.240.0.0/21; a containerd peer on its own root, bridge phbc0 and subnet 10.241.0.0/21, both with the
same CNI conflist shape: bridge + host-local, loopback, portmap), the pods it starts on them, and the
figures it takes. Everything it starts is removed by `Bench.close()`, which also runs on Ctrl-C, and
which reports whatever the runtimes left behind.

What it must never do: assert a figure (a benchmark reports, it does not judge), touch anything that is
not its own (pods are found by the runtime's own cgroup parent and root, never by name), or drive the
runtimes by anything but CRI (`podhost.cri.client.CRIClient`, in this process, so no client process start
is timed).

Theory of operation. Latency loops interleave the runtimes (one pod on one, then one on the other, the
order flipping every run), so a burst of background load on this shared machine hits both alike. The
fleet phases (100 pods: memory, daemon RSS, idle CPU, sequential and parallel wall time) and the density
phase (1,000 pods one after another: the start time of each, memory, daemon RSS and idle CPU at 1,000,
then the teardown of each) run on one runtime at a time, the other holding no pods.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import metrics
from bench.containerd_peer import BUSYBOX_IMAGE, ContainerdPeer, build_test_images
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient

log = logging.getLogger(__name__)

# host-local needs an address per pod: 2,045 in each /21, room for the density phase's 1,000.
PODHOST_BRIDGE, PODHOST_SUBNET = "phbp0", "10.240.0.0/21"
CONTAINERD_BRIDGE, CONTAINERD_SUBNET = "phbc0", "10.241.0.0/21"
CONTAINERD_CGROUP_PARENT = "/podhost-ctrd-bench"
ROOT_PREFIX = "/tmp/ph-bench-"
WORKLOAD = ["sleep", "3600"]
#: Time the fleet is left alone before its memory is read: conmon and the shims finish starting up.
SETTLE_SECONDS = 1.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Params:
    """How much to measure. `full()` is the documented run, `quick()` a smoke run under two minutes."""

    runs: int  # latency samples per runtime, for each of the two latency loops
    pods: int  # the fleet size
    in_flight: int  # concurrent RunPodSandbox+container calls in the parallel fleet start
    idle_seconds: float  # how long the fleet idles while CPU is measured
    warmup: int  # pods started and removed before anything is timed
    kills: int = 5  # pause kills, for the time until the runtime reports the sandbox NotReady
    pull_runs: int = 5  # cold pulls of the multi-layer image (bench.pull) per runtime
    density: int = 0  # pods on one daemon in the density phase (0 skips it)

    @classmethod
    def full(cls) -> Params:
        return cls(runs=100, pods=100, in_flight=10, idle_seconds=30.0, warmup=3, kills=10, density=1000)

    @classmethod
    def quick(cls) -> Params:
        return cls(
            runs=10, pods=20, in_flight=10, idle_seconds=5.0, warmup=2, kills=3, pull_runs=2, density=30
        )


# --- the workload (pure) --------------------------------------------------------------------------------


def sandbox_config(name: str, uid: str, log_directory: Path, cgroup_parent: str = "") -> pb.PodSandboxConfig:
    """The pod both runtimes get: own net/IPC/UTS namespaces, a private PID namespace per container (the
    kubelet's default), a resolver on loopback only (so no pod asks anything outside), no port mappings."""
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="bench"),
        hostname=name,
        log_directory=str(log_directory),
        dns_config=pb.DNSConfig(servers=["127.0.0.1"]),
        labels={"app": "bench"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )


def container_config(name: str = "sleeper", command: list[str] | None = None) -> pb.ContainerConfig:
    """One busybox `sleep 3600`, as the brief's "sandbox + one container"."""
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=BUSYBOX_IMAGE),
        command=command or WORKLOAD,
        log_path=f"{name}.log",
        labels={"io.kubernetes.container.name": name},
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)
            )
        ),
    )


def role(comm: str) -> str:
    """What a process of a pod is, by its name: the per-pod overhead (pause, conmon, shim) or the work."""
    if comm == "pause":
        return "pause"
    if comm == "conmon":
        return "conmon"
    if comm.startswith("containerd-shim"):
        return "shim"
    return "workload"


def names_path(argv: list[str], root: Path) -> bool:
    """True when a command line passes a path inside `root` (how a conmon of ours is recognised)."""
    prefix = str(root).rstrip("/") + "/"
    return any(a.startswith(prefix) for a in argv[1:])


# --- the runtimes under test ----------------------------------------------------------------------------


class RuntimeUnderTest(Protocol):
    name: str
    root: Path
    client: CRIClient
    endpoint: str  # the CRI socket, as crictl's --runtime-endpoint

    def start(self) -> None: ...

    def daemon_pid(self) -> int: ...

    def new_pod(self, name: str) -> pb.PodSandboxConfig: ...

    def list_pods_command(self) -> list[str] | None: ...

    def pod_processes(self) -> set[int]:
        """Every process the pods added (pause, conmon or shim, the workload), the daemon excluded."""
        ...

    def close(self) -> list[str]:
        """Remove every pod and everything the runtime made; return what could not be removed."""
        ...


class PodhostUnderTest:
    """A `podhost daemon` subprocess on its own root (tests.instance.Instance), the leak check of the
    integration tests run before it is torn down."""

    name = "podhost"

    def __init__(self, root: Path) -> None:
        from tests.instance import Instance, OrphanReaper

        self.root = root
        self._reaper = OrphanReaper()  # pause/conmon orphans, should the daemon die mid-run
        self.instance = Instance(root, PODHOST_BRIDGE, PODHOST_SUBNET)
        self.client = self.instance.client
        self.endpoint = "unix://" + str(self.instance.config.socket)

    def start(self) -> None:
        self.instance.start()

    def daemon_pid(self) -> int:
        assert self.instance.daemon is not None
        return self.instance.daemon.pid

    def new_pod(self, name: str) -> pb.PodSandboxConfig:
        uid = uuid.uuid4().hex
        return sandbox_config(name, uid, self.root / "logs" / uid)

    def list_pods_command(self) -> list[str] | None:
        return [str(Path(sys.executable).with_name("podhost")), "--root", str(self.root), "cri", "pods"]

    def pod_processes(self) -> set[int]:
        pids = metrics.cgroup_pids(self.instance.config.cgroup_parent)
        for pid in metrics.descendants(self.daemon_pid()):
            if metrics.comm(pid) == "conmon" and names_path(metrics.cmdline(pid), self.root):
                pids.add(pid)
        pids.discard(self.daemon_pid())
        return pids

    def close(self) -> list[str]:
        from tests.leaks import find_leaks

        inst = self.instance
        leaks: list[str] = []
        try:
            if inst.daemon is not None and inst.daemon.poll() is None:
                inst.remove_all_pods()
                leaks = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
            elif inst.daemon is not None:
                leaks = [f"podhost daemon had exited ({inst.daemon.returncode}):\n{inst.log_tail(15)}"]
        finally:
            inst.cleanup()
            self._reaper.close()
        parent = inst.config.cgroup_parent.lstrip("/")
        if left := [str(h / parent) for h in metrics.CGROUP_ROOT.iterdir() if (h / parent).is_dir()]:
            leaks.append(f"cgroup parent left after cleanup: {left[:3]}")
        if inst.root.exists():
            leaks.append(f"podhost root {inst.root} still exists")
        return leaks


class ContainerdUnderTest:
    """Debian's containerd 1.6 with its CRI plugin (bench.containerd_peer), images imported with ctr."""

    name = "containerd"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peer = ContainerdPeer(root, CONTAINERD_BRIDGE, CONTAINERD_SUBNET, CONTAINERD_CGROUP_PARENT)
        self.client = CRIClient(self.peer.endpoint, timeout=60)
        self.endpoint = self.peer.endpoint

    def start(self) -> None:
        self.peer.start()
        for tar in build_test_images(self.root / "images").values():
            self.peer.import_image(tar)

    def daemon_pid(self) -> int:
        pid = self.peer.pid
        assert pid is not None, "containerd is not running"
        return pid

    def new_pod(self, name: str) -> pb.PodSandboxConfig:
        uid = uuid.uuid4().hex
        return sandbox_config(name, uid, self.root / "logs" / uid, self.peer.pod_cgroup_parent(uid))

    def list_pods_command(self) -> list[str] | None:
        crictl = crictl_path()
        return [crictl, "--runtime-endpoint", self.endpoint, "pods"] if crictl else None

    def pod_processes(self) -> set[int]:
        # containerd runs in <parent>/containerd and its shims inherit that cgroup; the pods are below
        # <parent>/pod<uid>: everything under the parent but containerd itself is what the pods added.
        return metrics.cgroup_pids(CONTAINERD_CGROUP_PARENT) - {self.daemon_pid()}

    def close(self) -> list[str]:
        self.client.close()
        self.peer.stop()
        leaks = []
        if self.root.exists():
            leaks.append(f"containerd peer root {self.root} still exists")
        if Path("/sys/class/net", CONTAINERD_BRIDGE).exists():
            leaks.append(f"bridge {CONTAINERD_BRIDGE} still exists")
        if pids := metrics.cgroup_pids(CONTAINERD_CGROUP_PARENT):
            leaks.append(f"processes in {CONTAINERD_CGROUP_PARENT}: {sorted(pids)}")
        return leaks


# --- single measurements --------------------------------------------------------------------------------


@dataclass
class PodTimes:
    """One pod's life, in seconds: start (sandbox, or sandbox + container), stop, remove."""

    start: float
    stop: float = 0.0
    remove: float = 0.0


def time_command(argv: list[str]) -> float:
    """Wall seconds of one run of `argv` (output discarded; a failure is an error, not a figure)."""
    t0 = time.perf_counter()
    subprocess.run(
        argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def crictl_path() -> str | None:
    """The real crictl: $CRICTL, else from PATH (CI has none: it is built from source, never committed)."""
    return os.environ.get("CRICTL") or shutil.which("crictl")


def start_pod_with_crictl(rt: RuntimeUnderTest, crictl: str, name: str, workdir: Path) -> tuple[str, float]:
    """`crictl runp`, `crictl create`, `crictl start`: three processes, as a user types them; the pod id
    and the seconds the three took. The configs are the same messages `start_pod` sends, as crictl's
    JSON (the Go structs' snake_case names, enums as numbers)."""
    from google.protobuf import json_format

    def config_file(message: Any, path: Path) -> str:
        doc = json_format.MessageToDict(
            message, preserving_proto_field_name=True, use_integers_for_enums=True
        )
        path.write_text(json.dumps(doc))
        return str(path)

    pod_json = config_file(rt.new_pod(name), workdir / f"{name}-pod.json")
    container_json = config_file(container_config(), workdir / f"{name}-container.json")
    argv = [crictl, "--runtime-endpoint", rt.endpoint, "--timeout", "60s"]

    def out(*args: str) -> str:
        done = subprocess.run(
            [*argv, *args], check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        return done.stdout.strip()

    t0 = time.perf_counter()
    pod_id = out("runp", pod_json)
    out("start", out("create", "--no-pull", pod_id, container_json, pod_json))
    return pod_id, time.perf_counter() - t0


def start_pod(rt: RuntimeUnderTest, name: str, with_container: bool) -> tuple[str, float]:
    """RunPodSandbox (+ CreateContainer + StartContainer); the pod id and the seconds it took."""
    config = rt.new_pod(name)
    t0 = time.perf_counter()
    pod_id = rt.client.run_pod_sandbox(config)
    if with_container:
        cid = rt.client.create_container(pod_id, container_config(), config)
        rt.client.start_container(cid)
    return pod_id, time.perf_counter() - t0


def stop_remove(rt: RuntimeUnderTest, pod_id: str) -> tuple[float, float]:
    """StopPodSandbox then RemovePodSandbox (the runtime stops and removes the pod's containers)."""
    t0 = time.perf_counter()
    rt.client.stop_pod_sandbox(pod_id)
    t1 = time.perf_counter()
    rt.client.remove_pod_sandbox(pod_id)
    return t1 - t0, time.perf_counter() - t1


def pod_life(rt: RuntimeUnderTest, name: str, with_container: bool) -> PodTimes:
    pod_id, started = start_pod(rt, name, with_container)
    stopped, removed = stop_remove(rt, pod_id)
    return PodTimes(started, stopped, removed)


def sandbox_pid(rt: RuntimeUnderTest, pod_id: str) -> int:
    """The pause PID the runtime reports (verbose PodSandboxStatus: info["info"]["pid"], as containerd
    and podhost both put it)."""
    info = json.loads(rt.client.pod_sandbox_status(pod_id, verbose=True).info.get("info", "{}"))
    return int(info.get("pid", 0))


def pause_kill_to_notready(rt: RuntimeUnderTest, name: str, timeout: float = 10.0) -> float | None:
    """Seconds from SIGKILL of a pod's pause until PodSandboxStatus says NOTREADY (polled every ms, so the
    figure is how soon the runtime notices, plus at most a poll). None if the runtime never noticed."""
    pod_id, _ = start_pod(rt, name, True)
    try:
        pid = sandbox_pid(rt, pod_id)
        if pid <= 0 or metrics.comm(pid) != "pause" or pid not in rt.pod_processes():
            raise RuntimeError(f"{rt.name}: pod {pod_id[:12]} reports pause pid {pid}, not a pause of ours")
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while time.perf_counter() - t0 < timeout:
            if rt.client.pod_sandbox_status(pod_id).status.state != pb.SANDBOX_READY:
                return time.perf_counter() - t0
            time.sleep(0.001)
        return None
    finally:
        stop_remove(rt, pod_id)


def start_fleet(rt: RuntimeUnderTest, prefix: str, count: int, in_flight: int) -> tuple[list[str], float]:
    """Start `count` pods with one container each, `in_flight` at a time; (pod ids, wall seconds)."""
    names = [f"{prefix}-{i}" for i in range(count)]
    t0 = time.perf_counter()
    if in_flight <= 1:
        ids = [start_pod(rt, n, True)[0] for n in names]
    else:
        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"bench-{rt.name}") as pool:
            ids = [pod_id for pod_id, _ in pool.map(lambda n: start_pod(rt, n, True), names)]
    return ids, time.perf_counter() - t0


def remove_fleet(rt: RuntimeUnderTest, ids: list[str], in_flight: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, in_flight)) as pool:
        list(pool.map(lambda i: stop_remove(rt, i), ids))
    return time.perf_counter() - t0


def pod_memory(rt: RuntimeUnderTest, pods: int) -> dict[str, Any]:
    """PSS of every process the pods added, in KiB: the total, per pod, and per pod by role."""
    by_role: dict[str, int] = {}
    counts: dict[str, int] = {}
    total = 0
    for pid in rt.pod_processes():
        pss = metrics.pss_kib(pid)
        if pss is None:
            continue
        r = role(metrics.comm(pid))
        by_role[r] = by_role.get(r, 0) + pss
        counts[r] = counts.get(r, 0) + 1
        total += pss
    return {
        "pods": pods,
        "total_kib": total,
        "per_pod_kib": total / pods if pods else 0.0,
        "per_pod_by_role_kib": {r: v / pods for r, v in sorted(by_role.items())} if pods else {},
        "processes_by_role": dict(sorted(counts.items())),
    }


def idle_cpu(rt: RuntimeUnderTest, seconds: float) -> dict[str, float]:
    """CPU used while the pods idle: the daemon alone, and the daemon with its per-pod helpers (shims or
    conmons); also how often the daemon's threads woke up (context switches per second)."""
    daemon = rt.daemon_pid()
    helpers = {p for p in rt.pod_processes() if role(metrics.comm(p)) in ("shim", "conmon")}
    cpu0 = metrics.cpu_readings({daemon} | helpers)
    sw0 = metrics.context_switches(daemon) or 0
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = metrics.cpu_readings({daemon} | helpers)
    sw1 = metrics.context_switches(daemon) or 0
    elapsed = time.monotonic() - t0
    daemon_s = metrics.cpu_delta({daemon: cpu0.get(daemon, 0.0)}, {daemon: cpu1.get(daemon, 0.0)})
    all_s = metrics.cpu_delta(cpu0, cpu1)
    return {
        "seconds": elapsed,
        "helpers": len(helpers),
        "daemon_cpu_s": daemon_s,
        "daemon_and_helpers_cpu_s": all_s,
        "daemon_pct": 100 * daemon_s / elapsed,
        "daemon_and_helpers_pct": 100 * all_s / elapsed,
        "daemon_wakeups_per_s": (sw1 - sw0) / elapsed,
    }


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """Both runtimes, started and measured in one process; `close()` removes everything they made."""

    params: Params
    progress: Progress = field(default=lambda _msg: None)
    only: tuple[str, ...] = ("podhost", "containerd")
    runtimes: list[RuntimeUnderTest] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    _closers: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def open(self) -> None:
        """Start podhost, then containerd (closed in reverse order, so ip_forward ends as it was)."""
        token = secrets.token_hex(4)
        makers: dict[str, Callable[[], RuntimeUnderTest]] = {
            "podhost": lambda: PodhostUnderTest(Path(f"{ROOT_PREFIX}{token}")),
            "containerd": lambda: ContainerdUnderTest(Path(f"{ROOT_PREFIX}ctrd-{token}")),
        }
        for name in self.only:
            self.progress(f"starting {name}")
            rt = makers[name]()
            self._closers.callback(self._close_one, rt)
            t0 = time.perf_counter()
            rt.start()
            self.runtimes.append(rt)
            self.results[name] = {"root": str(rt.root), "start_s": time.perf_counter() - t0}

    def _close_one(self, rt: RuntimeUnderTest) -> None:
        self.progress(f"cleaning up {rt.name}")
        try:
            self.leaks[rt.name] = rt.close()
        except Exception as e:  # report and go on: the other runtime must be cleaned up too
            log.exception("cleaning up %s failed", rt.name)
            self.leaks[rt.name] = [f"cleanup failed: {e}"]

    def close(self) -> None:
        self._closers.close()

    def run(self) -> None:
        p = self.params
        for rt in self.runtimes:
            for i in range(p.warmup):
                pod_life(rt, f"warmup-{i}", True)
            self.results[rt.name]["daemon_rss_idle_kib"] = metrics.daemon_rss(rt.daemon_pid())
        self.progress(f"sandbox start x{p.runs} on each runtime, interleaved")
        self._latency("sandbox", with_container=False)
        self.progress(f"sandbox + container start, stop, remove x{p.runs} on each runtime, interleaved")
        self._latency("pod", with_container=True)
        self.progress(f"client command listing pods x{p.runs} on each runtime, interleaved")
        self._cli()
        self.progress(f"sandbox + container start through crictl x{p.runs} on each runtime, interleaved")
        self._through_crictl()
        self.progress(f"pause kill -> sandbox NotReady x{p.kills} on each runtime, interleaved")
        self._pause_kills()
        for rt in self.runtimes:
            self._fleet(rt)
        for rt in self.runtimes:
            self._density(rt)

    def _latency(self, key: str, with_container: bool) -> None:
        samples: dict[str, list[PodTimes]] = {rt.name: [] for rt in self.runtimes}
        for i in range(self.params.runs):
            order = self.runtimes if i % 2 == 0 else list(reversed(self.runtimes))
            for rt in order:
                samples[rt.name].append(pod_life(rt, f"{key}-{i}", with_container))
        for name, lives in samples.items():
            self.results[name][key] = {
                "start_s": [t.start for t in lives],
                "stop_s": [t.stop for t in lives],
                "remove_s": [t.remove for t in lives],
                "stop_remove_s": [t.stop + t.remove for t in lives],
            }

    def _cli(self) -> None:
        """Each runtime's everyday client listing its pods, as a user runs it: a whole process, started
        by a shell-like exec, interleaved. podhost's is `podhost cri pods`; containerd's is crictl (found
        on PATH or as $CRICTL; the row says "n/a" without it: CI cannot build crictl)."""
        samples: dict[str, list[float]] = {rt.name: [] for rt in self.runtimes}
        commands = {rt.name: rt.list_pods_command() for rt in self.runtimes}
        for i in range(self.params.runs):
            order = self.runtimes if i % 2 == 0 else list(reversed(self.runtimes))
            for rt in order:
                if (argv := commands[rt.name]) is not None:
                    samples[rt.name].append(time_command(argv))
        for name, values in samples.items():
            if values:
                self.results[name]["cli_list_pods_s"] = values

    def _through_crictl(self) -> None:
        """The pod start a user sees from the real client: crictl runp, create, start (three process
        starts included, the same for both runtimes); skipped without crictl, as the client row."""
        if (crictl := crictl_path()) is None:
            return
        samples: dict[str, list[float]] = {rt.name: [] for rt in self.runtimes}
        calls: dict[str, list[float]] = {rt.name: [] for rt in self.runtimes}
        for i in range(self.params.runs):
            order = self.runtimes if i % 2 == 0 else list(reversed(self.runtimes))
            for rt in order:
                pod_id, seconds = start_pod_with_crictl(rt, crictl, f"crictl-{i}", rt.root)
                samples[rt.name].append(seconds)
                stop_remove(rt, pod_id)
                # What one crictl process costs whatever the runtime does: the floor under each verb.
                calls[rt.name].append(time_command([crictl, "--runtime-endpoint", rt.endpoint, "version"]))
        for name, values in samples.items():
            self.results[name]["crictl_pod_start_s"] = values
            self.results[name]["crictl_version_s"] = calls[name]

    def _pause_kills(self) -> None:
        samples: dict[str, list[float | None]] = {rt.name: [] for rt in self.runtimes}
        for i in range(self.params.kills):
            order = self.runtimes if i % 2 == 0 else list(reversed(self.runtimes))
            for rt in order:
                samples[rt.name].append(pause_kill_to_notready(rt, f"kill-{i}"))
        for name, values in samples.items():
            self.results[name]["pause_kill_to_notready_s"] = [v for v in values if v is not None]
            self.results[name]["pause_kill_unnoticed"] = sum(v is None for v in values)

    def _fleet(self, rt: RuntimeUnderTest) -> None:
        p, r = self.params, self.results[rt.name]
        self.progress(f"{rt.name}: {p.pods} pods, one at a time")
        ids, r["fleet_sequential_s"] = start_fleet(rt, "seq", p.pods, 1)
        try:
            time.sleep(SETTLE_SECONDS)
            r["memory"] = pod_memory(rt, len(ids))
            r["daemon_rss_fleet_kib"] = metrics.daemon_rss(rt.daemon_pid())
            self.progress(f"{rt.name}: {p.pods} pods idle for {p.idle_seconds:.0f} s (CPU)")
            r["idle_cpu"] = idle_cpu(rt, p.idle_seconds)
            restarts = pause_kill_to_ready(rt, p.kills)
            if restarts is not None:
                r["pause_kill_to_ready_s"] = [t for t in restarts if t is not None]
                r["pause_kill_not_ready_again"] = sum(t is None for t in restarts)
        finally:
            r["fleet_remove_s"] = remove_fleet(rt, ids, p.in_flight)
        self.progress(f"{rt.name}: {p.pods} pods, {p.in_flight} in flight")
        ids, r["fleet_parallel_s"] = start_fleet(rt, "par", p.pods, p.in_flight)
        remove_fleet(rt, ids, p.in_flight)

    def _density(self, rt: RuntimeUnderTest) -> None:
        """`density` pods (sandbox + sleep) one after another on one daemon: the start time of each (is
        pod 1,000 as quick as pod 10?), the memory and idle CPU they cost there, then each one's
        teardown. A pod that fails to start ends the phase and is reported with how far it got: a limit
        of the runtime or of the machine is a finding, not a crash of the bench."""
        p = self.params
        if p.density <= 0:
            return
        r: dict[str, Any] = {"pods": p.density}
        self.results[rt.name]["density"] = r
        rss_before = metrics.daemon_rss(rt.daemon_pid())
        self.progress(f"{rt.name}: density, {p.density} pods one after another")
        ids: list[str] = []
        starts: list[float] = []
        try:
            for i in range(p.density):
                try:
                    pod_id, seconds = start_pod(rt, f"dense-{i}", True)
                except Exception as e:
                    r["failed_at"], r["error"] = i + 1, str(e)[:500]
                    self.progress(f"{rt.name}: pod {i + 1} failed to start: {str(e)[:200]}")
                    break
                ids.append(pod_id)
                starts.append(seconds)
                if (i + 1) % 250 == 0:
                    self.progress(f"{rt.name}: {i + 1} pods")
            r["start_s"] = starts
            time.sleep(SETTLE_SECONDS)
            r["memory"] = density_memory(rt, len(ids), rss_before)
            r["daemon_rss_kib"] = metrics.daemon_rss(rt.daemon_pid())
            self.progress(f"{rt.name}: {len(ids)} pods idle for {p.idle_seconds:.0f} s (CPU)")
            r["idle_cpu"] = idle_cpu(rt, p.idle_seconds)
        finally:
            self.progress(f"{rt.name}: tearing down {len(ids)} pods one at a time")
            r["teardown_s"] = [sum(stop_remove(rt, pod_id)) for pod_id in ids]


def density_memory(rt: RuntimeUnderTest, pods: int, rss_before: int | None) -> dict[str, Any]:
    """What `pods` pods cost: PSS of every process they added, plus what the daemon grew by for them."""
    memory = pod_memory(rt, pods)
    rss_after = metrics.daemon_rss(rt.daemon_pid())
    growth = rss_after - rss_before if rss_after is not None and rss_before is not None else 0
    memory["daemon_growth_kib"] = growth
    memory["per_pod_with_daemon_kib"] = (memory["total_kib"] + growth) / pods if pods else 0.0
    return memory


RESTART_POD = "bench-restart"
RESTART_NAMESPACE = "bench"


def restart_manifest(name: str = RESTART_POD, namespace: str = RESTART_NAMESPACE) -> str:
    """The pod the pod manager keeps running while its pause is killed: one busybox `sleep 3600`."""
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
spec:
  dnsConfig:
    nameservers: ["127.0.0.1"]
  dnsPolicy: None
  containers:
  - name: sleeper
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: {json.dumps(WORKLOAD)}
"""


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (Kubernetes v1 PodStatus.conditions)."""
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ready_sandbox(rt: RuntimeUnderTest, name: str, namespace: str) -> str:
    """The id of the pod's READY sandbox ("" while it has none), found by the kubelet's labels."""
    selector = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace}
    flt = pb.PodSandboxFilter(label_selector=selector, state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
    pods = rt.client.list_pod_sandbox(flt)
    return pods[0].id if pods else ""


def pause_kill_to_ready(rt: RuntimeUnderTest, kills: int, timeout: float = 10.0) -> list[float | None] | None:
    """Seconds from SIGKILL of a managed pod's pause to that pod Ready again on a new sandbox, through
    podhost's pod manager (the pod created and watched through the daemon's Kubernetes API), once per
    kill; None in the list for a pod that was not Ready again within `timeout` (then no further kill is
    tried).

    None when there is no pod manager to drive (the report says so)."""
    if rt.name != "podhost":
        return None
    import yaml

    from bench.kube_api import KubeAPI
    from podhost.config import Config

    state_dir = Config.load(root=rt.root).state_dir
    pods = KubeAPI(state_dir, timeout=60)
    deadline = time.monotonic() + 30
    while not pods.answers():
        if time.monotonic() > deadline:
            return None  # a daemon without its Kubernetes API
        time.sleep(0.1)
    pods.create(yaml.safe_load(restart_manifest()))
    try:
        found: list[float | None] = []
        while len(found) < kills and (not found or found[-1] is not None):
            found.append(_one_restart(rt, pods, timeout))
        return found
    finally:
        pods.delete("pod", RESTART_POD, RESTART_NAMESPACE, 0)  # sleep ignores SIGTERM: no 30 s grace
        gone_by = time.monotonic() + 120  # the pod is removed once its containers have stopped
        while time.monotonic() < gone_by and pods.get("pods", RESTART_NAMESPACE):
            time.sleep(0.05)


def _one_restart(rt: RuntimeUnderTest, pods: Any, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    old = ""
    while not (old and pod_ready(pods.pod(RESTART_POD, RESTART_NAMESPACE))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pod {RESTART_POD} never became Ready under the pod manager")
        old = ready_sandbox(rt, RESTART_POD, RESTART_NAMESPACE)
        time.sleep(0.01)
    pid = sandbox_pid(rt, old)
    if pid <= 0 or metrics.comm(pid) != "pause" or pid not in rt.pod_processes():
        raise RuntimeError(f"pod manager's sandbox {old[:12]} reports pause pid {pid}, not a pause of ours")
    # Watched, as `kubectl get pods -w` would: the stream is open (its first event is the pod as it is)
    # before the kill, and the time is taken when the server sends Ready again after NotReady.
    events = pods.watch("pods", RESTART_NAMESPACE, RESTART_POD, seconds=int(timeout) + 1)
    next(events)
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    went_down = False
    try:
        for event in events:
            ready = pod_ready(event["object"])
            went_down = went_down or not ready
            if went_down and ready:
                elapsed = time.perf_counter() - t0
                new = ready_sandbox(rt, RESTART_POD, RESTART_NAMESPACE)
                if not new or new == old:
                    raise RuntimeError(
                        f"pod {RESTART_POD} Ready again but its sandbox is {new[:12] or 'none'}"
                    )
                return elapsed
    finally:
        events.close()
    log.warning("pod %s not Ready again %.0f s after its pause was killed", RESTART_POD, timeout)
    return None
