"""The kubelet's atomic writer (pkg/volume/util/atomic_writer.go): a config volume's files, swapped whole.

Layout of a volume directory written here (what a container sees, and what `ls -la` shows upstream):

    ..2026_11_30_07_41_02.1234567890/    the payload, one timestamped directory per version
    ..data -> ..2026_11_30_07_41_02.1234567890
    key -> ..data/key                     one symlink per top-level path of the payload

An update writes the new payload into a new timestamped directory, points a `..data_tmp` symlink at it
and renames that over `..data` (rename(2) is atomic), so a reader that opens `key` sees the old version or
the new one, never a mix. Then the top-level symlinks the new payload needs are made, the old directory is
removed, and the symlinks of paths the payload no longer has are removed. A payload equal to what is
there (paths, content, modes) writes nothing.

A subPath mount binds the file that `key` resolves to at container creation; an update makes a new
directory and so never reaches it, as upstream.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DATA = "..data"
DATA_TMP = "..data_tmp"


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int


class PayloadError(ValueError):
    """A path of the payload that may not be written (absolute, `..`, or starting with `..`)."""


def validate_path(path: str) -> None:
    if not path:
        raise PayloadError("invalid path: must not be empty")
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        raise PayloadError(f"invalid path: {path!r}: must be relative and may not contain '..'")
    if path.startswith(".."):
        raise PayloadError(f"invalid path: {path!r}: must not start with '..'")
    if len(path) > 4096 or any(len(p) > 255 for p in parts):
        raise PayloadError(f"invalid path: {path!r}: too long")


def _clean(payload: dict[str, FileProjection]) -> dict[str, FileProjection]:
    out = {}
    for path, projection in payload.items():
        validate_path(path)
        out[str(PurePosixPath(path))] = projection
    return out


def _top_level(paths: list[str]) -> set[str]:
    return {PurePosixPath(p).parts[0] for p in paths}


def current_payload(target: Path) -> dict[str, FileProjection] | None:
    """What `..data` holds now (None: nothing written yet)."""
    data = target / DATA
    if not data.is_symlink():
        return None
    found = {}
    root = target / os.readlink(data)
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.lstat()
            found[str(path.relative_to(root))] = FileProjection(path.read_bytes(), st.st_mode & 0o7777)
    return found


def _timestamped_dir(target: Path) -> Path:
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    path = target / f"..{stamp}.{secrets.randbelow(10**10):010d}"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)  # the umask must not decide what the container may read
    return path


def write(target: Path, payload: dict[str, FileProjection], gid: int | None = None) -> bool:
    """Make `target` hold exactly `payload` (path -> content and mode), atomically; True when anything
    changed. `target` is made if missing; raises PayloadError for a path that may not be written. With
    `gid` (the pod's fsGroup) the new files and directories belong to that group."""
    payload = _clean(payload)
    target.mkdir(parents=True, exist_ok=True)
    old = current_payload(target)
    if old == payload:
        return False
    old_dir = os.readlink(target / DATA) if old is not None else ""
    new_dir = _timestamped_dir(target)
    try:
        for path, projection in payload.items():
            file = new_dir / path
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, projection.data)
                if gid is not None:
                    os.fchown(fd, -1, gid)
                os.fchmod(fd, projection.mode)
            finally:
                os.close(fd)
        if gid is not None:
            for directory in [new_dir, *(p for p in new_dir.rglob("*") if p.is_dir())]:
                os.chown(directory, -1, gid)
        tmp = target / DATA_TMP
        tmp.unlink(missing_ok=True)
        os.symlink(new_dir.name, tmp)
        os.rename(tmp, target / DATA)  # the swap: readers see the old payload or the new one
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    wanted = _top_level(list(payload))
    for name in sorted(wanted):
        link = target / name
        if not link.is_symlink():
            os.symlink(f"{DATA}/{name}", link)
    if old_dir:
        shutil.rmtree(target / old_dir, ignore_errors=True)
    for name in sorted(_top_level(list(old or {})) - wanted):
        (target / name).unlink(missing_ok=True)
    return True
