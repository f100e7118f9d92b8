"""mount(2), umount2(2) and mount_setattr(2) (through `podhost.linux`): overlay rootfs mounts,
namespace pins, the pod shm, recursive read-only trees, idmapped mounts.

A `mount` subprocess costs milliseconds per call; the syscall costs microseconds. Errors carry the errno
name and text. This module owns nothing but these mount operations and reading /proc/self/mountinfo: it
never decides what to mount where.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

from podhost import linux
from podhost.errors import RuntimeFailure

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8


class MountError(RuntimeFailure):
    """A mount syscall failed; `errno` is the kernel's answer."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


def _describe(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))}: {os.strerror(err)}"


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """A failed syscall in the block (OSError) becomes MountError naming `what`."""
    try:
        yield
    except OSError as e:
        err = e.errno or errno.EIO
        raise MountError(f"{what}: {_describe(err)}", err) from None


def mount_raw(source: bytes, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> int:
    """The bare syscall: 0 or the errno. For a forked child, which reports the errno as its exit code."""
    try:
        linux.mount(source, target, fstype, flags, data)
    except OSError as e:
        return e.errno or errno.EIO
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
    try:
        linux.umount2(os.fsencode(target), flags)
    except OSError as e:
        err = e.errno or errno.EIO
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        raise MountError(f"umount {target}: {_describe(err)}", err) from None
    return True


def make_readonly_recursive(target: str) -> None:
    """mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY): `target` and every mount below it read-only (only
    these mounts: the flag is per mount, so the same filesystems stay writable wherever else they are)."""
    attr = linux.MountAttr(attr_set=linux.MOUNT_ATTR_RDONLY)
    with _failing(f"mount_setattr {target} (AT_RECURSIVE, MOUNT_ATTR_RDONLY)"):
        linux.mount_setattr(linux.AT_FDCWD, os.fsencode(target), linux.AT_RECURSIVE, attr)


def idmap_mount(target: str, userns: str) -> None:
    """Replace the mount on `target` by an idmapped copy of it that maps ids as the user namespace at path
    `userns` does (Documentation/filesystems/idmappings.rst): a file owned by host uid 0 shows as the
    namespace's uid 0 to its processes, and their writes land as host uid 0. The steps: clone the mount
    (open_tree OPEN_TREE_CLONE, a detached copy that keeps the filesystem alive), unmount the original,
    set MOUNT_ATTR_IDMAP on the copy, move it onto `target`. On failure `target` is left unmounted."""
    target_b = os.fsencode(target)
    with _failing(f"open_tree {target} (OPEN_TREE_CLONE)"):
        tree = linux.open_tree(linux.AT_FDCWD, target_b, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
    try:
        umount(target, MNT_DETACH)
        userns_fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            attr = linux.MountAttr(attr_set=linux.MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
            with _failing(f"mount_setattr {target} (MOUNT_ATTR_IDMAP, {userns})"):
                linux.mount_setattr(tree, b"", linux.AT_EMPTY_PATH, attr)
        finally:
            os.close(userns_fd)
        with _failing(f"move_mount onto {target}"):
            linux.move_mount(tree, b"", linux.AT_FDCWD, target_b, linux.MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(tree)


def mount_setattr_supported() -> bool:
    """Whether this kernel has mount_setattr(2): an invalid call answers EBADF/EINVAL there, ENOSYS before
    5.12 (or where a seccomp filter hides it)."""
    if os.uname().machine not in ("x86_64", "aarch64"):
        return False
    try:
        linux.mount_setattr(-1, b"", 0, None)
    except OSError as e:
        return e.errno != errno.ENOSYS
    return True


def idmapped_overlay_supported() -> bool:
    """Whether podhost can give a pod its own user namespace: idmapped mounts (5.12) under overlayfs
    layers (overlayfs takes idmapped layers since 5.19)."""
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    new_enough = release is not None and (int(release[1]), int(release[2])) >= (5, 19)
    return new_enough and mount_setattr_supported()


def is_mountpoint(path: str) -> bool:
    points = linux.mount_points()
    return path in points or os.path.realpath(path) in points
