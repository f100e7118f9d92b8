"""A pod's namespaces, as containers and CNI reach them.

Pause holds the pod's namespaces. Two kinds are also *pinned*, bind mounts of /proc/<pause>/ns/<kind>
onto files under the sandbox's run dir, because something needs them after pause is gone: the netns
(CNI DEL must find it after pause died, after a crash, after a daemon restart) and a pod's user
namespace (idmapped mounts are made against it). Pins are removed only by `unpin`; a namespace dies
with its last process once unpinned.

IPC, UTS and a shared PID namespace are not pinned: nothing joins them once pause is gone (the
sandbox is NotReady then, and a new one is made), so containers join them through
/proc/<pause>/ns/<kind> (`held_by`). That keeps two mounts per pod out of the host's mount table, which
every container's new mount namespace copies: `runc create` and `runc start` slow down with its size.
`check_joined` proves, after a create, that the container is in pause's namespaces and pause is still
the recorded process, so a reused PID can never lead a container into a stranger's namespace.

The syscalls go through `podhost.runtime.mount` (ctypes): a `mount` subprocess per pin would cost
milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.mount import MNT_DETACH, MS_BIND, mount, umount

#: The kinds a sandbox pins (the others are joined through pause's /proc entry).
PINNED = ("net", "user")


def unmount(target: str) -> None:
    """Detach `target`; a path that is not mounted (or gone) is fine."""
    umount(target, MNT_DETACH)


def pin(pid: int, kind: str, target: Path) -> str:
    """Bind /proc/<pid>/ns/<kind> onto `target` (created empty). Returns the pin's path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    mount(held_by(pid, kind), str(target), None, MS_BIND)
    return str(target)


def unpin(target: str) -> None:
    unmount(target)
    Path(target).unlink(missing_ok=True)


def held_by(pid: int, kind: str) -> str:
    """/proc/<pid>/ns/<kind>: the namespace of that kind process `pid` is in (how a container joins an
    unpinned namespace of pause's, or a TARGET container's PID namespace)."""
    return f"/proc/{pid}/ns/{kind}"


def check_joined(pid: int, joined: list[str], holder: int, holder_start: int) -> None:
    """RuntimeFailure unless process `pid` is in each namespace of `joined` (OCI namespace paths) that
    is reached through pause's /proc entry, and pause (`holder`, started at `holder_start`) still runs:
    then that entry was pause's own when it was read, not a reused PID's."""
    for path in joined:
        if not path.startswith(held_by(holder, "")):
            continue
        kind = path.rsplit("/", 1)[1]
        try:
            theirs, ours = os.stat(path), os.stat(held_by(pid, kind))
            same = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
        except OSError:
            same = False
        if not same or not procs.alive(holder, holder_start):
            raise RuntimeFailure(f"the pod's {kind} namespace is gone: its pause (pid {holder}) has exited")
