"""Sandbox benchmark (issue: real pod sandboxes): `python -m bench.sandbox [--pods 50]`.

Drives a private podhost daemon through its CRI socket with the in-process CRI client (no crictl process
per call) and prints, over N pods: RunPodSandbox p50/p99, sandbox + one container (busybox sleep) p50/p99,
stop + remove p50/p99, and the memory each running pod adds: PSS summed over pause, conmon and the
container. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from pathlib import Path

from bench.metrics import pss_kib, summarize
from podhost.cri import api_pb2 as pb
from tests.instance import Instance
from tests.leaks import find_leaks

BRIDGE, SUBNET = "phbsb0", "10.244.0.0/22"


def pod_processes(inst: Instance, pod_id: str) -> list[int]:
    """pause, and for each container its conmon and its main process."""
    pids = [int(json.loads(inst.client.pod_sandbox_status(pod_id, verbose=True).info["info"])["pid"])]
    for c in inst.client.list_containers(pb.ContainerFilter(pod_sandbox_id=pod_id)):
        info = json.loads(inst.client.container_status(c.id, verbose=True).info["info"])
        pids += [int(info["conmonPid"]), int(info["pid"])]
    return pids


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
        per_pod = []
        for pod_id in pod_ids:
            per_pod.append(sum(pss_kib(pid) or 0 for pid in pod_processes(inst, pod_id)))
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
            "memory_per_pod_kib": summarize([float(k) for k in per_pod]),
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
    ]
    for label, key in rows:
        s = r[key]
        assert isinstance(s, dict)
        print(f"{label:44} {s['p50']:>10.1f} {s['p99']:>10.1f}")
    print(f"leaks after the run: {r['leaks'] or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    results = run(args.pods)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
