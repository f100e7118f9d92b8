"""Namespace pins: bind mounts of /proc/<pause>/ns/<kind> onto files under the sandbox's run dir.

A pin keeps a namespace reachable by path (containers join it by OCI `linux.namespaces[].path`, CNI
gets the net path) and lets cleanup always find it: after a crash, after pause died, after a daemon
restart. Pins are removed only by `unpin`; the namespace itself dies with its last process once unpinned.
The syscalls go through `podhost.runtime.mount` (ctypes): a `mount` subprocess per pin would cost
milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from podhost.runtime.mount import MNT_DETACH, MS_BIND, mount, umount


def unmount(target: str) -> None:
    """Detach `target`; a path that is not mounted (or gone) is fine."""
    umount(target, MNT_DETACH)


def pin(pid: int, kind: str, target: Path) -> str:
    """Bind /proc/<pid>/ns/<kind> onto `target` (created empty). Returns the pin's path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    mount(f"/proc/{pid}/ns/{kind}", str(target), None, MS_BIND)
    return str(target)


def unpin(target: str) -> None:
    unmount(target)
    Path(target).unlink(missing_ok=True)
