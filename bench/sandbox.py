"""Sandbox benchmark (issue: real pod sandboxes): `python -m bench.sandbox [--pods 50]`.

Drives a private podhost daemon through its CRI socket with the in-process CRI client (no crictl process
per call) and prints, over N pods: RunPodSandbox p50/p99, sandbox + one container (busybox sleep) p50/p99,
stop + remove p50/p99, and the memory each running pod adds: PSS summed over pause, conmon and the
container. Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

from bench.figures_cli import run_and_print
from bench.metrics import pss_kib, rss_kib, summarize
from podhost.cri import api_pb2 as pb
from tests.instance import Instance
from tests.leaks import find_leaks

BRIDGE, SUBNET = "phbsb0", "10.244.0.0/22"


def pod_processes(inst: Instance, pod_id: str) -> dict[str, list[int]]:
    """pause, and for each container its conmon and its main process, by role."""
    pause = int(json.loads(inst.client.pod_sandbox_status(pod_id, verbose=True).info["info"])["pid"])
    roles: dict[str, list[int]] = {"pause": [pause], "conmon": [], "container": []}
    for c in inst.client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod_id)):
        info = json.loads(inst.client.container_status(c.id, verbose=True).info["info"])
        roles["conmon"].append(int(info["conmonPid"]))
        roles["container"].append(int(info["pid"]))
    return roles


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - t0) * 1e3


def run(pods: int) -> dict[str, object]:
    inst = Instance(Path(f"/tmp/ph-bsb-{secrets.token_hex(3)}"), BRIDGE, SUBNET)
    results: dict[str, object] = {}
    try:
        inst.start()
        sandbox_ms, teardown_ms = [], []
        for i in range(pods):
            pod_id, ms = timed(inst.client.run_pod_sandbox, inst.pod_config(f"sb-{i}"))
            sandbox_ms.append(ms)
            t0 = time.perf_counter()
            inst.client.stop_pod_sandbox(pod_id)
            inst.client.remove_pod_sandbox(pod_id)
            teardown_ms.append((time.perf_counter() - t0) * 1e3)

        with_ctr_ms, pod_ids = [], []
        for i in range(pods):
            cfg = inst.pod_config(f"pod-{i}")
            t0 = time.perf_counter()
            pod_id = inst.client.run_pod_sandbox(cfg)
            inst.run_container(pod_id, cfg, "sleep", ["sleep", "3600"])
            with_ctr_ms.append((time.perf_counter() - t0) * 1e3)
            pod_ids.append(pod_id)
        time.sleep(1.0)  # let every process settle before reading its memory
        per_pod: list[float] = []
        per_role: dict[str, list[float]] = {"pause": [], "conmon": [], "container": []}
        pause_rss: list[float] = []
        for pod_id in pod_ids:
            roles = pod_processes(inst, pod_id)
            for role, pids in roles.items():
                per_role[role].append(float(sum(pss_kib(pid) or 0 for pid in pids)))
            per_pod.append(sum(per_role[role][-1] for role in roles))
            pause_rss.append(float(rss_kib(roles["pause"][0]) or 0))
        stop_remove_ms = []
        for pod_id in pod_ids:
            t0 = time.perf_counter()
            inst.client.stop_pod_sandbox(pod_id)
            inst.client.remove_pod_sandbox(pod_id)
            stop_remove_ms.append((time.perf_counter() - t0) * 1e3)
        results = {
            "pods": pods,
            "sandbox_start_ms": summarize(sandbox_ms),
            "sandbox_stop_remove_ms": summarize(teardown_ms),
            "sandbox_plus_container_start_ms": summarize(with_ctr_ms),
            "pod_with_container_stop_remove_ms": summarize(stop_remove_ms),
            "memory_per_pod_kib": summarize(per_pod),
            "pause_pss_kib": summarize(per_role["pause"]),
            "conmon_pss_kib": summarize(per_role["conmon"]),
            "container_pss_kib": summarize(per_role["container"]),
            "pause_rss_kib": summarize(pause_rss),
            "leaks": find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent),
        }
    finally:
        inst.cleanup()
    return results


def print_table(r: dict[str, object]) -> None:
    print(f"podhost sandbox benchmark, {r['pods']} pods (in-process CRI client)")
    print(f"{'measure':44} {'p50':>10} {'p99':>10}")
    rows = [
        ("RunPodSandbox (ms)", "sandbox_start_ms"),
        ("sandbox + 1 container start (ms)", "sandbox_plus_container_start_ms"),
        ("stop + remove, empty sandbox (ms)", "sandbox_stop_remove_ms"),
        ("stop + remove, sandbox + container (ms)", "pod_with_container_stop_remove_ms"),
        ("memory added per pod, PSS pause+conmon+ctr (KiB)", "memory_per_pod_kib"),
        ("  of which pause PSS (KiB)", "pause_pss_kib"),
        ("  of which conmon PSS (KiB)", "conmon_pss_kib"),
        ("  of which container (sleep) PSS (KiB)", "container_pss_kib"),
        ("pause RSS (KiB; budget 32)", "pause_rss_kib"),
    ]
    for label, key in rows:
        s = r[key]
        assert isinstance(s, dict)
        print(f"{label:44} {s['p50']:>10.1f} {s['p99']:>10.1f}")
    print(f"leaks after the run: {r['leaks'] or 'none'}")


def main() -> None:
    run_and_print(__doc__.splitlines()[0], "--pods", 50, run, print_table)


if __name__ == "__main__":
    main()
