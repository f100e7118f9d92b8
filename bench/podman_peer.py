"""The second peer: Debian's podman 4.3, what a single-machine user would pick instead of podhost.

`python -m bench.podman_peer [--pods N] [--runs N]` puts podhost and podman side by side for what podman
can do: a pod (an infra container holding the namespaces, podhost's pause image as its infra image) plus
a busybox `sleep` container, started one after another (podman: `pod create` + `run --pod`, the two
commands a user types; podhost: RunPodSandbox + CreateContainer + StartContainer through its CRI
socket, then the same through its own CLI would add a process start per verb), and the memory each pod
adds (PSS of everything in the pods' cgroups, plus each pod's conmons). Prints figures; asserts nothing.

How podman runs here, all of it private to this run and removed afterwards:
- its own storage, run and network-config directories under the run's root (never ~/.local or /var);
- runc, cgroupfs, a file events backend, and `default_ulimits` lowered to nofile=1024 and nproc=4096:
  podman asks for its own (far higher) limits, which this machine refuses ("error setting rlimits");
- a CNI network of our own writing (bridge + host-local, no gateway, no NAT, IPAM data in our root):
  podman's `network create` adds the firewall plugin, whose iptables chains outlive it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bench import metrics
from bench.containerd_peer import BUSYBOX_IMAGE, PAUSE_IMAGE, build_test_images

BRIDGE, SUBNET = "phpdm0", "10.231.33.0/24"
CGROUP_PARENT = "/podhost-podman-bench"
NETWORK = "phbench"


class PodmanPeer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf")}
        self.base = [
            "podman",
            "--root", str(root / "storage"),
            "--runroot", str(root / "run"),
            "--network-config-dir", str(root / "net"),
            "--tmpdir", str(root / "tmp"),
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", "runc",
            "--log-level", "error",
        ]  # fmt: skip

    def podman(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        (self.root / "net").mkdir(parents=True)
        (self.root / "containers.conf").write_text(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        )
        conflist = {
            "cniVersion": "0.4.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": False,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET}]],
                        "dataDir": str(self.root / "ipam"),
                    },
                }
            ],
        }
        (self.root / "net" / f"{NETWORK}.conflist").write_text(json.dumps(conflist))
        for tar in build_test_images(self.root / "images").values():
            if tar.name in ("pause.oci.tar", "busybox.oci.tar"):
                self.podman("load", "-q", "-i", str(tar))

    def start_pod(self, name: str) -> float:
        t0 = time.perf_counter()
        self.podman(
            "pod", "create", "--name", name, "--infra-image", PAUSE_IMAGE, "--network", NETWORK,
            "--dns", "127.0.0.1", "--cgroup-parent", CGROUP_PARENT,
        )  # fmt: skip
        self.podman("run", "-d", "--pod", name, "--name", f"{name}-sleep", BUSYBOX_IMAGE, "sleep", "3600")
        return time.perf_counter() - t0

    def remove_pod(self, name: str) -> float:
        t0 = time.perf_counter()
        self.podman("pod", "rm", "-f", "-t", "0", name)
        return time.perf_counter() - t0

    def _reset(self, attempts: int = 3) -> None:
        """`podman system reset`, once the run's helpers are gone. When a container ends, its conmon
        starts `podman container cleanup`, which writes an event into the tmpdir that reset is deleting
        ("unlinkat .../events: directory not empty"); so wait for every process naming our root, and
        repeat a reset that still lost that race."""
        for attempt in range(attempts):
            deadline = time.monotonic() + 10.0
            while processes_naming(self.root) and time.monotonic() < deadline:
                time.sleep(0.1)
            try:
                self.podman("system", "reset", "-f")
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def pod_processes(self) -> set[int]:
        return metrics.cgroup_pids(CGROUP_PARENT) | conmons_of(self.root)

    def close(self) -> list[str]:
        leaks = []
        try:
            self.podman("pod", "rm", "-a", "-f", "-t", "0")
            self._reset()
        finally:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
        if pids := metrics.cgroup_pids(CGROUP_PARENT):
            leaks.append(f"processes in {CGROUP_PARENT}: {sorted(pids)}")
        for hierarchy in metrics.CGROUP_ROOT.iterdir():
            with_parent = hierarchy / CGROUP_PARENT.lstrip("/")
            if with_parent.is_dir():
                subprocess.run(
                    ["find", str(with_parent), "-depth", "-type", "d", "-delete"], capture_output=True
                )
        return leaks


def processes_naming(root: Path) -> set[int]:
    """The processes whose argv names `root`: a runtime's detached helpers (conmons, podman's cleanups)."""
    return {
        pid
        for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
        if pid != os.getpid() and str(root) in " ".join(metrics.cmdline(pid))
    }


def conmons_of(root: Path) -> set[int]:
    """The conmon processes a runtime under `root` started (they are detached: found by their argv)."""
    return {pid for pid in processes_naming(root) if metrics.comm(pid) == "conmon"}


def pss_of(pids: set[int]) -> int:
    return sum(v for pid in pids if (v := metrics.pss_kib(pid)) is not None)


def run(pods: int, runs: int) -> dict[str, object]:
    from bench.harness import container_config, sandbox_config
    from tests.instance import Instance

    token = secrets.token_hex(3)
    peer = PodmanPeer(Path(f"/tmp/ph-podman-{token}"))
    inst = Instance(Path(f"/tmp/ph-podman-ph-{token}"), "phpdh0", "10.231.34.0/24")
    out: dict[str, object] = {"pods": pods, "runs": runs}
    try:
        peer.start()
        inst.start()

        def podhost_pod(name: str) -> tuple[str, float]:
            t0 = time.perf_counter()
            cfg = sandbox_config(name, secrets.token_hex(8), inst.root / "logs" / name)
            pod_id = inst.client.run_pod_sandbox(cfg)
            cid = inst.client.create_container(pod_id, container_config(), cfg)
            inst.client.start_container(cid)
            return pod_id, time.perf_counter() - t0

        starts: dict[str, list[float]] = {"podhost": [], "podman": []}
        for i in range(runs):  # interleaved: a burst of load hits both
            pod_id, seconds = podhost_pod(f"lat-{i}")
            starts["podhost"].append(seconds)
            inst.client.stop_pod_sandbox(pod_id)
            inst.client.remove_pod_sandbox(pod_id)
            starts["podman"].append(peer.start_pod(f"lat-{i}"))
            peer.remove_pod(f"lat-{i}")
        out["start_p50_ms"] = {k: statistics.median(v) * 1000 for k, v in starts.items()}

        def podhost_processes() -> set[int]:
            return metrics.cgroup_pids(inst.config.cgroup_parent) | conmons_of(inst.root)

        before = {"podhost": pss_of(podhost_processes()), "podman": pss_of(peer.pod_processes())}
        for i in range(pods):
            podhost_pod(f"fleet-{i}")
            peer.start_pod(f"fleet-{i}")
        time.sleep(1)
        out["memory_per_pod_kib"] = {
            "podhost": (pss_of(podhost_processes()) - before["podhost"]) / pods,
            "podman": (pss_of(peer.pod_processes()) - before["podman"]) / pods,
        }
    finally:
        inst.cleanup()
        out["podman_leaks"] = peer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print_table(run(args.pods, args.runs))


def print_table(r: dict[str, object]) -> None:
    starts, memory = r["start_p50_ms"], r["memory_per_pod_kib"]
    assert isinstance(starts, dict) and isinstance(memory, dict)
    print(f"{'metric':<52}{'podhost':>10}{'podman':>10}{'ratio':>8}")
    print(
        f"{'pod (infra + sleep container) start p50 (ms)':<52}{starts['podhost']:>10.1f}"
        f"{starts['podman']:>10.1f}{starts['podhost'] / starts['podman']:>7.2f}x"
    )
    label = f"memory added per pod, PSS ({r['pods']} pods) (MiB)"
    print(
        f"{label:<52}{memory['podhost'] / 1024:>10.2f}"
        f"{memory['podman'] / 1024:>10.2f}{memory['podhost'] / memory['podman']:>7.2f}x"
    )
    if r["podman_leaks"]:
        print("podman left:", r["podman_leaks"])


if __name__ == "__main__":
    main()
