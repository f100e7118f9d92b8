"""Scale and churn (issue 9): `python -m bench.scale [--pods 1000] [--cycles 1000]`.

Scale: N pods (sandbox + one busybox `sleep` container) on one daemon, started one after another, then
checked all Running. Prints the total time, the p50 per-pod start time (RunPodSandbox + CreateContainer +
StartContainer) of the first and the last 100 pods, the memory each pod adds (PSS of every process the
pods added, the daemon's PSS growth included, over N) and the daemon's RSS, open descriptors and threads.
A pod that fails to start ends the phase; the error and its pod number are reported (issue 9's finding 11:
CreateContainer failed near 500 pods with "filedescriptor out of range in select()").

Churn: the fleet removed, M cycles of RunPodSandbox + container, then StopPodSandbox + RemovePodSandbox,
with the daemon's RSS, open descriptors and threads read at the start (after a short warm-up), every
`--every` cycles and at the end. They must stay flat: the exit status is 1 when descriptors or threads
grew by more than `--fd-bound` / `--thread-bound` (RSS is printed, not judged: an allocator keeps pages).

Everything is removed at the end and checked for leftovers (tests.leaks); the figures go to
bench/results/scale.json. RLIMIT_NOFILE is raised to the hard limit for the daemon. Asserts no timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import metrics
from bench.isolated import REPO, IsolatedRun, daemon_stats, raise_nofile_limit, write_results
from podhost.cri import api_pb2 as pb

BRIDGE, SUBNET = "ph3s0", "10.230.0.0/20"  # host-local needs an address per pod: 4,094 here
WORKLOAD = ["sleep", "3600"]
#: Time the fleet is left alone before its memory is read (conmon and the containers finish starting).
SETTLE_SECONDS = 2.0

Say = Callable[[str], None]


def start_pod(run: IsolatedRun, name: str) -> tuple[str, float]:
    """RunPodSandbox + CreateContainer + StartContainer; (pod id, seconds)."""
    inst = run.inst
    config = inst.pod_config(name)
    t0 = time.perf_counter()
    pod_id = inst.client.run_pod_sandbox(config)
    cid = inst.client.create_container(pod_id, inst.container_config("sleeper", WORKLOAD), config)
    inst.client.start_container(cid)
    return pod_id, time.perf_counter() - t0


def stop_remove(run: IsolatedRun, pod_id: str) -> float:
    t0 = time.perf_counter()
    run.inst.client.stop_pod_sandbox(pod_id)
    run.inst.client.remove_pod_sandbox(pod_id)
    return time.perf_counter() - t0


def pod_processes(run: IsolatedRun) -> set[int]:
    """Every process the pods added: the daemon's descendants (pause and conmon are its children, as it is
    their subreaper; containers are conmon's) and everything in the instance's cgroups, the daemon left out."""
    daemon = run.daemon_pid
    pids = metrics.descendants(daemon) | metrics.cgroup_pids(run.inst.config.cgroup_parent)
    pids.discard(daemon)
    return pids


def fleet_memory(run: IsolatedRun, pods: int, daemon_before: dict[str, int | None]) -> dict[str, Any]:
    """PSS in KiB of the pods' processes, by name, and per pod with the daemon's PSS growth included."""
    by_comm: dict[str, int] = {}
    counts: dict[str, int] = {}
    total = 0
    for pid in pod_processes(run):
        pss = metrics.pss_kib(pid)
        if pss is None:
            continue
        name = metrics.comm(pid)
        by_comm[name] = by_comm.get(name, 0) + pss
        counts[name] = counts.get(name, 0) + 1
        total += pss
    daemon_now = daemon_stats(run.daemon_pid)
    daemon_delta = (daemon_now["pss_kib"] or 0) - (daemon_before["pss_kib"] or 0)
    return {
        "pods": pods,
        "pod_processes_pss_kib": total,
        "daemon_pss_delta_kib": daemon_delta,
        "per_pod_kib": (total + daemon_delta) / pods if pods else 0.0,
        "per_pod_by_process_kib": {k: v / pods for k, v in sorted(by_comm.items())} if pods else {},
        "processes_by_name": dict(sorted(counts.items())),
    }


def counts_running(run: IsolatedRun) -> dict[str, int]:
    client = run.inst.client
    pods = client.list_pod_sandbox()
    containers = client.list_containers()
    return {
        "pods_listed": len(pods),
        "pods_ready": sum(p.state == pb.SANDBOX_READY for p in pods),
        "containers_listed": len(containers),
        "containers_running": sum(c.state == pb.CONTAINER_RUNNING for c in containers),
    }


def _fmt_stats(stats: dict[str, int | None]) -> str:
    rss = stats["rss_kib"]
    return f"RSS {rss / 1024:.1f} MiB, {stats['fds']} fds, {stats['threads']} threads" if rss else "gone"


# --- the phases -----------------------------------------------------------------------------------------


def scale_phase(run: IsolatedRun, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    for i in range(args.warmup):  # imports and caches of the first calls are not a pod's cost
        stop_remove(run, start_pod(run, f"warmup-{i}")[0])
    idle = daemon_stats(run.daemon_pid)
    say(f"daemon idle: {_fmt_stats(idle)}")
    ids: list[str] = []
    times: list[float] = []
    failure: dict[str, Any] | None = None
    t0 = time.perf_counter()
    for i in range(args.pods):
        try:
            pod_id, seconds = start_pod(run, f"pod-{i}")
        except Exception as e:
            failure = {"pod": i, "error": f"{type(e).__name__}: {e}", "daemon_log": run.inst.log_tail(10)}
            say(f"FAILED starting pod {i}: {failure['error']}")
            break
        ids.append(pod_id)
        times.append(seconds)
        if (i + 1) % 100 == 0:
            say(
                f"{i + 1} pods, last 100 p50 {metrics.percentile(times[-100:], 50) * 1e3:.0f} ms; "
                f"daemon {_fmt_stats(daemon_stats(run.daemon_pid))}"
            )
    total = time.perf_counter() - t0
    time.sleep(SETTLE_SECONDS)
    state = counts_running(run)
    full = daemon_stats(run.daemon_pid)
    memory = fleet_memory(run, len(ids), idle)
    head, tail = times[:100], times[-100:]
    result: dict[str, Any] = {
        "pods_asked": args.pods,
        "pods_started": len(ids),
        "failure": failure,
        "all_running": state["pods_ready"] == len(ids) == state["containers_running"],
        "state": state,
        "start_total_s": total,
        "start_first_100_p50_ms": metrics.percentile(head, 50) * 1e3 if head else None,
        "start_last_100_p50_ms": metrics.percentile(tail, 50) * 1e3 if tail else None,
        "start_all_ms": metrics.summarize([t * 1e3 for t in times]),
        "memory": memory,
        "daemon_idle": idle,
        "daemon_with_pods": full,
    }
    say(f"fleet of {len(ids)}: {_fmt_stats(full)}; removing it")
    t1 = time.perf_counter()
    removal = [stop_remove(run, pod_id) for pod_id in ids]
    result["remove_total_s"] = time.perf_counter() - t1
    result["remove_ms"] = metrics.summarize([t * 1e3 for t in removal])
    result["daemon_after_removal"] = daemon_stats(run.daemon_pid)
    return result


def churn_phase(run: IsolatedRun, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    for i in range(args.warmup):
        stop_remove(run, start_pod(run, f"churn-warmup-{i}")[0])
    readings = [{"cycle": 0, **daemon_stats(run.daemon_pid)}]
    say(f"churn start: {_fmt_stats(readings[0])}")
    failure: dict[str, Any] | None = None
    t0 = time.perf_counter()
    done = 0
    for n in range(1, args.cycles + 1):
        try:
            stop_remove(run, start_pod(run, f"churn-{n}")[0])
        except Exception as e:
            failure = {"cycle": n, "error": f"{type(e).__name__}: {e}", "daemon_log": run.inst.log_tail(10)}
            say(f"FAILED churn cycle {n}: {failure['error']}")
            break
        done = n
        if n % args.every == 0 or n == args.cycles:
            readings.append({"cycle": n, **daemon_stats(run.daemon_pid)})
            say(f"churn cycle {n}: {_fmt_stats(readings[-1])}")
    seconds = time.perf_counter() - t0
    first, last = readings[0], readings[-1]
    delta = {k: (last[k] or 0) - (first[k] or 0) for k in ("rss_kib", "fds", "threads")}
    return {
        "cycles_asked": args.cycles,
        "cycles_done": done,
        "failure": failure,
        "seconds": seconds,
        "cycle_ms_mean": seconds * 1e3 / done if done else None,
        "readings": readings,
        "delta": delta,
        "fd_bound": args.fd_bound,
        "thread_bound": args.thread_bound,
        "flat": delta["fds"] <= args.fd_bound and delta["threads"] <= args.thread_bound,
    }


# --- report ---------------------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    scale, churn = doc["scale"], doc["churn"]
    lines = []
    if scale:
        mem = scale["memory"]
        lines += [
            f"scale: {scale['pods_started']} of {scale['pods_asked']} pods started"
            + (
                f" (FAILED at pod {scale['failure']['pod']}: {scale['failure']['error']})"
                if scale["failure"]
                else ""
            )
            + f"; all Running: {scale['all_running']} ({scale['state']})",
            f"  total start time            {scale['start_total_s']:.1f} s",
            f"  per-pod start, first 100    p50 {_ms(scale['start_first_100_p50_ms'])}",
            f"  per-pod start, last 100     p50 {_ms(scale['start_last_100_p50_ms'])}",
            f"  memory added per pod        {mem['per_pod_kib'] / 1024:.2f} MiB "
            f"(pods' processes {mem['pod_processes_pss_kib'] / 1024:.0f} MiB PSS + daemon "
            f"{mem['daemon_pss_delta_kib'] / 1024:+.1f} MiB, over {mem['pods']} pods)",
            "  per pod by process (KiB)    "
            + ", ".join(f"{k} {v:.0f}" for k, v in mem["per_pod_by_process_kib"].items()),
            f"  daemon, idle                {_fmt_stats(scale['daemon_idle'])}",
            f"  {'daemon, ' + str(scale['pods_started']) + ' pods':<28}{_fmt_stats(scale['daemon_with_pods'])}",
            f"  daemon, fleet removed       {_fmt_stats(scale['daemon_after_removal'])}",
            f"  removing the fleet          {scale['remove_total_s']:.1f} s",
        ]
    if churn:
        lines.append(
            f"churn: {churn['cycles_done']} of {churn['cycles_asked']} create/delete cycles in "
            f"{churn['seconds']:.0f} s"
            + (f" (FAILED: {churn['failure']['error']})" if churn["failure"] else "")
        )
        lines.append("  cycle   RSS (MiB)   fds  threads")
        for r in churn["readings"]:
            rss = (r["rss_kib"] or 0) / 1024
            lines.append(f"  {r['cycle']:>5}  {rss:>10.1f}  {r['fds']!s:>4}  {r['threads']!s:>7}")
        d = churn["delta"]
        lines.append(
            f"  delta: RSS {d['rss_kib'] / 1024:+.1f} MiB, fds {d['fds']:+d} (bound {churn['fd_bound']}), "
            f"threads {d['threads']:+d} (bound {churn['thread_bound']}): "
            + ("flat" if churn["flat"] else "NOT FLAT")
        )
    lines.append(f"leftovers after removing everything: {len(doc['leftovers'])}")
    lines += [f"  {text}" for text in doc["leftovers"]]
    lines.append(f"total time: {doc['seconds']:.0f} s")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=1000, help="pods on one daemon (default 1000; 0 skips)")
    parser.add_argument("--cycles", type=int, default=1000, help="churn cycles (default 1000; 0 skips)")
    parser.add_argument("--every", type=int, default=100, help="daemon figures every K churn cycles")
    parser.add_argument("--warmup", type=int, default=3, help="pods started and removed before each phase")
    parser.add_argument("--fd-bound", type=int, default=8, help="allowed growth of the daemon's open fds")
    parser.add_argument("--thread-bound", type=int, default=4, help="allowed growth of the daemon's threads")
    parser.add_argument("--bridge", default=BRIDGE)
    parser.add_argument("--subnet", default=SUBNET, help=f"pod subnet (default {SUBNET})")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/scale.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.report import git_info, machine_info

    args = parse_args(argv)
    if os.geteuid() != 0:
        print("python -m bench.scale must run as root", file=sys.stderr)
        return 2
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {message}", file=sys.stderr, flush=True)

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    nofile = raise_nofile_limit()
    run = IsolatedRun("scale", args.bridge, args.subnet)
    say(f"root {run.root}, bridge {args.bridge}, subnet {args.subnet}, RLIMIT_NOFILE {nofile}")
    scale: dict[str, Any] = {}
    churn: dict[str, Any] = {}
    leftovers: list[str] = []
    try:
        with run:
            if args.pods:
                scale = scale_phase(run, args, say)
            if args.cycles:
                churn = churn_phase(run, args, say)
            run.inst.remove_all_pods()
            leftovers = run.leftovers()
    except KeyboardInterrupt:
        say("interrupted: cleaned up")
        return 130
    if run.sweep_notes:
        say("final sweep: " + "; ".join(run.sweep_notes))
    doc = {
        "benchmark": "scale",
        "started_at": started_at,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rlimit_nofile": list(nofile),
        "machine": machine | {"load_avg_at_end": list(os.getloadavg())},
        "git": git_info(REPO),
        "scale": scale,
        "churn": churn,
        "leftovers": leftovers,
        "sweep": run.sweep_notes,
        "seconds": time.monotonic() - t0,
    }
    path = write_results("scale", doc, args.output)
    print(render(doc))
    print(f"data in {path}")
    failed = bool(scale.get("failure")) or bool(churn.get("failure")) or bool(leftovers)
    failed |= bool(scale) and not scale["all_running"]
    failed |= bool(churn) and not churn["flat"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
