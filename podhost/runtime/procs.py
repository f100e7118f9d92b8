"""Processes the runtime adopts (pause, conmon): identity, exit events and reaping.

Theory of operation. pause and conmon detach from the daemon (they must outlive it), so they are orphans;
the daemon makes itself a child subreaper so they are re-parented to it rather than to PID 1, which on
some machines never reaps. Each adopted process gets a pidfd in one epoll set, served by one thread: when
a pidfd becomes readable the process has exited, the thread reaps it with waitid(P_PIDFD) when it is our
child (so we learn the signal or exit code), and calls the watcher's callback. No timer, no polling.

A stored PID is trusted only together with its start time (field 22 of /proc/<pid>/stat), because PIDs
are reused.

Marks. Every process podhost starts (the pause launcher and pause, conmon and the OCI runtime it runs)
carries `PODHOST_OWNER=<instance>/<owner id>` in its environment, where the owner is the sandbox or
container it was started for. A process's environment stays readable in /proc/<pid>/environ for its whole
life, so even one whose PID never reached a record (the daemon was killed between fork and write) can be
found and killed: `marked()` lists an instance's processes by owner, `kill_marked()` ends them.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, or 0 if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def started_ns(ticks: int) -> int:
    """A start time in clock ticks since boot (as `start_time` gives it) as ns since the epoch."""
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def state(pid: int) -> str:
    """The one-letter state (R, S, Z, ...) or "" when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def alive(pid: int, started: int) -> bool:
    """True while the process `pid` that started at `started` runs (zombies count as gone)."""
    return pid > 0 and start_time(pid) == started and state(pid) not in ("", "Z", "X")


MARK_ENV = "PODHOST_OWNER"


@dataclass(frozen=True)
class Proc:
    """A process as a record holds it: the PID and the start time that makes the PID unambiguous."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, start_time(pid))

    def alive(self) -> bool:
        return alive(self.pid, self.start_time)


def mark_env(instance: str, owner: str) -> dict[str, str]:
    """The environment entry that marks a process started for `owner` by podhost instance `instance`."""
    return {MARK_ENV: f"{instance}/{owner}"}


def _mark_of(pid: int) -> str:
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return ""
    key = MARK_ENV.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(key):
            return entry[len(key) :].decode(errors="replace")
    return ""


def marked(instance: str) -> dict[str, list[Proc]]:
    """The live processes marked for `instance`, by owner id. Zombies are left out (nothing to kill)."""
    prefix = instance + "/"
    found: dict[str, list[Proc]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        mark = _mark_of(pid)
        if not mark.startswith(prefix):
            continue
        proc = Proc.of(pid)
        if proc.start_time and state(pid) not in ("", "Z", "X"):
            found.setdefault(mark[len(prefix) :], []).append(proc)
    return found


def kill(proc: Proc, sig: int = signal.SIGKILL) -> None:
    """Signal `proc` if it is still the process recorded (never a reused PID)."""
    if proc.pid <= 0:
        return
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return
    try:
        if start_time(proc.pid) == proc.start_time:
            signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def kill_marked(instance: str, owner: str | None = None) -> list[Proc]:
    """SIGKILL every process marked for `instance` (and `owner`, when given); the processes signalled."""
    killed = []
    for mark_owner, found in marked(instance).items():
        if owner is None or mark_owner == owner:
            for proc in found:
                kill(proc)
                killed.append(proc)
    return killed


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("could not become a child subreaper: errno %d", ctypes.get_errno())


@dataclass
class ExitStatus:
    """How an adopted process ended; `known` is False when it was not our child (we could not reap it)."""

    pid: int
    known: bool = False
    exit_code: int = 0
    signal: int = 0

    def describe(self, what: str) -> str:
        if not self.known:
            return f"{what} (pid {self.pid}) exited"
        if self.signal:
            return (
                f"{what} (pid {self.pid}) killed by signal {self.signal} ({signal.Signals(self.signal).name})"
            )
        return f"{what} (pid {self.pid}) exited with code {self.exit_code}"


ExitCallback = Callable[[ExitStatus], None]


class ProcessWatcher:
    """One thread and one epoll set for every adopted process's pidfd."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._watches: dict[int, tuple[int, ExitCallback]] = {}  # pidfd -> (pid, callback)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="process-watcher", daemon=True)
        self._thread.start()

    def watch(self, pid: int, started: int, callback: ExitCallback) -> bool:
        """Call `callback` once when `pid` exits. False (and no call) if it is already gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        if start_time(pid) != started:  # the PID was reused: not our process
            os.close(pidfd)
            return False
        with self._lock:
            self._watches[pidfd] = (pid, callback)
        self._epoll.register(pidfd, select.EPOLLIN)
        return True

    def close(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        with self._lock:
            for pidfd in self._watches:
                os.close(pidfd)
            self._watches.clear()

    def _run(self) -> None:
        while not self._stopping:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == self._wake_r:
                    continue
                with self._lock:
                    entry = self._watches.pop(fd, None)
                if entry is None:
                    continue
                self._epoll.unregister(fd)
                pid, callback = entry
                status = _reap(fd, pid)
                os.close(fd)
                try:
                    callback(status)
                except Exception:
                    log.exception("exit callback for pid %d failed", pid)


def _reap(pidfd: int, pid: int) -> ExitStatus:
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        return ExitStatus(pid)  # not our child: its parent (or init) reaps it
    if result is None:
        return ExitStatus(pid)
    if result.si_code == os.CLD_EXITED:
        return ExitStatus(pid, True, exit_code=result.si_status)
    return ExitStatus(pid, True, signal=result.si_status)


ADOPTED_NAMES = (b"pause", b"conmon")


def children() -> list[int]:
    """PIDs of this process's children (all threads'), from /proc/self/task/*/children."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return pids


def reap_zombie_children(names: tuple[bytes, ...] = ADOPTED_NAMES) -> list[int]:
    """Reap zombie children named `names` (adopted pause/conmon whose exit nobody is waiting for).

    Only those names, so subprocess's own children keep their exit statuses for their Popen objects.
    """
    reaped = []
    for pid in children():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")]
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z" and comm in names:
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped
