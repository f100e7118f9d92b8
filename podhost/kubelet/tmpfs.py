"""tmpfs mounts the pod manager makes itself: secret volumes, emptyDir medium Memory, the secrets' store.

The kubelet mounts these on the host before a container binds them (pkg/volume/emptydir: `setupTmpfs`),
so a container sees a tmpfs in /proc/mounts and its files never reach a disk. mount(2) and umount2(2)
come from `podhost.linux`, the one libc layer, which the runtime uses too.
"""

from __future__ import annotations

import os
from pathlib import Path

from podhost import linux

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 0x2


def is_tmpfs(path: Path) -> bool:
    """True when `path` exists on a tmpfs."""
    return path.exists() and linux.fstype_of(str(path)) == "tmpfs"


def is_mount_point(path: Path) -> bool:
    return str(path) in linux.mount_points()


def mount_tmpfs(path: Path, size: int = 0, mode: int = 0o755, private: bool = False) -> None:
    """A fresh tmpfs at `path` (made if missing), `size` bytes at most (0: tmpfs's default, half the
    memory). Mounted once: a path that is a mount point already is left as it is.

    A pod's volume gets no other flag, as the kubelet's `setupTmpfs` mounts it: nosuid or nodev on the
    host mount would be locked in a pod with its own user namespace, and the runtime's read-only bind
    remount there (which does not repeat them) would fail with EPERM. `private` (the pod manager's own
    store) adds nosuid and nodev."""
    path.mkdir(parents=True, exist_ok=True)
    if is_mount_point(path):
        return
    options = f"mode={mode:o}" + (f",size={size}" if size else "")
    flags = MS_NOSUID | MS_NODEV if private else 0
    try:
        linux.mount(b"tmpfs", os.fsencode(str(path)), b"tmpfs", flags, options.encode())
    except OSError as e:
        raise OSError(e.errno, f"mount tmpfs at {path}: {e.strerror}") from None


def mounts_under(path: Path) -> list[Path]:
    """The mount points at or below `path`, deepest first (the order to unmount them in)."""
    prefix = str(path)
    found = {p for p in linux.mount_points() if p == prefix or p.startswith(prefix + "/")}
    return [Path(p) for p in sorted(found, key=lambda p: -p.count("/"))]


def unmount(path: Path) -> None:
    """Detach the mount at `path` (lazily: a process still inside keeps its view until it leaves)."""
    try:
        linux.umount2(os.fsencode(str(path)), MNT_DETACH)
    except OSError as e:
        raise OSError(e.errno, f"unmount {path}: {e.strerror}") from None


def unmount_all(path: Path) -> None:
    """Every mount at or below `path`, deepest first."""
    for point in mounts_under(path):
        unmount(point)
