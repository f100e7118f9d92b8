"""conmon, the per-container monitor: its arguments (pure) and its start-up handshake.

Owns the contract with conmon 2.x as CRI-O's internal/oci/runtime_oci.go uses it. conmon runs
`<runtime> create`, writes the container's PID to `-p` and the exit code to `--exit-dir/<id>` (and
`<persist dir>/exit`), turns the container's stdout/stderr into a CRI log (`-l k8s-file:PATH`, lines
`<RFC3339Nano> stdout|stderr F|P <text>`), serves attach on `<bundle>/attach` (linked from
`--socket-dir-path/<id>`) and takes resize/reopen-log commands on `<bundle>/ctl`. It double-forks (no
`--sync`), so it outlives the daemon; we wait for the first process, then read the sync pipe
(`_OCI_SYNCPIPE`): `{"pid": N}` on success, `{"pid": -1, "message": <runtime's error>}` on failure.

Never calls `<runtime> start` and never reads the log (the service does both).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import RuntimeFailure

CREATE_TIMEOUT_S = 60.0
#: conmon ctl fifo command numbers (conmon's ctl protocol: "<cmd> <args>\n").
CTL_RESIZE = 1
CTL_REOPEN_LOG = 2


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
    log_path: str = ""  # empty: conmon drops output (logs to /dev/null)
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_level: str = "info"


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
        "-l", f"k8s-file:{spec.log_path}" if spec.log_path else "k8s-file:/dev/null",
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
    runtime's message. conmon itself has detached (double fork) when this returns."""
    spec.persist_dir.mkdir(parents=True, exist_ok=True)  # conmon fails to write its exit file without it
    spec.exit_dir.mkdir(parents=True, exist_ok=True)
    spec.socket_dir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    env = {"_OCI_SYNCPIPE": str(write_fd), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    try:
        try:
            proc = subprocess.Popen(
                conmon_args(conmon, spec), pass_fds=(write_fd,), env=env, cwd=spec.bundle,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise RuntimeFailure(f"conmon ({conmon}): {e.strerror}") from e
        os.close(write_fd)
        write_fd = -1
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.wait()
            raise RuntimeFailure(
                f"conmon for {spec.container_id} did not detach within {timeout:.0f}s"
            ) from e
        if proc.returncode != 0:
            raise RuntimeFailure(
                f"conmon exited with {proc.returncode}: "
                f"{stderr.decode(errors='replace').strip() or 'no message'}"
            )
        data = _read_all(read_fd, time.monotonic() + timeout)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    pid, message = parse_sync(data)
    if pid <= 0:
        raise RuntimeFailure(message or "container create failed (conmon reported no pid)")
    return pid


def _read_all(fd: int, deadline: float) -> bytes:
    """Read the sync pipe until conmon reported (one JSON line) or closed it."""
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeFailure("timed out waiting for conmon's create report")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


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
