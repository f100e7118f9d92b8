"""A container's root filesystem: an overlay of an image's layers (read-only) under a private upper dir.

`mount_rootfs` mounts `overlay` with `lowerdir=<top>:...:<bottom>,upperdir=...,workdir=...`
(Documentation/filesystems/overlayfs.rst). A read-only rootfs is the same overlay mounted MS_RDONLY:
that works for any number of layers, where an overlay without an upper dir needs at least two lower dirs.
`index=off` is passed when the kernel knows the option (as containerd does), so an upper dir can be
mounted again over the same layers after a restart whatever the kernel's default is.

The mount data of mount(2) is at most one page (4096 bytes). When the options with absolute paths do not
fit, the lower dirs (which the store keeps side by side under one `layers/` dir) are given relative to
that dir, and the mount is made by a forked child that chdir's there first: the working directory is
process-wide and the daemon is threaded, so the parent never changes its own. With the store's 64-hex
layer names that allows about 60 layers.

An image volume (CRI `Mount.image`, KEP-4639) is the same layers with no upper dir, read-only:
`mount_image_volume` makes an overlay of lower dirs only (it needs two or more) or, for a one-layer
image, a read-only bind of the layer, as containerd's overlay snapshotter does for a one-parent view.
`resolve_in_root` finds an `image_sub_path` in it with every symlink resolved as if the volume were `/`
(what filepath-securejoin does for runc and CRI-O), so no path leads out of the image.

This module never decides which layers an image has, nor where a container's dirs live.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime import mount as mnt

log = logging.getLogger(__name__)

MOUNT_DATA_MAX = 4096  # one page, including the terminating NUL
_INDEX_PARAM = Path("/sys/module/overlay/parameters/index")
_FORBIDDEN = (",", ":", "\\")


def overlay_options(lower: list[str], upper: str, work: str, *, index_off: bool) -> str:
    """The overlay mount data (pure). Lower dirs are given top first."""
    for p in [*lower, upper, work]:
        if not p or any(c in p for c in _FORBIDDEN):
            raise InvalidArgument(f"overlay path {p!r} is empty or contains ',', ':' or '\\\\'")
    opts = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    return opts + ",index=off" if index_off else opts


def _index_option_known() -> bool:
    return _INDEX_PARAM.exists()


@dataclass
class Idmap:
    """A pod's user namespace for its containers' rootfs: the pinned namespace and the host ids of the
    container's root."""

    userns: str
    root_uid: int
    root_gid: int


def mount_rootfs(
    lower_dirs: list[Path],
    upper: Path,
    work: Path,
    target: Path,
    readonly: bool = False,
    idmap: Idmap | None = None,
) -> None:
    """Mount the overlay of `lower_dirs` (TOP layer first) with `upper`/`work` on `target`.

    `upper`, `work` and `target` are made if missing; `upper` and `work` must be on one filesystem.

    With `idmap` (a pod in its own user namespace) the layers are seen through idmapped mounts of them
    (MOUNT_ATTR_IDMAP), so files the image gives to root show as the namespace's root; this kernel's
    overlayfs takes idmapped layers but cannot itself be idmapped, and an idmapped upper dir fails (the
    mounter's host root is unmapped there), so the upper dir instead belongs to the container's root on
    the host, which is what new files get anyway. The idmapped layer mounts are staged in `work`'s parent
    and detached once the overlay holds them (it keeps private clones): nothing outlives this call but
    the overlay itself.
    """
    if not lower_dirs:
        raise InvalidArgument("an overlay rootfs needs at least one layer")
    if idmap is not None:
        upper.mkdir(parents=True, exist_ok=True)
        os.chown(upper, idmap.root_uid, idmap.root_gid)
        staging = work.parent / "idmapped"
        staged: list[Path] = []
        try:
            for i, layer in enumerate(lower_dirs):
                where = staging / str(i)
                where.mkdir(parents=True, exist_ok=True)
                mnt.mount(os.path.abspath(layer), str(where), None, mnt.MS_BIND)
                staged.append(where)
                mnt.idmap_mount(str(where), idmap.userns)
            mount_rootfs(staged, upper, work, target, readonly)
        finally:
            for where in staged:
                mnt.umount(str(where), mnt.MNT_DETACH)
            shutil.rmtree(staging, ignore_errors=True)
        return
    lowers = [os.path.abspath(p) for p in lower_dirs]
    for p in lowers:
        if not os.path.isdir(p):
            raise InvalidArgument(f"layer dir {p} does not exist")
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    upper_s, work_s, target_s = (os.path.abspath(p) for p in (upper, work, target))
    flags = mnt.MS_RDONLY if readonly else 0
    index_off = _index_option_known()
    data = overlay_options(lowers, upper_s, work_s, index_off=index_off)
    if len(data) < MOUNT_DATA_MAX:
        mnt.mount("overlay", target_s, "overlay", flags, data)
        return
    parent = os.path.dirname(lowers[0])
    if any(os.path.dirname(p) != parent for p in lowers):
        raise InvalidArgument(
            f"overlay options are {len(data)} bytes (limit {MOUNT_DATA_MAX}) and the layers do not share a "
            "parent dir to shorten them"
        )
    short = overlay_options([os.path.basename(p) for p in lowers], upper_s, work_s, index_off=index_off)
    if len(short) >= MOUNT_DATA_MAX:
        raise InvalidArgument(f"too many layers for one overlay mount ({len(lowers)}: {len(short)} bytes)")
    log.debug("overlay on %s: %d layers, options relative to %s", target_s, len(lowers), parent)
    _mount_in_child(parent, target_s, flags, short)


def lower_only_options(lower: list[str], *, index_off: bool) -> str:
    """The mount data of a read-only overlay of `lower` (top first, at least two) (pure)."""
    if len(lower) < 2:
        raise InvalidArgument("an overlay without an upper dir needs at least two layers")
    for p in lower:
        if not p or any(c in p for c in _FORBIDDEN):
            raise InvalidArgument(f"overlay path {p!r} is empty or contains ',', ':' or '\\\\'")
    opts = f"lowerdir={':'.join(lower)}"
    return opts + ",index=off" if index_off else opts


def mount_image_volume(lower_dirs: list[Path], target: Path) -> None:
    """Mount an image's layers (TOP layer first) read-only on `target` (made if missing): an overlay of
    the lower dirs only, or a read-only bind of the one layer of a one-layer image."""
    if not lower_dirs:
        raise InvalidArgument("an image volume needs at least one layer")
    lowers = [os.path.abspath(p) for p in lower_dirs]
    for p in lowers:
        if not os.path.isdir(p):
            raise InvalidArgument(f"layer dir {p} does not exist")
    target.mkdir(parents=True, exist_ok=True)
    target_s = os.path.abspath(target)
    if len(lowers) == 1:
        mnt.mount(lowers[0], target_s, None, mnt.MS_BIND)
        try:  # a bind takes MS_RDONLY only on a remount
            mnt.mount("none", target_s, None, mnt.MS_REMOUNT | mnt.MS_BIND | mnt.MS_RDONLY)
        except BaseException:
            mnt.umount(target_s, mnt.MNT_DETACH)
            raise
        return
    index_off = _index_option_known()
    data = lower_only_options(lowers, index_off=index_off)
    if len(data) < MOUNT_DATA_MAX:
        mnt.mount("overlay", target_s, "overlay", mnt.MS_RDONLY, data)
        return
    parent = os.path.dirname(lowers[0])
    short = lower_only_options([os.path.basename(p) for p in lowers], index_off=index_off)
    if any(os.path.dirname(p) != parent for p in lowers) or len(short) >= MOUNT_DATA_MAX:
        raise InvalidArgument(f"too many layers for one overlay mount ({len(lowers)}: {len(data)} bytes)")
    _mount_in_child(parent, target_s, mnt.MS_RDONLY, short)


MAX_SYMLINKS = 40  # the kernel's limit on symlinks in one path walk (MAXSYMLINKS)


def resolve_in_root(root: Path, sub_path: str, field: str) -> Path:
    """The directory `sub_path` names inside `root`, every symlink on the way resolved as if `root`
    were `/` and `..` stopping at `root`, so the answer never leaves it. Safe against races only where
    nothing else can change the tree under `root` (a read-only image volume).

    Raises InvalidArgument naming `field` when the path is missing or is not a directory."""
    pending = [p for p in sub_path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            path = os.path.join(root, *resolved, name)
            if stat.S_ISLNK(os.lstat(path).st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise InvalidArgument(f"{field}: {sub_path!r}: too many levels of symbolic links")
                link = os.readlink(path)
                if link.startswith("/"):
                    resolved = []
                pending = [p for p in link.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(name)
        final = os.path.join(root, *resolved)
        if not stat.S_ISDIR(os.lstat(final).st_mode):
            raise InvalidArgument(f"{field}: {sub_path!r} is not a directory in the image")
    except (FileNotFoundError, NotADirectoryError) as e:
        raise InvalidArgument(f"{field}: {sub_path!r} does not exist in the image") from e
    return Path(final)


def _mount_in_child(cwd: str, target: str, flags: int, data: str) -> None:
    """mount(2) from a forked child whose cwd is `cwd`, so relative lowerdir paths resolve there."""
    cwd_b, target_b, data_b = os.fsencode(cwd), os.fsencode(target), data.encode()
    pid = os.fork()
    if pid == 0:  # child: only syscalls, then _exit (no Python cleanup, no locks of other threads)
        code = 255
        try:
            os.chdir(cwd_b)
            code = mnt.mount_raw(b"overlay", target_b, b"overlay", flags, data_b)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 255:
        raise RuntimeFailure(f"mount overlay on {target}: the mount helper could not chdir to {cwd}")
    if code != 0:
        raise mnt.MountError(f"mount overlay on {target} (from {cwd}): {mnt._describe(code)}", code)


def unmount_rootfs(target: Path) -> None:
    """Unmount the rootfs at `target`; nothing to do when it is not mounted. Busy mounts are detached
    lazily (they go once their last user does), so this never fails because a process still holds one."""
    path = os.path.abspath(target)
    for _ in range(16):  # a target can carry stacked mounts; take them all
        try:
            if not mnt.umount(path, mnt.UMOUNT_NOFOLLOW):
                return
        except mnt.MountError as e:
            if e.errno != 16:  # EBUSY
                raise
            log.info("rootfs %s is busy, detaching it lazily", path)
            if not mnt.umount(path, mnt.UMOUNT_NOFOLLOW | mnt.MNT_DETACH):
                return
    raise RuntimeFailure(f"umount {path}: still mounted after 16 unmounts")
