"""Start a pod's pause process (the protocol is in podhost/pause/pause.c's header).

One exec of a ~10 KiB static binary founds the pod's namespaces, sets its hostname and sysctls, joins the
pod cgroup and drops every privilege; containerd's way (runc create + start of a pause container) costs
~40 ms here. The isolation is the same: new net/IPC/UTS(/PID) namespaces, uid 65535, no capabilities,
no_new_privs, the pod cgroup.

Never waits for EOF on the launcher's pipes: a pause that failed half-way (or a foreign binary) could hold
them for ever. It waits for the launcher's exit only, then reads what the launcher wrote (a few bytes, far
below a pipe's capacity). Whatever goes wrong, including a timeout or an interrupt, every process marked
for (instance, owner) is killed before the error leaves: nothing this call started outlives its failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from podhost.errors import RuntimeFailure
from podhost.pause import PACKAGE_DIR
from podhost.runtime import procs

log = logging.getLogger(__name__)

#: Rounds of "kill what is marked" before giving up: a process forking while it is killed leaves a child
#: that the next round finds. Each round waits (on pidfds) at most KILL_WAIT_S for its kills to land.
KILL_ROUNDS = 10
KILL_WAIT_S = 2.0


@dataclass
class PauseSpec:
    namespaces: list[str]  # of "net", "ipc", "uts", "pid"
    hostname: str
    cgroup_procs: list[Path]  # cgroup.procs files of the pod cgroup, one per hierarchy
    sysctls: str  # already validated and encoded by sysctls.pause_sysctls


def pause_command(binary: Path) -> tuple[str, list[str]]:
    """(executable, argv): argv[0] is "/pause" so `ps` in the pod shows it as Kubernetes' pause does."""
    if binary.exists():
        return str(binary), ["/pause"]
    log.warning("pause binary %s missing: using the Python fallback (more memory per pod)", binary)
    return sys.executable, ["/pause", "-m", "podhost.pause.fallback"]


def pause_env(spec: PauseSpec) -> dict[str, str]:
    return {
        "PODHOST_PAUSE_NS": ",".join(spec.namespaces),
        "PODHOST_PAUSE_HOSTNAME": spec.hostname,
        "PODHOST_PAUSE_CGROUPS": ":".join(str(p) for p in spec.cgroup_procs),
        "PODHOST_PAUSE_SYSCTLS": spec.sysctls,
    }


def start_pause(
    binary: Path, spec: PauseSpec, instance: str, owner: str, timeout: float = 10.0
) -> procs.Proc:
    """Launch pause, marked for (instance, owner); returns it once its namespaces exist and it has shed
    its privileges. RuntimeFailure carries pause's own "pause: <step>: errno N"."""
    executable, argv = pause_command(binary)
    env = {**pause_env(spec), **procs.mark_env(instance, owner)}
    if executable == sys.executable:  # the fallback must import podhost wherever the daemon runs from
        env["PYTHONPATH"] = str(PACKAGE_DIR.parents[1])
    launcher: subprocess.Popen[bytes] | None = None
    try:
        try:
            launcher = subprocess.Popen(
                argv, executable=executable, env=env, close_fds=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise RuntimeFailure(f"start pause ({executable}): {e.strerror}") from e
        try:
            code = launcher.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeFailure(f"start pause: no report within {timeout:g}s") from e
        out, err = _read_now(launcher.stdout), _read_now(launcher.stderr)
        if code != 0:
            msg = err.decode(errors="replace").strip() or f"exit status {code}"
            raise RuntimeFailure(f"start pause: {msg}")
        try:
            pid = int(out.split()[0])
        except (IndexError, ValueError) as e:
            raise RuntimeFailure(f"start pause: unexpected output {out!r}") from e
        pause = procs.Proc.of(pid)
        if not pause.alive():
            raise RuntimeFailure(f"start pause: pause (pid {pid}) exited right after it started")
        return pause
    except BaseException:
        kill_all_marked(instance, owner)
        raise
    finally:
        if launcher is not None:
            if launcher.poll() is None:  # only after an error; kill_all_marked has signalled it
                launcher.kill()
                launcher.wait()
            for stream in (launcher.stdout, launcher.stderr):
                if stream is not None:
                    stream.close()


def _read_now(stream: IO[bytes] | None) -> bytes:
    """What is in the pipe now, without waiting for EOF (a detached process may hold its write end)."""
    if stream is None:
        return b""
    fd = stream.fileno()
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            data += chunk
    return data


def kill_all_marked(instance: str, owner: str) -> list[procs.Proc]:
    """SIGKILL every process marked for (instance, owner) and wait until they are gone, again until none
    is left (one may fork while it is killed); returns those signalled. A no-op for an empty instance."""
    killed: list[procs.Proc] = []
    for _ in range(KILL_ROUNDS if instance else 0):
        found = procs.kill_marked(instance, owner)
        if not found:
            break
        killed += found
        _await_gone(found, KILL_WAIT_S)
    else:
        if instance:
            log.error("processes marked %s/%s survive %d rounds of SIGKILL", instance, owner, KILL_ROUNDS)
    return killed


def _await_gone(found: list[procs.Proc], timeout: float) -> None:
    """Wait on pidfds (readable once a process has exited) until every one in `found` is gone."""
    poller = select.poll()
    pidfds: list[int] = []
    try:
        for proc in found:
            with contextlib.suppress(OSError):  # already gone
                pidfds.append(os.pidfd_open(proc.pid))
                poller.register(pidfds[-1], select.POLLIN)
        pending, deadline = set(pidfds), time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                pending.discard(fd)
                poller.unregister(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
