"""Start a pod's pause process (the protocol is in podhost/pause/pause.c's header).

One exec of a ~10 KiB static binary founds the pod's namespaces, sets its hostname and sysctls, joins the
pod cgroup and drops every privilege; containerd's way (runc create + start of a pause container) costs
~40 ms here. The isolation is the same: new net/IPC/UTS(/PID) namespaces, uid 65535, no capabilities,
no_new_privs, the pod cgroup.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import RuntimeFailure

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


def start_pause(binary: Path, spec: PauseSpec) -> int:
    """Launch pause; returns its PID (in the host PID namespace) once its namespaces exist."""
    executable, argv = pause_command(binary)
    try:
        proc = subprocess.run(
            argv, executable=executable, env=pause_env(spec), capture_output=True, timeout=10, close_fds=True
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeFailure(f"start pause: {e}") from e
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise RuntimeFailure(f"start pause: {msg}")
    try:
        return int(proc.stdout.split()[0])
    except (IndexError, ValueError) as e:
        raise RuntimeFailure(f"start pause: unexpected output {proc.stdout!r}") from e
