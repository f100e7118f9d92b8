"""Pure parts of the image layer: deterministic layer packing, config/manifest bytes, overlay options."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.image import build
from podhost.runtime.image.archive import sha256_digest
from podhost.runtime.image.rootfs import overlay_options


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    import shutil

    root = Path(tempfile.mkdtemp(prefix="ph-image-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


def test_busybox_layer_is_deterministic_and_matches_the_rootfs_on_disk(tmp_root: Path) -> None:
    a = build.tar_entries(build.busybox_entries())
    b = build.tar_entries(build.busybox_entries())
    assert a == b
    on_disk = build.layer_tar(build.busybox_rootfs(tmp_root / "rootfs"))
    assert on_disk == a, "busybox_rootfs + layer_tar must give the same bytes as the in-memory packing"

    with tarfile.open(fileobj=io.BytesIO(a)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: tuple(c.encode() for c in n.split("/")))
    by_name = {m.name: m for m in members}
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    assert by_name["tmp"].mode == 0o1777
    assert by_name["root"].mode == 0o700
    assert by_name["bin/busybox"].isreg() and by_name["bin/busybox"].mode == 0o755
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "busybox"
    assert "bin/httpd" in by_name and "bin/busybox" in by_name
    for d in ("proc", "sys", "dev", "etc", "var/www"):
        assert by_name[d].isdir()
    with tarfile.open(fileobj=io.BytesIO(a)) as tf:
        passwd = tf.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        html = tf.extractfile("var/www/index.html").read()  # type: ignore[union-attr]
    assert "root:x:0:0:" in passwd and "nobody:x:65534:65534:" in passwd and "www-data:x:33:33:" in passwd
    assert html


def test_layer_tar_keeps_modes_and_hardlinks(tmp_root: Path) -> None:
    root = tmp_root / "r"
    (root / "d").mkdir(parents=True)
    (root / "d" / "suid").write_bytes(b"x")
    (root / "d" / "suid").chmod(0o4755)
    (root / "d" / "link").hardlink_to(root / "d" / "suid")
    with tarfile.open(fileobj=io.BytesIO(build.layer_tar(root))) as tf:
        m = {x.name: x for x in tf.getmembers()}
    # "link" sorts before "suid", so it carries the content and "suid" is the hardlink to it.
    assert m["d/link"].isreg() and m["d/link"].mode == 0o4755
    assert m["d/suid"].islnk() and m["d/suid"].linkname == "d/link"


def test_config_and_manifest_are_stable() -> None:
    layer = build.tar_entries([build.Entry("a", tarfile.REGTYPE, 0o644, data=b"hi")])
    diff_id = sha256_digest(layer)
    cfg = build.config_json([diff_id], cmd=["sh"], user="65535:65535", exposed_ports=["80/tcp"])
    assert cfg == build.config_json([diff_id], cmd=["sh"], user="65535:65535", exposed_ports=["80/tcp"])
    doc = json.loads(cfg)
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert doc["config"]["Cmd"] == ["sh"] and doc["config"]["User"] == "65535:65535"
    assert doc["config"]["Env"] == build.DEFAULT_ENV
    assert doc["config"]["ExposedPorts"] == {"80/tcp": {}}
    manifest = json.loads(build.manifest_json(cfg, [layer]))
    assert manifest["config"]["digest"] == sha256_digest(cfg)
    assert manifest["layers"][0]["digest"] == diff_id  # uncompressed: digest == diff_id


def test_overlay_options() -> None:
    opts = overlay_options(["/l/top", "/l/bottom"], "/c/upper", "/c/work", index_off=True)
    assert opts == "lowerdir=/l/top:/l/bottom,upperdir=/c/upper,workdir=/c/work,index=off"
    assert "index" not in overlay_options(["/a"], "/u", "/w", index_off=False)
    for bad in ("/a:b", "/a,b", "/a\\b", ""):
        with pytest.raises(InvalidArgument):
            overlay_options([bad], "/u", "/w", index_off=False)
