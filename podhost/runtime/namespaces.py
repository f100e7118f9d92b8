"""Namespace pins: bind mounts of /proc/<pause>/ns/<kind> onto files under the sandbox's run dir.

A pin keeps a namespace reachable by path (containers join it by OCI `linux.namespaces[].path`, CNI
gets the net path) and lets cleanup always find it: after a crash, after pause died, after a daemon
restart. Pins are removed only by `unpin`; the namespace itself dies with its last process once unpinned.
mount(2)/umount2(2) are called through ctypes: a `mount` subprocess per pin would cost milliseconds.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from podhost.errors import RuntimeFailure

MS_BIND = 4096
MNT_DETACH = 2
EINVAL = 22
ENOENT = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if (
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise RuntimeFailure(f"mount {source} on {target}: {os.strerror(err)}")


def unmount(target: str) -> None:
    """Detach `target`; a path that is not mounted (or gone) is fine."""
    if _libc.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (EINVAL, ENOENT):
            raise RuntimeFailure(f"umount {target}: {os.strerror(err)}")


def pin(pid: int, kind: str, target: Path) -> str:
    """Bind /proc/<pid>/ns/<kind> onto `target` (created empty). Returns the pin's path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    mount(f"/proc/{pid}/ns/{kind}", str(target), None, MS_BIND)
    return str(target)


def unpin(target: str) -> None:
    unmount(target)
    Path(target).unlink(missing_ok=True)


def is_mounted(path: str) -> bool:
    """True when `path` is a mount point (a live pin)."""
    escaped = _escape(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split(" ", 5)[4] == escaped for line in f)


def _escape(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
