"""conmon, the per-container monitor: its arguments (pure) and its start-up handshake.

Owns the contract with conmon 2.x as CRI-O's internal/oci/runtime_oci.go uses it. conmon runs
`<runtime> create`, writes the container's PID to `-p` and the exit code to `--exit-dir/<id>` (and
`<persist dir>/exit`), turns the container's stdout/stderr into a CRI log (`-l k8s-file:PATH`, lines
`<RFC3339Nano> stdout|stderr F|P <text>`), serves attach on `<bundle>/attach` (linked from
`--socket-dir-path/<id>`) and takes resize/reopen-log commands on `<bundle>/ctl`. It double-forks (no
`--sync`), so it outlives the daemon; we wait for the first process, then read the sync pipe
(`_OCI_SYNCPIPE`): `{"pid": N}` on success, `{"pid": -1, "message": <runtime's error>}` on failure.

Never calls `<runtime> start` and never reads the log (the service does both).

Host safety: every path conmon is given lies in the container's bundle, exit, socket or persist dir, or is
the CRI log path under the pod's log_directory. A container without a log path gets conmon's `none` log
driver (`-l none:`), never `k8s-file:/dev/null`: on ReopenContainerLog conmon writes `PATH.tmp` and renames
it over PATH, which would replace the host's /dev/null with a regular file. With `none`, conmon opens,
creates and renames no log file, at create or at reopen (checked by strace against conmon 2.1.6).

Failure is cleanup: a create that fails, times out or is interrupted kills conmon, the runtime and
everything they started (`procs.kill_owner`: their process tree, frozen first so it cannot grow, and every
process marked for the container) before the error leaves. The runtime's half-made state (`runc delete --force`) is the
caller's undo.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import RuntimeFailure
from podhost.runtime import procs

log = logging.getLogger(__name__)

CREATE_TIMEOUT_S = 60.0
#: conmon ctl fifo command numbers (conmon's ctl protocol: "<cmd> <args>\n").
CTL_RESIZE = 1
CTL_REOPEN_LOG = 2
#: conmon's log driver that writes nothing (conmon 2.1's ctr_logging.c accepts "none", "off", "null").
NO_LOG = "none:"


@dataclass
class ConmonSpec:
    """Everything conmon needs for one container."""

    container_id: str
    name: str
    bundle: Path
    runtime_binary: str
    runtime_args: list[str]  # global flags for the runtime (--root, --log, --log-format)
    container_pid_file: Path
    conmon_pid_file: Path
    exit_dir: Path
    socket_dir: Path
    persist_dir: Path
    log_path: str = ""  # empty: conmon drops the output (log driver `none`; no file at all)
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_level: str = "info"
    #: the podhost instance and the container id that mark conmon and the runtime (procs.mark_env).
    instance: str = ""
    owner: str = ""


def conmon_args(conmon: str, spec: ConmonSpec) -> list[str]:
    """The conmon command line for `spec`."""
    args = [
        conmon,
        "-c", spec.container_id,
        "-u", spec.container_id,
        "-n", spec.name,
        "-b", str(spec.bundle),
        "-r", spec.runtime_binary,
        "-p", str(spec.container_pid_file),
        "-P", str(spec.conmon_pid_file),
        "--exit-dir", str(spec.exit_dir),
        "--socket-dir-path", str(spec.socket_dir),
        "-0", str(spec.persist_dir),
        "-l", f"k8s-file:{spec.log_path}" if spec.log_path else NO_LOG,
        "--log-level", spec.log_level,
    ]  # fmt: skip
    for arg in spec.runtime_args:
        args += ["--runtime-arg", arg]
    if spec.terminal:
        args.append("-t")
    elif spec.stdin:
        args.append("-i")
        if not spec.stdin_once:
            args.append("--leave-stdin-open")
    return args


def parse_sync(data: bytes) -> tuple[int, str]:
    """(pid, message) from conmon's sync pipe output; pid -1 means create failed."""
    for line in data.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and "pid" in msg:
            return int(msg["pid"]), str(msg.get("message", "")).strip()
    return -1, data.decode(errors="replace").strip()


def create(conmon: str, spec: ConmonSpec, timeout: float = CREATE_TIMEOUT_S) -> int:
    """Start conmon, which runs `<runtime> create`; the container's PID, or RuntimeFailure with the
    runtime's message. conmon itself has detached (double fork) when this returns. On any failure,
    timeout or interrupt, conmon and everything it started are dead before the error leaves."""
    spec.persist_dir.mkdir(parents=True, exist_ok=True)  # conmon fails to write its exit file without it
    spec.exit_dir.mkdir(parents=True, exist_ok=True)
    spec.socket_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    env = {"_OCI_SYNCPIPE": str(write_fd), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if spec.instance:
        env.update(procs.mark_env(spec.instance, spec.owner))
    proc: subprocess.Popen[bytes] | None = None
    try:
        try:
            proc = subprocess.Popen(
                conmon_args(conmon, spec), pass_fds=(write_fd,), env=env, cwd=spec.bundle,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise RuntimeFailure(f"conmon ({conmon}): {e.strerror}") from e
        procs.claim(proc.pid)  # its exit status is this Popen's to read, not a reaper's
        os.close(write_fd)
        write_fd = -1
        report = procs.communicate(proc, None, deadline)
        if report is None:
            raise RuntimeFailure(f"conmon for {spec.container_id} did not detach within {timeout:g}s")
        stderr = report[1]
        if proc.returncode != 0:
            raise RuntimeFailure(
                f"conmon exited with {proc.returncode}: {stderr.decode(errors='replace').strip() or 'no message'}"
            )
        data = _read_all(read_fd, deadline)
        if data is None:
            raise RuntimeFailure(
                f"{Path(spec.runtime_binary).name} create {spec.container_id}: no report within {timeout:g}s"
            )
        pid, message = parse_sync(data)
        if pid <= 0:
            raise RuntimeFailure(message or "container create failed (conmon reported no pid)")
        return pid
    except BaseException:
        # The first conmon process counts only while unreaped: once reaped, its PID may be anyone's.
        kill_started(spec, proc.pid if proc is not None and proc.returncode is None else 0)
        raise
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
        if proc is not None:
            if proc.returncode is None:  # only after an error; kill_started has signalled it
                proc.kill()
                proc.wait()
            procs.release(proc.pid)
            if proc.stderr is not None:
                proc.stderr.close()


def _read_all(fd: int, deadline: float) -> bytes | None:
    """Read the sync pipe until conmon reported (one JSON line) or closed it; None at the deadline.
    poll(), not select(): the daemon holds thousands of descriptors and select() fails past 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if not poller.poll(left * 1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def kill_started(spec: ConmonSpec, conmon_pid: int = 0) -> list[procs.Proc]:
    """SIGKILL what a create started and wait until it is gone (`procs.kill_owner`): conmon (`conmon_pid`,
    the first process while it is unreaped, and, without marks, the one its pid file names), every process
    marked for (spec.instance, spec.owner), and all their descendants (the runtime's init and hooks:
    runc's children do not inherit the mark)."""
    roots = [procs.Proc.of(conmon_pid)] if conmon_pid > 0 else []
    if not spec.instance and (monitor := _conmon_of(spec)) is not None:
        roots.append(monitor)
    return procs.kill_owner(spec.instance, spec.owner, roots)


def _conmon_of(spec: ConmonSpec) -> procs.Proc | None:
    """The detached conmon its pid file names, if that PID still is a conmon for this container (a
    stale pid file may name a reused PID)."""
    pid = read_pid_file(spec.conmon_pid_file)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid > 0 else []
    except OSError:
        return None
    if argv and argv[0].endswith(b"conmon") and spec.container_id.encode() in argv:
        return procs.Proc.of(pid)
    return None


def read_pid_file(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def ctl(bundle: Path, command: int, arg1: int = 0, arg2: int = 0) -> None:
    """Send a command to conmon's ctl fifo (e.g. reopen the log). Fails if conmon is gone."""
    fifo = bundle / "ctl"
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        raise RuntimeFailure(f"conmon ctl {fifo}: {e.strerror} (is conmon still running?)") from e
    try:
        os.write(fd, f"{command} {arg1} {arg2}\n".encode())
    finally:
        os.close(fd)
