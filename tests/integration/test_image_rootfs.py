"""Overlay rootfs from stored images: busybox runs in it via chroot, whiteouts hide lower files, read-only
mounts refuse writes, long option strings still mount, and nothing stays mounted."""

from __future__ import annotations

import errno
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost import linux
from podhost.errors import InvalidArgument
from podhost.runtime import mount as mnt
from podhost.runtime.image import build
from podhost.runtime.image.archive import sha256_digest
from podhost.runtime.image.rootfs import MOUNT_DATA_MAX, mount_rootfs, overlay_options, unmount_rootfs
from podhost.runtime.image.store import ImageStore

pytestmark = pytest.mark.root


def mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    return [p for p in linux.mount_points() if p == prefix or p.startswith(prefix + "/")]


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ph-image-", dir="/tmp"))
    try:
        yield root
    finally:
        leaked = mounts_under(root)
        for point in reversed(leaked):
            mnt.umount(point, mnt.MNT_DETACH)
        shutil.rmtree(root)
        assert leaked == [], f"mounts left behind: {leaked}"


@pytest.fixture
def store(tmp_root: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_root / "images") as s:
        yield s


def chroot(rootfs: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True, timeout=30)


def test_busybox_runs_in_an_overlay_rootfs(store: ImageStore, tmp_root: Path) -> None:
    busybox = build.ensure_test_images(store)["docker.io/library/busybox:1.28"]
    c = tmp_root / "container"
    target = c / "rootfs"
    mount_rootfs(store.layer_dirs(busybox), c / "upper", c / "work", target)
    try:
        assert mnt.is_mountpoint(str(target))
        done = chroot(target, "/bin/busybox", "true")
        assert done.returncode == 0, done.stderr
        done = chroot(target, "/bin/sh", "-c", "echo hello > /tmp/out && id -un && cat /etc/passwd | wc -l")
        assert done.returncode == 0 and done.stdout.split() == ["root", "3"], done
    finally:
        unmount_rootfs(target)
    assert mounts_under(tmp_root) == []
    assert (c / "upper" / "tmp" / "out").read_text() == "hello\n"  # writes went to the upper dir
    assert not (store.layer_dirs(busybox)[0] / "tmp" / "out").exists()  # never to the layer
    unmount_rootfs(target)  # idempotent
    unmount_rootfs(tmp_root / "never-mounted")


def test_readonly_rootfs(store: ImageStore, tmp_root: Path) -> None:
    busybox = build.ensure_test_images(store)["localhost/podhost/busybox:latest"]
    c = tmp_root / "c"
    mount_rootfs(store.layer_dirs(busybox), c / "upper", c / "work", c / "rootfs", readonly=True)
    try:
        assert chroot(c / "rootfs", "/bin/busybox", "true").returncode == 0
        done = chroot(c / "rootfs", "/bin/busybox", "touch", "/x")
        assert done.returncode != 0 and "Read-only" in done.stderr
    finally:
        unmount_rootfs(c / "rootfs")
    assert list((c / "upper").iterdir()) == []


def test_whiteouts_hide_lower_files_in_the_overlay(store: ImageStore, tmp_root: Path) -> None:
    def entries(files: dict[str, bytes]) -> list[build.Entry]:
        return [build.Entry(n, tarfile.REGTYPE, 0o644, data=d) for n, d in files.items()]

    lower = build.tar_entries(entries({"etc/a": b"a", "etc/b": b"b", "d/old": b"old", "d/sub/old2": b"o"}))
    upper = build.tar_entries(entries({"etc/.wh.a": b"", "d/.wh..wh..opq": b"", "d/new": b"new"}))
    config = build.config_json([sha256_digest(lower), sha256_digest(upper)], cmd=["sh"])
    img = store.add_image(
        build.manifest_json(config, [lower, upper]), config, [lower, upper], ["localhost/t/wh:1"]
    )
    c = tmp_root / "c"
    mount_rootfs(store.layer_dirs(img), c / "upper", c / "work", c / "rootfs")
    try:
        root = c / "rootfs"
        assert sorted(p.name for p in (root / "etc").iterdir()) == ["b"]
        assert sorted(p.name for p in (root / "d").iterdir()) == ["new"]
    finally:
        unmount_rootfs(c / "rootfs")


def make_lower_dirs(parent: Path, count: int) -> list[Path]:
    """`count` layer-like dirs (64-hex names, as the store's) each with its own file and a shared one."""
    dirs = []
    for i in range(count):
        d = parent / (f"{i:04d}" + "a" * 60)
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        (d / "which").write_text(str(i))
        dirs.append(d)
    return list(reversed(dirs))  # top first: the last made is the top


def test_long_overlay_options_mount_through_relative_paths(tmp_root: Path) -> None:
    parent = tmp_root / ("long-" + "p" * 60) / "layers"
    lowers = make_lower_dirs(parent, 50)
    c = tmp_root / "c"
    assert (
        len(overlay_options([str(p) for p in lowers], str(c / "upper"), str(c / "work"), index_off=True))
        > MOUNT_DATA_MAX
    )
    mount_rootfs(lowers, c / "upper", c / "work", c / "rootfs")
    try:
        root = c / "rootfs"
        assert (root / "which").read_text() == "49"  # the top layer wins
        assert all((root / f"f{i}").read_text() == str(i) for i in range(50))
    finally:
        unmount_rootfs(c / "rootfs")


def test_too_many_layers_is_refused_cleanly(tmp_root: Path) -> None:
    lowers = make_lower_dirs(tmp_root / "layers", 80)
    c = tmp_root / "c"
    with pytest.raises(InvalidArgument, match="too many layers"):
        mount_rootfs(lowers, c / "upper", c / "work", c / "rootfs")
    with pytest.raises(InvalidArgument):
        mount_rootfs([], c / "upper", c / "work", c / "rootfs")
    with pytest.raises(InvalidArgument):
        mount_rootfs([tmp_root / "missing"], c / "upper", c / "work", c / "rootfs")


def test_mount_errors_carry_errno(tmp_root: Path) -> None:
    lower = tmp_root / "lower"
    lower.mkdir()
    with pytest.raises(mnt.MountError) as err:  # upper and work nested: the kernel refuses
        mount_rootfs([lower], tmp_root / "u", tmp_root / "u" / "w", tmp_root / "rootfs")
    assert err.value.errno in (errno.EINVAL, errno.ELOOP, errno.EBUSY)
    assert errno.errorcode[err.value.errno] in str(err.value)
