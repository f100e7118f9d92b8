"""Processes the runtime adopts (pause, conmon): identity, exit events and reaping.

Theory of operation. pause and conmon detach from the daemon (they must outlive it), so they are orphans;
the daemon makes itself a child subreaper so they are re-parented to it rather than to PID 1, which on
some machines never reaps. Each adopted process gets a pidfd in a watcher's epoll set, served by the
watcher's one thread: when a pidfd becomes readable the process has exited, the thread reaps it with
waitid(P_PIDFD) when it is our child (so we learn the signal or exit code), and calls the watcher's
callback. A watcher serves other descriptors too (`watch_readable`: the container exit dir's inotify, see
container.exits). No timer, no polling.

A stored PID is trusted only together with its start time (field 22 of /proc/<pid>/stat), because PIDs
are reused.

Marks. Every process podhost starts (the pause launcher and pause, conmon and the OCI runtime it runs)
carries `PODHOST_OWNER=<instance>/<owner id>` in its environment, where the owner is the sandbox or
container it was started for. A process's environment stays readable in /proc/<pid>/environ for its whole
life, so even one whose PID never reached a record (the daemon was killed between fork and write) can be
found and killed: `marked()` lists an instance's processes by owner, `kill_marked()` ends them. A short-lived
call made on an owner's behalf (a CNI plugin for a sandbox, an OCI runtime command for a container) carries
a second entry, `PODHOST_CALL=<token>`, so that its failure kills what that call started and not the
owner's other processes (the pod's pause, the container's conmon, a plugin running beside it).

Killing, one mechanism for every caller. `kill_tree(roots)` stops each process (SIGSTOP) before it reads
its children, so the tree it collects is all there will ever be, then SIGKILLs every one and waits on
pidfds until they are gone (`await_gone`). `kill_owner(instance, owner)` repeats that, with every process
marked for the owner as roots, until a round finds nothing: a process that was re-parented away from its
tree before the freeze (its parent died) is found by its mark. `kill_session(popen, ...)` ends a call
started in a session of its own: its tree, its process group, then what carries its call mark.
Waits use poll() on pidfds, never select(): the daemon holds thousands of descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from podhost import linux

log = logging.getLogger(__name__)


def _stat(pid: int) -> list[bytes]:
    """/proc/<pid>/stat from field 3 (state) on, so field N is at index N - 3; [] when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return []
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, or 0 if it does not exist."""
    fields = _stat(pid)
    return int(fields[19]) if fields else 0


def started_ns(ticks: int) -> int:
    """A start time in clock ticks since boot (as `start_time` gives it) as ns since the epoch."""
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot * 1_000_000_000 + ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def comm(pid: int) -> str:
    """The process's command name (/proc/<pid>/comm, at most 15 bytes), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode(errors="replace")
    except OSError:
        return ""


def state(pid: int) -> str:
    """The one-letter state (R, S, Z, ...) or "" when the process is gone."""
    fields = _stat(pid)
    return fields[0].decode() if fields else ""


def _nspids(pid: int) -> list[bytes]:
    """`pid`'s PID in each PID namespace it is seen in, outermost first (its status's NSpid line); []
    when unreadable."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            return next((ln for ln in f if ln.startswith(b"NSpid:")), b"").split()[1:]
    except OSError:
        return []


def pid_namespace_init(pid: int) -> bool:
    """Whether `pid` is PID 1 of a PID namespace below ours (its `NSpid` ends in 1): killing it makes the
    kernel kill every process in that namespace."""
    ids = _nspids(pid)
    return len(ids) > 1 and ids[-1] == b"1"


def alive(pid: int, started: int) -> bool:
    """True while the process `pid` that started at `started` runs (zombies count as gone)."""
    return pid > 0 and start_time(pid) == started and state(pid) not in ("", "Z", "X")


MARK_ENV = "PODHOST_OWNER"
CALL_ENV = "PODHOST_CALL"


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


def mark_env(instance: str, owner: str, call: str = "") -> dict[str, str]:
    """The environment entries that mark a process started for `owner` by podhost instance `instance`
    (and, given `call`, by that one call on the owner's behalf)."""
    return {MARK_ENV: f"{instance}/{owner}", **({CALL_ENV: call} if call else {})}


def _marks_of(pid: int) -> tuple[str, str]:
    """(PODHOST_OWNER, PODHOST_CALL) of `pid`; "" for what it does not carry (or when it is gone)."""
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return "", ""
    mark_key, call_key = MARK_ENV.encode() + b"=", CALL_ENV.encode() + b"="
    mark = call = b""
    for entry in data.split(b"\0"):
        if entry.startswith(mark_key):
            mark = entry[len(mark_key) :]
        elif entry.startswith(call_key):
            call = entry[len(call_key) :]
    return mark.decode(errors="replace"), call.decode(errors="replace")


#: A process caught inside execve shows an empty environment for an instant: unread processes are read
#: again once, after this long, so one that was just forked (a plugin's child) is not missed.
_EXEC_SETTLE_S = 0.005


def marked(instance: str, call: str = "") -> dict[str, list[Proc]]:
    """The live processes marked for `instance` (and `call`, when given), by owner id. Zombies are left
    out (nothing to kill)."""
    prefix = instance + "/"
    found: dict[str, list[Proc]] = {}
    unread: list[int] = []

    def consider(pid: int, mark: str, mark_call: str) -> None:
        if not mark.startswith(prefix) or (call and mark_call != call):
            return
        proc = Proc.of(pid)
        if proc.start_time and state(pid) not in ("", "Z", "X"):
            found.setdefault(mark[len(prefix) :], []).append(proc)

    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        mark, mark_call = _marks_of(pid)
        if not mark and pid != 2 and _parent(pid) not in (0, 2):  # kernel threads have no environment
            unread.append(pid)
        consider(pid, mark, mark_call)
    if unread:
        time.sleep(_EXEC_SETTLE_S)
        for pid in unread:
            consider(pid, *_marks_of(pid))
    return found


@contextlib.contextmanager
def _pidfd_of(proc: Proc) -> Iterator[int | None]:
    """A pidfd of `proc` while its PID still names it (a zombie included), else None: what makes a
    signal or a wait safe against PID reuse."""
    if proc.pid <= 0:
        yield None
        return
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        yield None
        return
    try:
        yield pidfd if start_time(proc.pid) == proc.start_time else None
    finally:
        os.close(pidfd)


def kill(proc: Proc, sig: int = signal.SIGKILL) -> None:
    """Signal `proc` if it is still the process recorded (never a reused PID)."""
    with _pidfd_of(proc) as pidfd, contextlib.suppress(OSError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)


def reap(proc: Proc) -> None:
    """Reap `proc` if it is a zombie child of ours: a container whose conmon died is re-parented to the
    daemon (a child subreaper) and would otherwise stay a zombie. Never waits, never reaps another PID."""
    with _pidfd_of(proc) as pidfd, contextlib.suppress(ChildProcessError):  # not ours: its parent reaps it
        if pidfd is not None and state(proc.pid) == "Z":
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


def kill_marked(instance: str, owner: str | None = None) -> list[Proc]:
    """SIGKILL every process marked for `instance` (and `owner`, when given); the processes signalled."""
    killed = []
    for mark_owner, found in marked(instance).items():
        if owner is None or mark_owner == owner:
            for proc in found:
                kill(proc)
                killed.append(proc)
    return killed


#: Rounds of "freeze, kill, wait" in `kill_owner`: a process forking while it is killed, or re-parented
#: away from its tree before the freeze, leaves one that the next round finds by its mark. Each round
#: waits (on pidfds) at most KILL_WAIT_S for its kills to land.
KILL_ROUNDS = 10
KILL_WAIT_S = 2.0
#: How long `kill_tree` waits for one process to stop (a process in uninterruptible sleep stops when it
#: leaves it; after that its children are read anyway, and a later round catches what it forks).
STOP_WAIT_S = 0.05
_GONE_STATES = ("", "Z", "X")


def children(pid: int = 0) -> list[int]:
    """PIDs of the children of `pid` (of this process when 0), all its threads', from
    /proc/<pid>/task/*/children; [] when it is gone."""
    found: list[int] = []
    base = f"/proc/{pid or 'self'}/task"
    try:
        tasks = os.listdir(base)
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"{base}/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def group_members(pgid: int) -> list[Proc]:
    """The live processes in process group `pgid` (field 5 of /proc/<pid>/stat)."""
    found = []
    for entry in os.scandir("/proc"):
        fields = _stat(int(entry.name)) if entry.name.isdigit() else []
        if fields and int(fields[2]) == pgid and fields[0].decode() not in _GONE_STATES:
            found.append(Proc(int(entry.name), int(fields[19])))
    return found


def await_gone(found: Iterable[Proc], timeout: float) -> list[Proc]:
    """Wait until every process in `found` has exited (zombies count as gone), at most `timeout` seconds;
    those still alive then. Waits on pidfds with poll(), so any number of descriptors works; a process
    whose pidfd cannot be opened (e.g. EMFILE) is watched through /proc every 10 ms instead."""
    poller = select.poll()
    pidfds: dict[int, Proc] = {}
    polled: list[Proc] = []
    try:
        for proc in found:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except ProcessLookupError:
                continue
            except OSError:
                polled.append(proc)
                continue
            if not proc.alive():  # exited, or the PID is someone else's now
                os.close(pidfd)
                continue
            pidfds[pidfd] = proc
            poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while pidfds or polled:
            polled = [proc for proc in polled if proc.alive()]
            left = deadline - time.monotonic()
            if left <= 0 or not (pidfds or polled):
                break
            wait_ms = min(left, 0.01) * 1000 if polled else left * 1000
            for fd, _ in poller.poll(wait_ms):
                poller.unregister(fd)
                os.close(fd)
                del pidfds[fd]
        return [*pidfds.values(), *polled]
    finally:
        for fd in pidfds:
            os.close(fd)


def _stop(proc: Proc) -> None:
    """SIGSTOP `proc` and wait briefly until it is stopped, so the children read next are all it has."""
    kill(proc, signal.SIGSTOP)
    deadline = time.monotonic() + STOP_WAIT_S
    while state(proc.pid) not in ("", "T", "t", "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.001)


def _frozen_tree(roots: Iterable[Proc]) -> list[Proc]:
    """The live processes among `roots` and all their descendants, each stopped before its children are
    read. Never this process (a caller passing it by mistake must not freeze the daemon)."""
    seen: dict[int, Proc] = {}
    queue = list(roots)
    while queue:
        proc = queue.pop()
        if proc.pid in seen or proc.pid == os.getpid() or not proc.alive():
            continue
        _stop(proc)
        seen[proc.pid] = proc
        queue += [Proc.of(child) for child in children(proc.pid)]
    return list(seen.values())


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def kill_tree(roots: Iterable[Proc], timeout: float = KILL_WAIT_S) -> list[Proc]:
    """Freeze `roots` and all their descendants (SIGSTOP, top down, so none forks between being looked at
    and being killed), SIGKILL every one and wait until they are gone (at most `timeout`); the processes
    signalled. A root that is not alive, or whose PID now names another process, is skipped.

    Those that were re-parented to this process while they died (their parent in the tree died first)
    are orphans, never a Popen's: they are reaped here. Our own children are left to their waiters."""
    found = _frozen_tree(roots)
    ours = {proc.pid for proc in found if _parent(proc.pid) == os.getpid()}
    for proc in found:
        kill(proc)
    if left := await_gone(found, timeout):
        log.warning("still alive %.1fs after SIGKILL: %s", timeout, left)
    for proc in found:
        if proc.pid not in ours:
            reap(proc)
    return found


def kill_owner(
    instance: str,
    owner: str,
    extra_roots: Iterable[Proc] = (),
    *,
    call: str = "",
    rounds: int = KILL_ROUNDS,
    timeout: float = KILL_WAIT_S,
) -> list[Proc]:
    """SIGKILL, with all their descendants (`kill_tree`), `extra_roots` and every process marked for
    (`instance`, `owner`) (and `call`, when given), and wait until they are gone; again until a round
    finds nothing left, at most `rounds` times. The processes signalled. With an empty `instance` only
    `extra_roots` and their trees are killed (there is no mark to look for)."""
    killed: list[Proc] = []
    roots = list(extra_roots)
    for _ in range(rounds):
        if instance:
            roots += marked(instance, call).get(owner, [])
        found = kill_tree(roots, timeout)
        if not found:
            return killed
        killed += found
        roots = []
    left = [proc for proc in killed if proc.alive()]
    if instance:
        left += marked(instance, call).get(owner, [])
    if left:
        log.error("processes of %s/%s survive %d rounds of SIGKILL: %s", instance, owner, rounds, left)
    return killed


def kill_session(
    popen: subprocess.Popen[bytes], instance: str = "", owner: str = "", call: str = ""
) -> list[Proc]:
    """End a call started with `start_new_session=True` (and marked (instance, owner, call), when given)
    and everything it started: its process tree, the rest of its process group, then whatever carries its
    marks; reap it and close its pipes without draining them (a process that escaped could hold them for
    ever). The group is signalled only while `popen` is unreaped, so its ID cannot have been reused.

    Everything killed here other than `popen` descends from this call (its tree, its group, its call
    mark), so none is another caller's Popen: those that are now zombie children of ours (orphans
    re-parented to us, a child subreaper) are reaped."""
    killed: list[Proc] = []
    if popen.returncode is None:
        killed += kill_tree([Proc.of(popen.pid), *group_members(popen.pid)])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)  # anything that joined the group after the scan
    if instance:
        killed += kill_owner(instance, owner, call=call)
    popen.wait()
    for proc in killed:
        if proc.pid != popen.pid:
            reap(proc)
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()
    return killed


def communicate(
    popen: subprocess.Popen[bytes], input: bytes | None, deadline: float
) -> tuple[bytes, bytes] | None:
    """Feed `input` to `popen`'s stdin and read its stdout and stderr (those that are pipes) until it
    exits, then reap it; (stdout, stderr), or None when `deadline` (time.monotonic()) passes first (it
    still runs then: the caller kills it, e.g. with `kill_session`).

    Unlike Popen.communicate it returns at the process's exit (its pidfd), never waiting for EOF: a child
    it left behind may hold the pipes open for ever. Everything written before the exit is read. poll(),
    not select(), so descriptor numbers past 1024 work."""
    poller = select.poll()
    out: dict[int, bytearray] = {}
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
            out[stream.fileno()] = bytearray()
            poller.register(stream.fileno(), select.POLLIN)
    pending = memoryview(input or b"")
    stdin = popen.stdin
    if stdin is not None:
        if pending:
            os.set_blocking(stdin.fileno(), False)
            poller.register(stdin.fileno(), select.POLLOUT)
        else:
            stdin.close()
            stdin = None
    try:
        pidfd = os.pidfd_open(popen.pid)
    except ProcessLookupError:  # already reaped (by `reap_zombie_children`, say): it has exited
        pidfd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)  # always readable: the exit path below
    poller.register(pidfd, select.POLLIN)
    try:
        while (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                if fd == pidfd:
                    popen.wait()
                    if stdin is not None:  # it exited without reading all of its input
                        with contextlib.suppress(BrokenPipeError):
                            stdin.close()
                    for out_fd, data in out.items():
                        _drain(out_fd, data)
                    return _taken(out, popen.stdout), _taken(out, popen.stderr)
                if stdin is not None and fd == stdin.fileno():
                    try:
                        pending = pending[os.write(fd, pending) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it does not read its stdin: its business
                        pending = pending[:0]
                    if not pending:
                        poller.unregister(fd)
                        with contextlib.suppress(BrokenPipeError):
                            stdin.close()
                        stdin = None
                elif fd in out:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    out[fd] += chunk
                    if not chunk:
                        poller.unregister(fd)
        return None
    finally:
        os.close(pidfd)


def _taken(out: dict[int, bytearray], stream: IO[bytes] | None) -> bytes:
    return bytes(out[stream.fileno()]) if stream is not None else b""


def _drain(fd: int, data: bytearray, limit: int = 16 << 20) -> None:
    """Append what `fd` holds now to `data`, without waiting (a leftover writer is cut off at `limit`)."""
    while len(data) < limit:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # BlockingIOError: nothing more now
            return
        if not chunk:
            return
        data += chunk


def become_subreaper() -> None:
    try:
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        log.warning("could not become a child subreaper: errno %d", e.errno)


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
    """One thread and one epoll set for adopted processes' pidfds (and any descriptor to watch for input).
    Callbacks run on that thread: they must be quick."""

    def __init__(self, name: str = "process-watcher") -> None:
        self._epoll = select.epoll()
        self._watches: dict[int, tuple[int, ExitCallback]] = {}  # pidfd -> (pid, callback)
        self._readers: dict[int, Callable[[], None]] = {}  # fd -> callback, called while it has input
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
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

    def watch_readable(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `fd` has input, until `close()`; the caller owns `fd` (and closes it
        after `close()`)."""
        with self._lock:
            self._readers[fd] = callback
        self._epoll.register(fd, select.EPOLLIN)

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        with self._lock:
            for pidfd in self._watches:
                os.close(pidfd)
            self._watches.clear()
            self._readers.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._epoll.close()

    def _run(self) -> None:
        while not self._stopping:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                if self._stopping:
                    return
                if fd == self._wake_r:
                    continue
                with self._lock:
                    reader = self._readers.get(fd)
                    entry = self._watches.pop(fd, None) if reader is None else None
                if reader is not None:
                    try:
                        reader()
                    except Exception:
                        log.exception("callback for fd %d failed", fd)
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
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)  # readable: it has exited
    except ChildProcessError:
        return ExitStatus(pid)  # not our child: its parent (or init) reaps it
    if result is None:
        return ExitStatus(pid)
    if result.si_code == os.CLD_EXITED:
        return ExitStatus(pid, True, exit_code=result.si_status)
    return ExitStatus(pid, True, signal=result.si_status)


ADOPTED_NAMES = (b"pause", b"conmon")


#: Children a Popen of ours waits for (a pause launcher, a first conmon): they carry the adopted
#: names too, and reaping one behind its Popen's back would lose its exit status (Popen reads ECHILD as 0).
_claimed: set[int] = set()
_claimed_lock = threading.Lock()


def claim(pid: int) -> None:
    """`pid` is a child whose Popen will wait for it: `reap_zombie_children` leaves it alone."""
    with _claimed_lock:
        _claimed.add(pid)


def release(pid: int) -> None:
    """Its Popen has waited for it (or never will): the claim ends."""
    with _claimed_lock:
        _claimed.discard(pid)


def reap_zombie_children(names: tuple[bytes, ...] = ADOPTED_NAMES) -> list[int]:
    """Reap zombie children that no Popen of ours waits for: adopted pause/conmon (`names`), and any
    process of a PID namespace below ours (a container's, or a `runc init`: orphaned when its conmon
    died, it was never our Popen's; in a shared-PID pod its zombie would keep pause from exiting).

    Only those, so subprocess's own children keep their exit statuses for their Popen objects, and
    none that a Popen of ours has claimed (`claim`).
    """
    reaped = []
    with _claimed_lock:
        claimed = set(_claimed)
    our_depth = len(_nspids(os.getpid()))
    for pid in children():
        if pid in claimed:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")]
        zombie = stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"
        if zombie and (comm in names or len(_nspids(pid)) > our_depth):
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped
