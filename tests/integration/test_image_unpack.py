"""Layer extraction on a real filesystem: hostile tars refused with nothing left behind, whiteouts turned
into overlay objects, owners/modes/mtimes/xattrs kept. Needs root (chown, mknod, trusted.* xattrs)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from podhost.errors import InvalidArgument
from podhost.runtime.image import build
from podhost.runtime.image.archive import ImageBlobs, sha256_digest, write_oci_archive
from podhost.runtime.image.store import ImageStore
from podhost.runtime.image.unpack import OVERLAY_OPAQUE_XATTR, unpack_layer

pytestmark = pytest.mark.root


@dataclass
class E:
    """A tar entry to craft (hostile ones included)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    dev: tuple[int, int] = (0, 0)
    pax: dict[str, str] = field(default_factory=dict)


def make_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.linkname = e.linkname
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.devmajor, info.devminor = e.dev
            info.pax_headers = dict(e.pax)
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def image_of(layer: bytes, name: str = "localhost/test/hostile:1") -> ImageBlobs:
    """An image whose config and manifest are honest about `layer`: only its content can be refused."""
    diff_id = sha256_digest(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer)
    config = build.config_json([diff_id], cmd=["sh"])
    return ImageBlobs(config, [layer], [name], build.manifest_json(config, [layer]))


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ph-image-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


def store_leftovers(store: ImageStore) -> list[str]:
    """Everything in the store but its two lock files and its empty skeleton."""
    found = []
    for path in sorted(store.root.rglob("*")):
        rel = str(path.relative_to(store.root))
        if rel in ("alive.lock", "index.lock", "blobs", "blobs/sha256", "layers", "tmp"):
            continue
        if rel == "index.json" and not store.list():
            continue
        found.append(rel)
    return found


def hostile_cases(outside: Path) -> dict[str, tuple[list[E], str]]:
    """name -> (entries, the entry the error must name). `outside` is a dir of the test's own: every
    escape below aims there (or at a path that does not exist) rather than at a real host file."""
    out = str(outside)
    return {
        "dotdot": ([E("ok"), E("../x", data=b"pwned")], "../x"),
        "dotdot-deep": ([E("a/b/../../../x", data=b"pwned")], "a/b/../../../x"),
        "absolute": ([E(f"{out}/x", data=b"pwned")], f"{out}/x"),
        "absolute-etc": ([E("/etc/x", data=b"pwned")], "/etc/x"),
        # `a -> /` then a write below it: the classic escape (aimed at the test's dir, not /etc/passwd).
        "symlink-root": (
            [E("a", tarfile.SYMTYPE, linkname="/"), E(f"a{out}/passwd", data=b"pwned")],
            f"a{out}/passwd",
        ),
        "symlink-root-etc": (
            [E("a", tarfile.SYMTYPE, linkname="/"), E("a/etc/ph-image-never", data=b"pwned")],
            "a/etc/ph-image-never",
        ),
        "symlink-up": ([E("a", tarfile.SYMTYPE, linkname="../../.."), E("a/x", data=b"pwned")], "a/x"),
        "symlink-outside-dir": ([E("a", tarfile.SYMTYPE, linkname=out), E("a/x", data=b"pwned")], "a/x"),
        # Nothing is written through a symlink, even one that stays inside the layer.
        "symlink-inside": (
            [
                E("usr/lib", tarfile.DIRTYPE, mode=0o755),
                E("lib", tarfile.SYMTYPE, linkname="usr/lib"),
                E("lib/x", data=b"x"),
            ],
            "lib/x",
        ),
        "dir-replaced-by-symlink": (
            [
                E("d", tarfile.DIRTYPE, mode=0o755),
                E("d/f"),
                E("d", tarfile.SYMTYPE, linkname=out),
                E("d/x", data=b"pwned"),
            ],
            "d/x",
        ),
        "symlink-then-dir-entry": (
            [E("a", tarfile.SYMTYPE, linkname=out), E("a/sub", tarfile.DIRTYPE, mode=0o755)],
            "a/sub",
        ),
        "hardlink-dotdot": ([E("h", tarfile.LNKTYPE, linkname="../../etc/passwd")], "h"),
        "hardlink-absolute": ([E("h", tarfile.LNKTYPE, linkname="/etc/passwd")], "h"),
        "hardlink-through-symlink": (
            [E("a", tarfile.SYMTYPE, linkname="/etc"), E("h", tarfile.LNKTYPE, linkname="a/passwd")],
            "h",
        ),
        "hardlink-missing": ([E("h", tarfile.LNKTYPE, linkname="nope")], "h"),
        "char-device": ([E("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))], "dev/null"),
        "block-device": ([E("dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0))], "dev/sda"),
        "whiteout-dotdot": ([E("a/.wh..."), E("x")], "a/.wh..."),
        "whiteout-through-symlink": (
            [E("a", tarfile.SYMTYPE, linkname=out), E("a/.wh.victim")],
            "a/.wh.victim",
        ),
    }


CASES = list(hostile_cases(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_layer_is_refused_and_leaves_nothing(tmp_root: Path, case: str) -> None:
    outside = tmp_root / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    entries, bad_entry = hostile_cases(outside)[case]
    archive = tmp_root / "hostile.tar"
    write_oci_archive(archive, [image_of(make_tar(entries))])
    passwd_before = Path("/etc/passwd").read_bytes()

    with ImageStore(tmp_root / "images") as store:
        with pytest.raises(InvalidArgument) as err:
            store.import_archive(archive)
        assert repr(bad_entry) in str(err.value), str(err.value)
        assert store.list() == []
        assert store_leftovers(store) == []
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == "untouched"
    assert sorted(p.name for p in tmp_root.iterdir()) == ["hostile.tar", "images", "outside"]
    assert not Path("/etc/x").exists() and not Path("/etc/ph-image-never").exists()
    assert Path("/etc/passwd").read_bytes() == passwd_before


def test_whiteouts_become_overlay_objects(tmp_root: Path) -> None:
    layer = make_tar(
        [
            E("etc", tarfile.DIRTYPE, mode=0o755),
            E("etc/.wh.passwd"),
            E("usr/.wh..wh..opq"),  # before its directory's own entry: order must not matter
            E("usr", tarfile.DIRTYPE, mode=0o755),
            E("usr/local", tarfile.DIRTYPE, mode=0o755),
            E("kept", data=b"mine"),
            E(".wh.kept"),  # the same layer's entry wins over its whiteout
            E(".wh.later"),
            E("later", data=b"replaces the whiteout"),
            E(".wh..wh.plnk"),  # aufs metadata: ignored
            E("opq-root/.wh..wh..opq"),
        ]
    )
    dest = tmp_root / "layer"
    info = unpack_layer(layer, dest)
    assert info.diff_id == info.digest == sha256_digest(layer)

    st = os.lstat(dest / "etc" / "passwd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "usr", OVERLAY_OPAQUE_XATTR) == b"y"
    assert os.getxattr(dest / "opq-root", OVERLAY_OPAQUE_XATTR) == b"y"
    assert (dest / "usr" / "local").is_dir()
    assert (dest / "kept").read_bytes() == b"mine"
    assert (dest / "later").read_bytes() == b"replaces the whiteout"
    assert not [p for p in dest.rglob(".wh.*")]
    with pytest.raises(OSError):
        os.getxattr(dest / "etc", OVERLAY_OPAQUE_XATTR)


def test_attributes_are_preserved(tmp_root: Path) -> None:
    layer = make_tar(
        [
            E("d", tarfile.DIRTYPE, mode=0o1750, uid=33, gid=34, mtime=999),
            E("d/suid", data=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=2000, mtime=12345),
            E("d/hard", tarfile.LNKTYPE, linkname="d/suid"),
            E("abs", tarfile.SYMTYPE, linkname="/etc/passwd", uid=5, gid=6, mtime=777),
            E("rel", tarfile.SYMTYPE, linkname="../../../../nowhere"),
            E("fifo", tarfile.FIFOTYPE, mode=0o640, uid=7, gid=8),
            E(
                "x",
                data=b"x",
                pax={"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.overlay.opaque": "y"},
            ),
            E("implicit/parent/file", data=b"f"),
            E("./dotslash//name", data=b"n"),
        ]
    )
    dest = tmp_root / "layer"
    info = unpack_layer(layer, dest)
    assert info.size == len(b"#!/bin/sh\n") + 1 + 1 + 1

    d = os.lstat(dest / "d")
    assert (stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid, d.st_mtime) == (0o1750, 33, 34, 999)
    f = os.lstat(dest / "d" / "suid")
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid, f.st_mtime) == (0o4755, 1000, 2000, 12345)
    assert os.lstat(dest / "d" / "hard").st_ino == f.st_ino
    s = os.lstat(dest / "abs")
    assert stat.S_ISLNK(s.st_mode) and os.readlink(dest / "abs") == "/etc/passwd"
    assert (s.st_uid, s.st_gid, s.st_mtime) == (5, 6, 777)
    assert os.readlink(dest / "rel") == "../../../../nowhere"
    fifo = os.lstat(dest / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and (fifo.st_uid, fifo.st_gid) == (7, 8)
    assert os.getxattr(dest / "x", "user.note") == b"hello"
    with pytest.raises(OSError):
        os.getxattr(dest / "x", OVERLAY_OPAQUE_XATTR)  # a layer never sets trusted.* itself
    assert (dest / "implicit" / "parent" / "file").read_bytes() == b"f"
    assert (dest / "dotslash" / "name").read_bytes() == b"n"


def test_later_entries_replace_earlier_ones(tmp_root: Path) -> None:
    layer = make_tar(
        [
            E("a", data=b"first"),
            E("a", data=b"second"),
            E("d", tarfile.DIRTYPE, mode=0o755),
            E("d/inner", data=b"x"),
            E("d", data=b"now a file"),
            E("s", tarfile.SYMTYPE, linkname="/x"),
            E("s", tarfile.DIRTYPE, mode=0o700),
            E("s/in", data=b"in a real dir"),
        ]
    )
    dest = tmp_root / "layer"
    unpack_layer(layer, dest)
    assert (dest / "a").read_bytes() == b"second"
    assert (dest / "d").read_bytes() == b"now a file"
    assert (dest / "s").is_dir() and not (dest / "s").is_symlink()
    assert (dest / "s" / "in").read_bytes() == b"in a real dir"


def test_gzip_layer_digests(tmp_root: Path) -> None:
    plain = make_tar([E("hello", data=b"world" * 1000)])
    blob = gzip.compress(plain, mtime=0)
    info = unpack_layer(
        blob, tmp_root / "layer", expected_digest=sha256_digest(blob), expected_diff_id=sha256_digest(plain)
    )
    assert info.media_type.endswith("+gzip")
    assert (info.digest, info.diff_id) == (sha256_digest(blob), sha256_digest(plain))
    assert (tmp_root / "layer" / "hello").read_bytes() == b"world" * 1000


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not a tar at all" * 100,
        make_tar([E("big", data=b"z" * 100_000)])[:5000],  # truncated in the middle of a file
        gzip.compress(make_tar([E("f", data=b"x")]))[:-12],  # truncated gzip
        b"\x28\xb5\x2f\xfd" + b"\0" * 600,  # zstd's magic, then garbage
        zstandard.ZstdCompressor().compress(make_tar([E("big", data=b"z" * 100_000)]))[:-20],  # truncated
    ],
    ids=["empty", "garbage", "truncated-tar", "truncated-gzip", "garbage-zstd", "truncated-zstd"],
)
def test_malformed_layer_is_refused_and_cleaned(tmp_root: Path, blob: bytes) -> None:
    with pytest.raises(InvalidArgument):
        unpack_layer(blob, tmp_root / "layer")
    assert list(tmp_root.iterdir()) == []


def test_digest_mismatch_is_refused_and_cleaned(tmp_root: Path) -> None:
    layer = make_tar([E("f", data=b"x")])
    with pytest.raises(InvalidArgument, match="diff_id mismatch"):
        unpack_layer(layer, tmp_root / "layer", expected_diff_id="sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        unpack_layer(layer, tmp_root / "layer", expected_digest="sha256:" + "0" * 64)
    assert list(tmp_root.iterdir()) == []


def test_zstd_layers_unpack_with_both_digests(tmp_root: Path) -> None:
    """OCI's tar+zstd, several frames as zstd:chunked writes them: digest of the blob, diff_id of the tar."""
    tar = make_tar(
        [E("etc", tarfile.DIRTYPE), E("etc/motd", data=b"hello zstd\n"), E("big", data=b"q" * 300_000)]
    )
    half = len(tar) // 2
    blob = zstandard.ZstdCompressor().compress(tar[:half]) + zstandard.ZstdCompressor().compress(tar[half:])
    info = unpack_layer(blob, tmp_root / "layer")
    assert (tmp_root / "layer" / "etc" / "motd").read_bytes() == b"hello zstd\n"
    assert (tmp_root / "layer" / "big").stat().st_size == 300_000
    assert info.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert info.digest == sha256_digest(blob) and info.diff_id == sha256_digest(tar)


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_sparse_entries_unpack_to_their_content(tmp_path: Path, tar_format: str) -> None:
    """A sparse file (GNU tar --sparse: old GNU 'S' entries, or PAX 1.0 sparse maps) holds its data at
    the map's offsets and zeros between: its entries are read through tarfile's map, not as plain data."""
    src = tmp_path / "src"
    src.mkdir()
    holes = src / "holes"
    with open(holes, "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"middle" * 1000)
        f.seek((3 << 20) - 6)
        f.write(b"ending")
    (src / "after").write_bytes(b"the next entry")
    archive = tmp_path / "layer.tar"
    subprocess.run(
        ["tar", f"--format={tar_format}", "--sparse", "-cf", str(archive), "-C", str(src), "holes", "after"],
        check=True,
    )
    with tarfile.open(archive) as tf:
        assert tf.getmember("holes").issparse()  # the archive really has a sparse entry
    dest = tmp_path / "out"
    unpack_layer(io.BytesIO(archive.read_bytes()), dest)
    assert (dest / "holes").read_bytes() == holes.read_bytes()
    assert (dest / "after").read_bytes() == b"the next entry"
