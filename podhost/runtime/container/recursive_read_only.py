"""Recursive read-only mounts (CRI `Mount.recursive_read_only`) for an OCI runtime that has no "rro".

CRI asks for the mount *and every submount* read-only; a plain read-only bind leaves the submounts
writable. runc 1.2 does it itself (the "rro" mount option, mount_setattr(AT_RECURSIVE)); Debian's runc 1.1
does not. So podhost prepares each such mount before `<runtime> create`, the way that option works:

1. a recursive bind of the host path onto a staging point in the container's bundle
   (`<bundle>/rro/<mount index>`), in podhost's own mount namespace;
2. mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY) on that copy: the flag is per mount, so only the copy's
   mounts become read-only, never the host path's own;
3. the OCI spec binds the staging point (`rbind`, `ro`) instead of the host path: a bind copies each
   mount's flags, so every submount stays read-only in the container.

Undo (a failed create, RemoveContainer, recovery): a lazy unmount of each staging point, which detaches
its whole tree, then the point itself goes. This module never mounts or unmounts outside `<bundle>/rro`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from podhost.runtime import mount

STAGING_DIR = "rro"


@functools.cache
def supported() -> bool:
    """Whether podhost can make recursive read-only mounts here (CRI `features.recursive_read_only_mounts`):
    mount_setattr(2), Linux 5.12 and later."""
    return mount.mount_setattr_supported()


def staging_point(bundle: Path, index: int) -> Path:
    """Where `ContainerConfig.mounts[index]` is prepared: the source the OCI spec binds."""
    return bundle / STAGING_DIR / str(index)


def stage(host_path: str, where: Path) -> None:
    """Make `where` a read-only copy of the tree at `host_path` (steps 1 and 2 above). On failure nothing
    stays mounted; the caller removes `where` with `unstage_all`."""
    where.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(host_path):
        where.mkdir(exist_ok=True)
    else:  # a file bind (or a path that does not exist, which the bind then reports)
        where.touch(exist_ok=True)
    mount.mount(host_path, str(where), None, mount.MS_BIND | mount.MS_REC)
    try:
        mount.make_readonly_recursive(str(where))
    except BaseException:
        mount.umount(str(where), mount.MNT_DETACH)
        raise


def stage_idmapped(host_path: str, where: Path, userns: str) -> None:
    """Make `where` a copy of the mount tree's top at `host_path` seen through the pod's user namespace
    (pinned at `userns`): a volume of a pod with its own user namespace, whose files the host's root owns,
    shows them owned by the pod's root, and what the pod's root writes lands as the host's root (as
    runc 1.2 does for CRI mounts with uid/gid mappings). The same staging point and undo as above."""
    where.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(host_path):
        where.mkdir(exist_ok=True)
    else:
        where.touch(exist_ok=True)
    mount.mount(host_path, str(where), None, mount.MS_BIND)
    mount.idmap_mount(str(where), userns)  # leaves `where` unmounted on failure


def unstage_all(bundle: Path) -> None:
    """Unmount and remove every staging point of the bundle (idempotent). Lazy and recursive: the
    submounts go with their top, and a container still holding a copy keeps its own."""
    staging = bundle / STAGING_DIR
    if not staging.is_dir():
        return
    for where in sorted(staging.iterdir()):
        while mount.umount(str(where), mount.MNT_DETACH | mount.UMOUNT_NOFOLLOW):
            pass  # a point staged twice (a retried step) is stacked: take every layer
        if where.is_dir() and not where.is_symlink():
            where.rmdir()
        else:
            where.unlink(missing_ok=True)
    staging.rmdir()
