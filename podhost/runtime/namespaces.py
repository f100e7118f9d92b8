"""A pod's namespaces, as containers and CNI reach them.

Pause holds the pod's namespaces, and everything reaches them through pause's /proc entry
(/proc/<pause>/ns/<kind>, `held_by`): no per-pod bind mount in the host's mount table, which every
container's new mount namespace copies (`runc create` takes ~14 us longer per mount there). Once pause
is gone the sandbox is NotReady and nothing joins its namespaces again: a new sandbox is made. The network namespace then dies with its last process, and the
kernel removes the pod's veth with it; CNI DEL runs with an empty CNI_NETNS, which still releases the IP
(SPEC.md).

A reused PID must never lead anything into a stranger's namespace. Containers join through the /proc
path, and `check_joined` proves after the create that they are in pause's namespaces and pause is still
the recorded process. CNI plugins and the daemon's own visits (port-forward) get `entered`: a path to an
fd of the daemon's, opened from pause's entry and checked against pause's start time after the open, so
it is pause's namespace for as long as the fd is held.

The pod's /dev/shm (a 64 MiB tmpfs) is not in the host's mount table either: pause holds it as a
detached mount (fsmount), and each CreateContainer attaches a copy under the bundle (`attach_held`) for
runc to bind, then detaches it. Only a pod's user namespace is still *pinned* (a bind mount under the
sandbox's run dir), because idmapped mounts are made against it. Pins (and the netns pins of sandboxes made by podhost before this)
are removed only by `unpin`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from podhost import linux
from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.mount import MNT_DETACH, MS_BIND, mount, umount

#: The kinds a sandbox pins (the others are joined through pause's /proc entry).
PINNED = ("user",)


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


@contextlib.contextmanager
def entered(holder: procs.Proc, kind: str) -> Iterator[str]:
    """A path to `holder`'s namespace of `kind` that stays that namespace while the block runs
    (/proc/<this daemon>/fd/<n>, for a CNI plugin or a thread's setns); "" when the holder is gone."""
    try:
        fd = os.open(held_by(holder.pid, kind), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield ""
        return
    try:
        # Alive after the open: the PID was pause's when it was opened (a PID is reused only once reaped).
        yield f"/proc/{os.getpid()}/fd/{fd}" if holder.alive() else ""
    finally:
        os.close(fd)


def attach_held(holder: procs.Proc, fd: int, dev: int, target: Path) -> None:
    """Attach at `target` a copy of the detached mount `holder` keeps open as its fd `fd` (pause holds the
    pod's /dev/shm so, outside the host's mount table); `dev` is that filesystem's st_dev, checked, so a
    reused PID or fd number never attaches anything else. RuntimeFailure when it is gone."""
    try:
        held = os.open(f"/proc/{holder.pid}/fd/{fd}", os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"the pod's /dev/shm is gone: pause (pid {holder.pid}): {e.strerror}") from e
    try:
        if os.fstat(held).st_dev != dev or not holder.alive():
            raise RuntimeFailure(f"the pod's /dev/shm is gone: pause (pid {holder.pid}) has exited")
        target.mkdir(exist_ok=True)
        copy = linux.open_tree(
            held, b"", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_EMPTY_PATH
        )
        try:
            linux.move_mount(copy, b"", linux.AT_FDCWD, bytes(target), linux.MOVE_MOUNT_F_EMPTY_PATH)
        finally:
            os.close(copy)
    finally:
        os.close(held)


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
