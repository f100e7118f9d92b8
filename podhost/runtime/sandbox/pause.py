"""Start a pod's pause process (the protocol is in podhost/pause/pause.c's header).

One exec of a ~10 KiB static binary founds the pod's namespaces, sets its hostname and sysctls, joins the
pod cgroup and drops every privilege; containerd's way (runc create + start of a pause container) costs
~40 ms here. The isolation is the same: new net/IPC/UTS(/PID) namespaces, uid 65535, no capabilities,
no_new_privs, the pod cgroup.

Never waits for EOF on the launcher's pipes: a pause that failed half-way (or a foreign binary) could hold
them for ever. It reads what the launcher writes (a few bytes) until the launcher exits
(`procs.communicate`). Whatever goes wrong, including a timeout or an interrupt, every process marked for
(instance, owner) and everything they started is killed (`procs.kill_owner`) before the error leaves:
nothing this call started outlives its failure.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import RuntimeFailure
from podhost.pause import PACKAGE_DIR
from podhost.runtime import procs

log = logging.getLogger(__name__)


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
    deadline = time.monotonic() + timeout
    launcher: subprocess.Popen[bytes] | None = None
    try:
        try:
            launcher = subprocess.Popen(
                argv, executable=executable, env=env, close_fds=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise RuntimeFailure(f"start pause ({executable}): {e.strerror}") from e
        report = procs.communicate(launcher, None, deadline)
        if report is None:
            raise RuntimeFailure(f"start pause: no report within {timeout:g}s")
        (out, err), code = report, launcher.returncode
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
        # The launcher counts only while unreaped: once reaped, its PID may be anyone's.
        unreaped = (
            [procs.Proc.of(launcher.pid)] if launcher is not None and launcher.returncode is None else []
        )
        procs.kill_owner(instance, owner, unreaped)
        raise
    finally:
        if launcher is not None:
            if launcher.returncode is None:  # only after an error; kill_owner has signalled it
                launcher.kill()
                launcher.wait()
            for stream in (launcher.stdout, launcher.stderr):
                if stream is not None:
                    stream.close()
