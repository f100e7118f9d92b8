"""Start a pod's pause process (the protocol is in podhost/pause/pause.c's header).

One exec of a ~10 KiB static binary founds the pod's namespaces, sets its hostname and sysctls, joins the
pod cgroup and drops every privilege; containerd's way (runc create + start of a pause container) costs
~40 ms here. The isolation is the same: new net/IPC/UTS(/PID) namespaces, uid 65535, no capabilities,
no_new_privs, the pod cgroup. A pod with its own user namespace (CRI userns_options mode POD) has it
founded first, owning the others; the launcher waits while this module writes its uid/gid maps.

Never waits for EOF on the launcher's pipes: a pause that failed half-way (or a foreign binary) could hold
them for ever. It reads what the launcher writes (a few bytes) until the launcher exits
(`procs.communicate`). Whatever goes wrong, including a timeout or an interrupt, every process marked for
(instance, owner) and everything they started is killed (`procs.kill_owner`) before the error leaves:
nothing this call started outlives its failure.
"""

from __future__ import annotations

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
from podhost.runtime.model import IDMapping

log = logging.getLogger(__name__)


@dataclass
class PauseSpec:
    namespaces: list[str]  # of "net", "ipc", "uts", "pid"
    hostname: str
    cgroup_procs: list[Path]  # cgroup.procs files of the pod cgroup, one per hierarchy
    sysctls: str  # already validated and encoded by sysctls.pause_sysctls
    #: The pod's user namespace as /proc/<pid>/{uid,gid}_map lines; None keeps the host's.
    id_maps: tuple[str, str] | None = None
    #: An fd of the daemon's that pause keeps open for the pod's life, at the same number (the pod's
    #: /dev/shm as a detached mount); pause itself never touches it.
    held_fd: int = -1


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
        **({"PODHOST_PAUSE_USERNS": "1"} if spec.id_maps is not None else {}),
    }


def id_map_lines(mappings: list[IDMapping]) -> str:
    """/proc/<pid>/uid_map (or gid_map) text: "inside outside length" per line (user_namespaces(7))."""
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings)


def _await_line(stream: IO[bytes], expected: bytes, deadline: float) -> None:
    """Read `stream` until it has given exactly `expected` (the launcher's "userns\n"), without ever
    reading past it. _EarlyExit at EOF or other words (the launcher failed: its stderr says why),
    RuntimeFailure at the deadline (the caller kills everything marked)."""
    fd, got = stream.fileno(), b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while got != expected:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeFailure("start pause: no user namespace report in time")
        if not poller.poll(left * 1000):
            continue
        chunk = os.read(fd, len(expected) - len(got))
        if not chunk or not expected.startswith(got + chunk):
            raise _EarlyExit(got + chunk)
        got += chunk


class _EarlyExit(Exception):
    """The launcher said something else (or nothing) where it should have asked for the maps."""


def _write_id_maps(pid: int, id_maps: tuple[str, str]) -> None:
    """Write the launcher's maps from the daemon (the parent user namespace, CAP_SETUID/CAP_SETGID):
    setgroups stays allowed, since runc sets the container's groups."""
    for name, text in zip(("uid_map", "gid_map"), id_maps, strict=True):
        try:
            Path(f"/proc/{pid}/{name}").write_text(text)
        except OSError as e:
            raise RuntimeFailure(f"start pause: write {name} {text.strip()!r}: {e.strerror}") from e


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
                pass_fds=(spec.held_fd,) if spec.held_fd >= 0 else (),
                stdin=subprocess.DEVNULL if spec.id_maps is None else subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            raise RuntimeFailure(f"start pause ({executable}): {e.strerror}") from e
        procs.claim(launcher.pid)  # its exit status is this Popen's to read, not a reaper's
        if spec.id_maps is not None:
            assert launcher.stdin is not None and launcher.stdout is not None
            try:
                _await_line(launcher.stdout, b"userns\n", deadline)
                _write_id_maps(launcher.pid, spec.id_maps)
                launcher.stdin.write(b"x")
                launcher.stdin.flush()
            except (_EarlyExit, BrokenPipeError):
                pass  # it failed before the maps: its exit status and stderr below say why
            finally:
                launcher.stdin.close()  # EOF: a launcher still waiting gives up
                launcher.stdin = None
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
            procs.release(launcher.pid)
            for stream in (launcher.stdout, launcher.stderr):
                if stream is not None:
                    stream.close()
