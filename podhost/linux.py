"""The Linux system calls podhost needs that Python's `os` lacks, through one libc handle: mount(2),
umount2(2), the mount API of 5.2+ (open_tree, move_mount, mount_setattr), setns(2), unshare(2),
sethostname(2), prctl(2) and inotify(7); and the inode flags ioctl (FS_IOC_GETFLAGS/SETFLAGS).

Each wrapper raises OSError(errno, strerror) as `os` does, and decides nothing: what to mount where, or
what an error means, is its caller's. pidfds need nothing here (`os.pidfd_open`, `os.waitid(P_PIDFD)`,
`signal.pidfd_send_signal`). Standard library only: the Python pause (`podhost.pause.fallback`) imports
this module and nothing else of podhost's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import struct
from ctypes import byref, c_char_p, c_int, c_long, c_size_t, c_uint, c_uint32, c_ulong, c_void_p, sizeof

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
_INOTIFY_EVENT = struct.Struct("iIII")  # struct inotify_event without its name

#: open_tree(2), move_mount(2) (Linux 5.2) and mount_setattr(2) (5.12): numbered alike on x86_64 and
#: aarch64 (the generic syscall table); callers check the machine before relying on them.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
#: fsopen(2), fsconfig(2), fsmount(2) (Linux 5.2): a filesystem mounted nowhere, held by an fd.
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4

_libc = ctypes.CDLL(None, use_errno=True)
for _name, _argtypes in {
    "mount": [c_char_p, c_char_p, c_char_p, c_ulong, c_char_p],
    "umount2": [c_char_p, c_int],
    "setns": [c_int, c_int],
    "unshare": [c_int],
    "sethostname": [c_char_p, c_size_t],
    "prctl": [c_int, c_ulong, c_ulong, c_ulong, c_ulong],
    "inotify_init1": [c_int],
    "inotify_add_watch": [c_int, c_char_p, c_uint32],
}.items():
    getattr(_libc, _name).argtypes = _argtypes
    getattr(_libc, _name).restype = c_int
_libc.syscall.restype = c_long


class MountAttr(ctypes.Structure):
    """struct mount_attr, MOUNT_ATTR_SIZE_VER0 (32 bytes)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(rc: int) -> int:
    """`rc`, or OSError with the errno when the call failed (returned a negative value)."""
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    _check(_libc.mount(source, target, fstype, flags, data))


def umount2(target: bytes, flags: int = 0) -> None:
    _check(_libc.umount2(target, flags))


def _syscall(number: int, *args: object) -> int:
    return _check(_libc.syscall(c_long(number), *args))


def open_tree(dirfd: int, path: bytes, flags: int) -> int:
    """A mount (or with OPEN_TREE_CLONE a detached copy of it) as a file descriptor."""
    return _syscall(SYS_OPEN_TREE, c_int(dirfd), c_char_p(path), c_uint(flags))


def move_mount(from_dirfd: int, from_path: bytes, to_dirfd: int, to_path: bytes, flags: int) -> None:
    args = (c_int(from_dirfd), c_char_p(from_path), c_int(to_dirfd), c_char_p(to_path), c_uint(flags))
    _syscall(SYS_MOVE_MOUNT, *args)


def detached_mount(fstype: bytes, options: dict[bytes, bytes], attrs: int) -> int:
    """A new `fstype` filesystem with `options`, as a mount attached nowhere (an O_PATH-like fd, close-on-
    exec): it lives while a process holds the fd or a mount copied from it."""
    fs = _syscall(SYS_FSOPEN, c_char_p(fstype), c_uint(1))  # FSOPEN_CLOEXEC
    try:
        for key, value in options.items():
            _syscall(
                SYS_FSCONFIG, c_int(fs), c_uint(FSCONFIG_SET_STRING), c_char_p(key), c_char_p(value), c_int(0)
            )
        _syscall(
            SYS_FSCONFIG, c_int(fs), c_uint(FSCONFIG_CMD_CREATE), c_void_p(None), c_void_p(None), c_int(0)
        )
        return _syscall(SYS_FSMOUNT, c_int(fs), c_uint(1), c_uint(attrs))  # FSMOUNT_CLOEXEC
    finally:
        os.close(fs)


def mount_setattr(dirfd: int, path: bytes, flags: int, attr: MountAttr | None) -> None:
    """mount_setattr(2); `attr` None passes NULL and size 0 (a probe: only ENOSYS means no such call)."""
    ref = c_void_p(None) if attr is None else byref(attr)
    size = c_size_t(0 if attr is None else sizeof(attr))
    _syscall(SYS_MOUNT_SETATTR, c_int(dirfd), c_char_p(path), c_uint(flags), ref, size)


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace `fd` refers to (as os.setns of Python 3.12)."""
    _check(_libc.setns(fd, nstype))


def unshare(flags: int) -> None:
    """(as os.unshare of Python 3.12)"""
    _check(_libc.unshare(flags))


def sethostname(name: bytes) -> None:
    _check(_libc.sethostname(name, len(name)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5))


def inotify_init1(flags: int = os.O_NONBLOCK | os.O_CLOEXEC) -> int:
    return _check(_libc.inotify_init1(flags))


def inotify_add_watch(fd: int, path: bytes, mask: int) -> int:
    return _check(_libc.inotify_add_watch(fd, path, mask))


def inotify_events(buffer: bytes) -> list[tuple[int, str]]:
    """(mask, name) of each `struct inotify_event` in `buffer` (what one read of an inotify fd gave)."""
    out = []
    offset = 0
    while offset + _INOTIFY_EVENT.size <= len(buffer):
        _, mask, _, length = _INOTIFY_EVENT.unpack_from(buffer, offset)
        raw = buffer[offset + _INOTIFY_EVENT.size : offset + _INOTIFY_EVENT.size + length]
        out.append((mask, raw.split(b"\0", 1)[0].decode(errors="replace")))
        offset += _INOTIFY_EVENT.size + length
    return out


_OCTAL = re.compile(r"\\([0-7]{3})")


def _mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount of this process's mount namespace, in mount order;
    mountinfo's octal escapes (\\040 for a space, ...) undone."""
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [(_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), r[4]), r[r.index("-") + 1]) for r in rows]


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace, in mount order."""
    return [point for point, _ in _mounts()]


def fstype_of(path: str) -> str:
    """The filesystem type of the mount holding `path` (the deepest mount point above it)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in _mounts():
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def mark_top_directory(path: str) -> bool:
    """Set FS_TOPDIR_FL (`chattr +T`) on directory `path`: ext2/3/4 then place each directory made in it
    in a block group of its own choosing (the Orlov allocator) instead of beside its parent. False
    where the filesystem has no such flag (tmpfs, overlay, xfs...): the hint is then simply absent."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            flags = struct.unpack_from("i", buf)[0]
            if not flags & FS_TOPDIR_FL:
                struct.pack_into("i", buf, 0, flags | FS_TOPDIR_FL)
                fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return False
            raise
        return True
    finally:
        os.close(fd)
