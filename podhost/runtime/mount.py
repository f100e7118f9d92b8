"""mount(2) and umount2(2) through ctypes: overlay rootfs mounts, namespace pins, the pod shm.

A `mount` subprocess costs milliseconds per call; the syscall costs microseconds. Errors carry the errno
name and text. This module owns nothing but the syscalls and reading /proc/self/mountinfo: it never
decides what to mount where.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re

from podhost.errors import RuntimeFailure

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


_OCTAL = re.compile(r"\\([0-7]{3})")


class MountError(RuntimeFailure):
    """A mount syscall failed; `errno` is the kernel's answer."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


def _describe(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))}: {os.strerror(err)}"


def mount_raw(source: bytes, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> int:
    """The bare syscall: 0 or the errno. Safe to call in a forked child (no allocation, no locks)."""
    if _libc.mount(source, target, fstype, flags, data) != 0:
        return ctypes.get_errno() or errno.EIO
    return 0


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    err = mount_raw(
        os.fsencode(source),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data is not None else None,
    )
    if err:
        shown = data if data is None or len(data) < 300 else data[:300] + "..."
        raise MountError(f"mount -t {fstype} {source} {target} (options {shown!r}): {_describe(err)}", err)


def umount(target: str, flags: int = 0) -> bool:
    """Unmount `target`. False when it was not a mount point (or is gone); raises on other errors."""
    if _libc.umount2(os.fsencode(target), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise MountError(f"umount {target}: {_describe(err)}", err)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace, in mount order."""
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split(" ", 5)[4]) for line in f]


def is_mountpoint(path: str) -> bool:
    points = mount_points()
    return path in points or os.path.realpath(path) in points
