"""One podhost instance for a soak benchmark (bench.crash, bench.scale): started, measured, swept away.

What it owns: a `tests.instance.Instance` (own root, daemon, bridge, subnet), this process's role as child
subreaper (pause and conmon of a killed daemon are re-parented here), and the final sweep, which removes
everything the instance made even when the daemon crashed, leaked or was interrupted: every process
descended from this one (a pause that never got a mark or a cgroup included), then the instance's own
cleanup and scrub (marked processes, mounts, veths, files, bridge, cgroups, root). The sweep only ever
touches what this process started.

What it must never do: hide a leftover. `leftovers()` is measured before anything is swept, through CRI
and in the kernel, and the sweep runs only at the very end.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import signal
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from bench import metrics
from podhost.runtime import procs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (the daemon inherits it); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- daemon figures -------------------------------------------------------------------------------------


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def daemon_stats(pid: int) -> dict[str, int | None]:
    """The daemon's RSS and PSS (KiB), open descriptors and threads, read now."""
    return {
        "rss_kib": metrics.rss_kib(pid),
        "pss_kib": metrics.pss_kib(pid),
        "fds": open_fds(pid),
        "threads": threads(pid),
    }


# --- processes this run started -------------------------------------------------------------------------


def strays(exclude: set[int]) -> list[int]:
    """Live processes descended from this one (pause, conmon, containers, plugins of a killed daemon, as
    this process is their subreaper), `exclude` and its descendants left out. Zombies are not counted."""
    keep = set(exclude)
    for pid in exclude:
        keep |= metrics.descendants(pid)
    return sorted(p for p in metrics.descendants(os.getpid()) - keep if procs.state(p) not in ("", "Z", "X"))


def describe(pids: list[int]) -> str:
    return ", ".join(f"{p} {metrics.comm(p) or '?'}" for p in pids)


def reap_zombies(exclude: set[int]) -> int:
    """Reap zombie children of this process that are not in `exclude` (orphaned plugins and runc calls of
    a killed daemon: nobody else will); how many. Call it only when no other subprocess of this process is
    running, so no Popen loses its status."""
    from podhost.runtime import procs

    reaped = 0
    for pid in procs.children():
        if pid in exclude or procs.state(pid) != "Z":
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
            reaped += 1
    return reaped


def _kill(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- the run --------------------------------------------------------------------------------------------


class IsolatedRun:
    """`with IsolatedRun("crash", "ph3c0", "10.231.3.0/25", env) as run:` — a started daemon whose
    environment holds `env`; everything swept on exit (also on Ctrl-C, SIGTERM and SIGHUP)."""

    def __init__(self, name: str, bridge: str, subnet: str, env: dict[str, str] | None = None) -> None:
        self.root = Path(f"/tmp/ph3-{name}-{secrets.token_hex(4)}")
        self.bridge, self.subnet = bridge, subnet
        self.env = env or {}
        self.sweep_notes: list[str] = []

    def __enter__(self) -> IsolatedRun:
        from tests.instance import Instance, OrphanReaper

        # Ctrl-C, SIGTERM and SIGHUP all end the run through the sweep (SIGINT too when started in the
        # background by a shell, which would have it ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
        raise_nofile_limit()
        self.reaper = OrphanReaper()
        try:
            self.inst = Instance(self.root, self.bridge, self.subnet)
            os.environ.update({k: v.format(root=self.root) for k, v in self.env.items()})
            self.inst.start()
        except BaseException:
            self._sweep()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sweep()

    @property
    def daemon_pid(self) -> int:
        assert self.inst.daemon is not None
        return self.inst.daemon.pid

    def daemon_alive(self) -> bool:
        return self.inst.daemon is not None and self.inst.daemon.poll() is None

    def kill_daemon(self) -> None:
        """SIGKILL the daemon (a crash) and wait for it."""
        self.inst.kill()

    def leftovers(self) -> list[str]:
        """What the instance still holds while it lists nothing: tests.leaks' kernel, disk and process
        checks, and live processes this run started that are not the daemon (a pause or conmon that
        neither joined a pod cgroup nor carries the instance's mark is found only this way)."""
        from tests.leaks import find_leaks

        inst = self.inst
        found = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
        daemon = {self.daemon_pid} if self.daemon_alive() else set()
        if left := strays(daemon):
            found.append(f"processes started by this run, not the daemon: {describe(left[:12])}")
        return found

    def _sweep(self) -> None:
        """Remove everything: pods through CRI (if the daemon answers), the daemon, then whatever is left."""
        inst = getattr(self, "inst", None)
        try:
            if inst is not None:
                if self.daemon_alive():
                    try:
                        inst.remove_all_pods()
                    except Exception as e:  # the sweep goes on: the kernel-level steps below remove it all
                        self.sweep_notes.append(f"remove all pods: {e}")
                inst.stop()
            self._kill_strays()
            if inst is not None:
                inst.cleanup()  # also scrubs what the daemon left: marked processes, mounts, veths, files
        finally:
            if hasattr(self, "reaper"):
                self.reaper.close()

    def _kill_strays(self) -> None:
        exclude: set[int] = set()
        for _ in range(5):
            left = strays(exclude)
            if not left:
                break
            self.sweep_notes.append(f"killed {describe(left[:12])}")
            for pid in left:
                _kill(pid)
            time.sleep(0.1)
            reap_zombies(exclude)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and reap_zombies(set()):
            time.sleep(0.05)


def write_results(name: str, doc: dict[str, Any], path: Path | None = None) -> Path:
    """Write `doc` to `path`, by default bench/results/<name>.json; the path written."""
    from bench.report import write_json

    path = path or RESULTS / f"{name}.json"
    write_json(doc, path)
    return path
