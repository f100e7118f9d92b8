"""Measurements the benchmarks take from the kernel: latency statistics, memory (PSS, RSS) and CPU time.

What it owns: pure arithmetic over samples (`percentile`, `summarize`), parsers of /proc files
(`parse_smaps_rollup`, `parse_stat_cpu`, `parse_status_rss`) and thin readers around them that take a PID.
Shared by every benchmark module (bench.harness, bench.sandbox), so each figure is computed one way.

What it must never do: start, signal or wait for processes, or assert anything about the figures. A PID that
is gone when it is read counts as nothing (None or 0, documented per function): processes come and go while
we measure, and a benchmark must not crash on that race.

Units: memory in KiB (as /proc reports it), CPU time in seconds, durations in seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- statistics (pure) ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean, min, max and n of a sample (an empty sample gives {"n": 0})."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


# --- /proc parsers (pure) -------------------------------------------------------------------------------


def parse_smaps_rollup(text: str) -> int:
    """PSS in KiB from /proc/<pid>/smaps_rollup ("Pss:  1234 kB")."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError("no Pss line in smaps_rollup")


def parse_status_rss(text: str) -> int:
    """VmRSS in KiB from /proc/<pid>/status (0 for a kernel thread or zombie, which have none)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _stat_fields(text: str) -> list[str]:
    """Fields of /proc/<pid>/stat after comm (field 3 onwards); comm may hold spaces and parentheses."""
    return text[text.rindex(")") + 2 :].split()


def parse_stat_cpu(text: str) -> float:
    """utime + stime (fields 14 and 15) of /proc/<pid>/stat, in seconds."""
    fields = _stat_fields(text)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parse_stat_ppid(text: str) -> int:
    return int(_stat_fields(text)[1])


def parse_stat_comm(text: str) -> str:
    return text[text.index("(") + 1 : text.rindex(")")]


def processes_added(before: Iterable[int], after: Iterable[int]) -> set[int]:
    """PIDs present after and not before: what one step started (and left running)."""
    return set(after) - set(before)


def sum_known(pids: Iterable[int], read: Callable[[int], int | None]) -> tuple[int, int]:
    """(sum of `read(pid)` over the PIDs it could read, how many it could read)."""
    total = counted = 0
    for pid in pids:
        value = read(pid)
        if value is not None:
            total += value
            counted += 1
    return total, counted


# --- readers (one PID, race-tolerant) -------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:  # ESRCH on a process that exited between open and read
        return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size of `pid` in KiB (shared pages divided among their sharers); None when gone."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if not text:
        return None
    try:
        return parse_smaps_rollup(text)
    except ValueError:  # a zombie has an empty rollup
        return None


def rss_kib(pid: int) -> int | None:
    """Resident set size of `pid` in KiB; None when gone."""
    text = _read(f"/proc/{pid}/status")
    return None if text is None else parse_status_rss(text)


def daemon_rss(pid: int) -> int | None:
    """A runtime daemon's own RSS in KiB (the figure `ps` and `top` show for it); None when gone."""
    return rss_kib(pid)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` (all its threads), in seconds; None when gone."""
    text = _read(f"/proc/{pid}/stat")
    return None if text is None else parse_stat_cpu(text)


def parse_status_switches(text: str) -> int:
    """voluntary + nonvoluntary context switches from /proc/<pid>/task/<tid>/status."""
    total = 0
    for line in text.splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            total += int(line.split()[1])
    return total


def context_switches(pid: int) -> int | None:
    """Context switches of every thread of `pid` so far (how often it woke up); None when gone.
    Threads that already exited are not counted, so compare two readings of a steady process only."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tasks:
        text = _read(f"/proc/{pid}/task/{tid}/status")
        if text is not None:
            total += parse_status_switches(text)
    return total


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two readings of the same PIDs, counting only PIDs read both times."""
    return sum(after[p] - before[p] for p in before.keys() & after.keys())


def cpu_readings(pids: Iterable[int]) -> dict[int, float]:
    """{pid: utime + stime} for the PIDs still alive."""
    readings = {}
    for pid in pids:
        value = cpu_seconds(pid)
        if value is not None:
            readings[pid] = value
    return readings


def comm(pid: int) -> str:
    text = _read(f"/proc/{pid}/stat")
    return "" if text is None else parse_stat_comm(text)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def all_pids() -> set[int]:
    return {int(n) for n in os.listdir("/proc") if n.isdigit()}


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (children of all its threads, recursively), `pid` excluded."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            text = _read(f"/proc/{parent}/task/{task}/children") or ""
            for child in (int(c) for c in text.split()):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its live descendants (utime + stime), in seconds; 0 for a gone PID."""
    return cpu_total({pid} | descendants(pid))


def cpu_total(pids: Iterable[int]) -> float:
    """utime + stime summed over the PIDs still alive."""
    return sum(c for c in (cpu_seconds(p) for p in pids) if c is not None)


def cgroup_pids(path: str) -> set[int]:
    """Every PID in the cgroup `path` or below it, in any mounted v1 hierarchy or the unified one."""
    pids: set[int] = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / path.lstrip("/")
        if not base.is_dir():
            continue
        for procs in base.rglob("cgroup.procs"):
            text = _read(str(procs))
            if text:
                pids.update(int(x) for x in text.split())
    return pids


def pss_total_kib(pids: Iterable[int]) -> tuple[int, int]:
    """(PSS summed over `pids` in KiB, how many of them were still there to be read)."""
    return sum_known(pids, pss_kib)
