"""mount(2), umount2(2) and mount_setattr(2) through ctypes: overlay rootfs mounts, namespace pins, the pod
shm, recursive read-only trees.

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
MS_REC = 0x4000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long

#: mount_setattr(2) (Linux 5.12): the same number on x86_64 and aarch64 (the generic syscall table).
SYS_MOUNT_SETATTR = 442
#: open_tree(2) and move_mount(2) (Linux 5.2), also numbered alike on x86_64 and aarch64.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4


class _MountAttr(ctypes.Structure):
    """struct mount_attr, MOUNT_ATTR_SIZE_VER0 (32 bytes)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


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


def make_readonly_recursive(target: str) -> None:
    """mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY): `target` and every mount below it read-only (only
    these mounts: the flag is per mount, so the same filesystems stay writable wherever else they are)."""
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    rc = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(os.fsencode(target)),
        ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
    )  # fmt: skip
    if rc != 0:
        err = ctypes.get_errno()
        raise MountError(f"mount_setattr {target} (AT_RECURSIVE, MOUNT_ATTR_RDONLY): {_describe(err)}", err)


def idmap_mount(target: str, userns: str) -> None:
    """Replace the mount on `target` by an idmapped copy of it that maps ids as the user namespace at path
    `userns` does (Documentation/filesystems/idmappings.rst): a file owned by host uid 0 shows as the
    namespace's uid 0 to its processes, and their writes land as host uid 0. The steps: clone the mount
    (open_tree OPEN_TREE_CLONE, a detached copy that keeps the filesystem alive), unmount the original,
    set MOUNT_ATTR_IDMAP on the copy, move it onto `target`. On failure `target` is left unmounted."""
    target_b = os.fsencode(target)
    tree = _libc.syscall(
        ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(target_b),
        ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
    )  # fmt: skip
    if tree < 0:
        err = ctypes.get_errno()
        raise MountError(f"open_tree {target} (OPEN_TREE_CLONE): {_describe(err)}", err)
    try:
        umount(target, MNT_DETACH)
        userns_fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
            rc = _libc.syscall(
                ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(tree), ctypes.c_char_p(b""),
                ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
            )  # fmt: skip
        finally:
            os.close(userns_fd)
        if rc != 0:
            err = ctypes.get_errno()
            raise MountError(f"mount_setattr {target} (MOUNT_ATTR_IDMAP, {userns}): {_describe(err)}", err)
        rc = _libc.syscall(
            ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(target_b), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
        )  # fmt: skip
        if rc != 0:
            err = ctypes.get_errno()
            raise MountError(f"move_mount onto {target}: {_describe(err)}", err)
    finally:
        os.close(tree)


def mount_setattr_supported() -> bool:
    """Whether this kernel has mount_setattr(2): an invalid call answers EBADF/EINVAL there, ENOSYS before
    5.12 (or where a seccomp filter hides it)."""
    if os.uname().machine not in ("x86_64", "aarch64"):
        return False
    rc = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(-1), ctypes.c_char_p(b""), ctypes.c_uint(0),
        ctypes.c_void_p(None), ctypes.c_size_t(0),
    )  # fmt: skip
    return rc == 0 or ctypes.get_errno() != errno.ENOSYS


def idmapped_overlay_supported() -> bool:
    """Whether podhost can give a pod its own user namespace: idmapped mounts (5.12) under overlayfs
    layers (overlayfs takes idmapped layers since 5.19)."""
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    new_enough = release is not None and (int(release[1]), int(release[2])) >= (5, 19)
    return new_enough and mount_setattr_supported()


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
