"""The run dir in memory: what the runtime keeps there must never reach a disk.

The run dir holds what a reboot ends: pause's namespace pins, the containers' bundles (their config.json
carries the environment, a Secret's values among it), runc's state (a copy of that config), and the
environment part of the container records (`state.RecordStore`'s volatile field). /run is a tmpfs on most
hosts. Where the run dir is on a disk, the runtime mounts a tmpfs of its own there at its first start
(an empty directory only: a run dir that already holds state is never hidden, and gets a warning
instead), and unmounts it when it stops with no pod left. A marker file names the tmpfs as the
runtime's, so one an operator mounted is left alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from podhost import linux
from podhost.runtime import mount

log = logging.getLogger(__name__)

MARKER = ".podhost-tmpfs"


def keep_in_memory(run_dir: Path) -> bool:
    """Make sure `run_dir` is on a tmpfs, mounting one if it is an empty directory on a disk. True when
    it is (already, or now)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if linux.fstype_of(str(run_dir)) == "tmpfs":
        return True
    if any(run_dir.iterdir()):
        log.warning(
            "run dir %s is on a disk and already holds state, so it stays there: containers' environments"
            " (a Secret's values among them) reach that disk; stop its pods and restart the daemon, or point"
            " run_dir at a tmpfs",
            run_dir,
        )
        return False
    # No nosuid/nodev: runc's read-only re-binds of the pod's hosts/hostname/resolv.conf in a pod with its
    # own user namespace may not drop flags the parent mount locks (EPERM); plain /run has none either.
    mount.mount("tmpfs", str(run_dir), "tmpfs", 0, "mode=0755")
    (run_dir / MARKER).touch(mode=0o600)
    log.info("run dir %s: on a tmpfs of the runtime's own (the directory is on a disk)", run_dir)
    return True


def release(run_dir: Path) -> None:
    """Unmount the runtime's own tmpfs at `run_dir` once no pod is left (nothing may be mounted below it:
    a pin, a pod's shm or a rootfs still there keeps it, with a warning)."""
    if not (run_dir / MARKER).exists() or not mount.is_mountpoint(str(run_dir)):
        return
    below = [p for p in linux.mount_points() if p.startswith(str(run_dir) + "/")]
    if below:
        log.warning("run dir %s kept mounted: %s still mounted below it", run_dir, below[:3])
        return
    mount.umount(str(run_dir), mount.MNT_DETACH)
