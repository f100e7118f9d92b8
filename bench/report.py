"""The benchmark's output: one table with both runtimes and their ratio, and the same data as JSON.

What it owns: which figures are reported and how each is derived from the raw results (`ROWS`), the text
table, the JSON document (`bench/results/latest.json`: rows, raw samples, parameters, machine, git commit,
timestamps) and the facts about the machine and checkout that go into it.

What it must never do: measure, or judge a figure. Rendering is pure; only `machine_info`, `git_info`
and `write_json` touch the system.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.metrics import percentile

SCHEMA = 1
RUNTIMES = ("podhost", "containerd")
#: What a row shows when a runtime has no figure for it.
NOT_BUILT = "n/a (pod manager not built yet)"
NOT_READY_AGAIN = "n/a (the pod manager did not make the pod Ready again within 10 s)"
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    podhost: float | None
    containerd: float | None
    ratio: float | None  # podhost / containerd, when both are figures and containerd's is not 0
    note: str = ""  # why a figure is missing


Extract = Callable[[dict[str, Any]], float | None]


def _dig(result: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def _pct_ms(phase: str, series: str, p: float) -> Extract:
    """The p-th percentile of result[phase][series] (or of result[phase] when series is ""), in ms."""

    def get(result: dict[str, Any]) -> float | None:
        values = _dig(result, phase, series) if series else _dig(result, phase)
        return percentile(values, p) * 1e3 if values else None

    return get


def _scaled(*path: str, factor: float = 1.0) -> Extract:
    def get(result: dict[str, Any]) -> float | None:
        value = _dig(result, *path)
        return None if value is None else float(value) * factor

    return get


KIB_TO_MIB = 1 / 1024


def _density_start_ms(first: bool) -> Extract:
    """p50 start of the density phase's first (or last) 100 pods, in ms."""

    def get(result: dict[str, Any]) -> float | None:
        values = _dig(result, "density", "start_s")
        if not values:
            return None
        return percentile(values[:100] if first else values[-100:], 50) * 1e3

    return get


def _density_teardown_ms(result: dict[str, Any]) -> float | None:
    """The density phase's teardown, per pod: all of them, one at a time, over the count."""
    values = _dig(result, "density", "teardown_s")
    return sum(values) / len(values) * 1e3 if values else None


def _less_crictl_calls(result: dict[str, Any]) -> float | None:
    """The crictl pod start's p50 less three `crictl version` p50s: what is left of the three verbs once
    the process every crictl call costs (the same for any runtime) is taken out, in ms."""
    starts, calls = _dig(result, "crictl_pod_start_s"), _dig(result, "crictl_version_s")
    if not starts or not calls:
        return None
    return (percentile(starts, 50) - 3 * percentile(calls, 50)) * 1e3


#: (key, label, unit, how to get it from one runtime's results). {pods} and {idle} are filled in.
ROWS: list[tuple[str, str, str, Extract]] = [
    ("sandbox_start_p50", "sandbox start (RunPodSandbox) p50", "ms", _pct_ms("sandbox", "start_s", 50)),
    ("sandbox_start_p99", "sandbox start (RunPodSandbox) p99", "ms", _pct_ms("sandbox", "start_s", 99)),
    ("pod_start_p50", "sandbox + container start p50", "ms", _pct_ms("pod", "start_s", 50)),
    ("pod_start_p99", "sandbox + container start p99", "ms", _pct_ms("pod", "start_s", 99)),
    (
        "crictl_pod_start_p50",
        "sandbox + container start through crictl (runp, create, start) p50",
        "ms",
        _pct_ms("crictl_pod_start_s", "", 50),
    ),
    (
        "crictl_call_p50",
        "  one crictl process alone (crictl version) p50",
        "ms",
        _pct_ms("crictl_version_s", "", 50),
    ),
    (
        "crictl_pod_start_less_calls",
        "  through crictl less three such processes",
        "ms",
        _less_crictl_calls,
    ),
    ("stop_remove_p50", "stop + remove p50", "ms", _pct_ms("pod", "stop_remove_s", 50)),
    ("stop_p50", "  stop (StopPodSandbox) p50", "ms", _pct_ms("pod", "stop_s", 50)),
    ("remove_p50", "  remove (RemovePodSandbox) p50", "ms", _pct_ms("pod", "remove_s", 50)),
    (
        "memory_per_pod",
        "memory added per pod (PSS, {pods} pods)",
        "MiB",
        _scaled("memory", "per_pod_kib", factor=KIB_TO_MIB),
    ),
    ("daemon_rss_idle", "daemon RSS, idle", "MiB", _scaled("daemon_rss_idle_kib", factor=KIB_TO_MIB)),
    (
        "daemon_rss_fleet",
        "daemon RSS, {pods} pods",
        "MiB",
        _scaled("daemon_rss_fleet_kib", factor=KIB_TO_MIB),
    ),
    ("fleet_sequential", "start {pods} pods, one at a time", "s", _scaled("fleet_sequential_s")),
    ("fleet_parallel", "start {pods} pods, {in_flight} in flight", "s", _scaled("fleet_parallel_s")),
    ("idle_cpu_daemon", "daemon CPU, {pods} pods idle {idle} s", "%", _scaled("idle_cpu", "daemon_pct")),
    (
        "idle_cpu_with_helpers",
        "daemon + shims/conmons CPU, idle",
        "%",
        _scaled("idle_cpu", "daemon_and_helpers_pct"),
    ),
    ("idle_wakeups", "daemon wake-ups, idle", "/s", _scaled("idle_cpu", "daemon_wakeups_per_s")),
    (
        "cli_list_pods_p50",
        "client command listing pods (podhost cri pods | crictl pods) p50",
        "ms",
        _pct_ms("cli_list_pods_s", "", 50),
    ),
    (
        "cold_pull_p50",
        "cold pull, 5 gzip layers (15 MB; bench.pull) p50",
        "ms",
        _pct_ms("cold_pull_s", "", 50),
    ),
    (
        "density_first_100",
        "{density} pods one after another: start p50, pods 1-100",
        "ms",
        _density_start_ms(True),
    ),
    ("density_last_100", "  start p50, the last 100 pods", "ms", _density_start_ms(False)),
    (
        "density_memory_per_pod",
        "  memory added per pod (PSS + daemon growth)",
        "MiB",
        _scaled("density", "memory", "per_pod_with_daemon_kib", factor=KIB_TO_MIB),
    ),
    ("density_daemon_rss", "  daemon RSS", "MiB", _scaled("density", "daemon_rss_kib", factor=KIB_TO_MIB)),
    ("density_idle_cpu", "  daemon CPU, idle {idle} s", "%", _scaled("density", "idle_cpu", "daemon_pct")),
    ("density_teardown", "  teardown of all, one at a time, per pod", "ms", _density_teardown_ms),
    (
        "pause_kill_to_notready",
        "pause kill -> sandbox NotReady (runtime) p50",
        "ms",
        _pct_ms("pause_kill_to_notready_s", "", 50),
    ),
    (
        "pause_kill_to_ready",
        "pause kill -> pod Ready again (pod manager) p50",
        "ms",
        _pct_ms("pause_kill_to_ready_s", "", 50),
    ),
]


def ratio(podhost: float | None, containerd: float | None) -> float | None:
    if podhost is None or containerd is None or containerd == 0:
        return None
    return podhost / containerd


def build_rows(results: dict[str, dict[str, Any]], params: dict[str, Any]) -> list[Row]:
    """One row per figure, both runtimes side by side; a runtime that did not run shows None."""
    fill = {
        "pods": params.get("pods", "?"),
        "density": f"{params.get('density', 0):,}",
        "in_flight": params.get("in_flight", "?"),
        "idle": f"{params.get('idle_seconds', 0):.0f}",
    }
    rows = []
    for key, label, unit, get in ROWS:
        if key.startswith("density_") and not params.get("density"):
            continue  # --density 0: the phase did not run
        ph = get(results["podhost"]) if "podhost" in results else None
        cd = get(results["containerd"]) if "containerd" in results else None
        note = ""
        if key == "pause_kill_to_ready" and ph is None and "podhost" in results:
            failed = results["podhost"].get("pause_kill_not_ready_again", 0)
            note = NOT_READY_AGAIN if failed else NOT_BUILT
        if key == "density_first_100":
            note = density_note(results)
        rows.append(Row(key, label.format(**fill), unit, ph, cd, ratio(ph, cd), note))
    return rows


def density_note(results: dict[str, dict[str, Any]]) -> str:
    """Which runtime could not start every pod of the density phase, and why (its rows cover those)."""
    stops = [
        f"{name} failed at pod {d['failed_at']} ({d.get('error', '')[:120]})"
        for name, result in results.items()
        if isinstance(d := result.get("density"), dict) and "failed_at" in d
    ]
    return "; ".join(stops)


def _fmt(value: float | None, missing: str = NOT_APPLICABLE) -> str:
    if value is None:
        return missing
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: list[Row]) -> str:
    """A plain-text table: metric (unit) | podhost | containerd | podhost/containerd; a figure that is
    missing for a stated reason is marked * and the reason follows the table."""
    header = ("metric", "podhost", "containerd", "podhost/containerd")
    body = [
        (
            f"{r.label} ({r.unit})",
            _fmt(r.podhost, NOT_APPLICABLE + "*" if r.note else NOT_APPLICABLE),
            _fmt(r.containerd),
            "" if r.ratio is None else f"{r.ratio:.2f}x",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    notes = [f"* {r.label}: {r.note}" for r in rows if r.note]
    return "\n".join([line(header), rule, *(line(b) for b in body), *notes])


def document(
    *,
    mode: str,
    params: dict[str, Any],
    results: dict[str, dict[str, Any]],
    leaks: dict[str, list[str]],
    started_at: str,
    finished_at: str,
    machine: dict[str, Any],
    git: dict[str, Any],
) -> dict[str, Any]:
    """The JSON written to bench/results/: the table's rows plus everything they were computed from."""
    return {
        "schema": SCHEMA,
        "mode": mode,
        "started_at": started_at,
        "finished_at": finished_at,
        "params": params,
        "machine": machine,
        "git": git,
        "rows": [asdict(r) for r in build_rows(results, params)],
        "results": results,
        "leaks": leaks,
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


# --- facts about the machine and the checkout -----------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _mem_total_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def machine_info() -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "mem_total_mib": _mem_total_mib(),
        "load_avg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "containerd": _first_line(["containerd", "--version"]),
        "runc": _first_line(["runc", "--version"]),
        "conmon": _first_line(["conmon", "--version"]),
    }


def git_info(repo: Path) -> dict[str, Any]:
    """The commit measured. A run from an exported tree (`git archive HEAD | tar -x`, so that edits in
    progress in the checkout cannot change the code under test) has no .git: BENCH_GIT_COMMIT names it."""
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return {"commit": os.environ.get("BENCH_GIT_COMMIT", ""), "dirty": False, "exported": True}
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout
    return {"commit": done.stdout.strip(), "dirty": bool(status.strip())}
