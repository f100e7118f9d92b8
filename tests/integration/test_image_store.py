"""The image store on a real filesystem: OCI-layout and docker-archive import (ours and skopeo's), digest
checks, names, layer sharing and removal, pinning, crash recovery, peers on one root, no mount leaks."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost import linux
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from podhost.runtime.image import build
from podhost.runtime.image.archive import ImageBlobs, sha256_digest, write_docker_archive, write_oci_archive
from podhost.runtime.image.store import ImageStore
from tests.wait import wait_for

pytestmark = pytest.mark.root

TMP_PREFIX = "/tmp/ph-image-"


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below `prefix` (a path prefix, not only a directory), from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ph-image-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


@pytest.fixture
def store(tmp_root: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_root / "images") as s:
        yield s


def layer(files: dict[str, bytes]) -> bytes:
    return build.tar_entries([build.Entry(n, tarfile.REGTYPE, 0o644, data=d) for n, d in files.items()])


def image(
    layers: list[bytes], names: list[str], cmd: list[str] | None = None, gz: bool = False
) -> ImageBlobs:
    """An honest image of `layers` (uncompressed, or gzip in the blobs with `gz`)."""
    diff_ids = [sha256_digest(x) for x in layers]
    blobs = [gzip.compress(x, mtime=0) for x in layers] if gz else layers
    config = build.config_json(diff_ids, cmd=cmd or ["sh"])
    manifest = json.loads(build.manifest_json(config, blobs))
    if gz:
        for d in manifest["layers"]:
            d["mediaType"] += "+gzip"
    return ImageBlobs(config, blobs, names, json.dumps(manifest).encode())


def rewrite_member(archive: Path, name: str, data: bytes) -> None:
    """Replace one member's content, keeping its name (a tampered blob)."""
    with tarfile.open(archive) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(archive, "w") as tf:
        for m, content in members:
            if m.name == name:
                content = data
                m.size = len(data)
            tf.addfile(m, io.BytesIO(content) if content is not None else None)


def leftovers(store: ImageStore) -> list[str]:
    skip = {"alive.lock", "index.lock", "index.json", "blobs", "blobs/sha256", "layers", "tmp"}
    return sorted(
        str(p.relative_to(store.root))
        for p in store.root.rglob("*")
        if str(p.relative_to(store.root)) not in skip
    )


BASE = layer({"etc/os-release": b"ID=podhost\n", "bin/tool": b"tool"})


# --- import ------------------------------------------------------------------------------------------


def test_import_oci_layout(store: ImageStore, tmp_root: Path) -> None:
    top = layer({"app": b"app-v1"})
    blobs = image([BASE, top], ["busybox:1.28", "localhost/x/y:v1"], cmd=["/app"], gz=True)
    archive = tmp_root / "oci.tar"
    write_oci_archive(archive, [blobs])

    (img,) = store.import_archive(archive)
    assert img.id == sha256_digest(blobs.config)
    assert img.repo_tags == ["docker.io/library/busybox:1.28", "localhost/x/y:v1"]
    manifest_digest = sha256_digest(blobs.manifest or b"")
    assert f"docker.io/library/busybox@{manifest_digest}" in img.repo_digests
    assert img.config.cmd == ["/app"] and img.config.env == build.DEFAULT_ENV
    assert img.diff_ids == [sha256_digest(BASE), sha256_digest(top)]
    assert img.size == len(b"ID=podhost\n") + len(b"tool") + len(b"app-v1")
    for ref in (
        "busybox:1.28",
        "docker.io/library/busybox:1.28",
        "localhost/x/y:v1",
        img.id,
        img.id[7:],
        img.id[7:19],
        img.id[:19],
        f"busybox@{manifest_digest}",
    ):
        assert store.get(ref).id == img.id, ref
    assert store.find("busybox") is None and store.find("localhost/x/y") is None
    with pytest.raises(NotFound):
        store.get("busybox:latest")
    dirs = store.layer_dirs(img)
    assert [d.name for d in dirs] == [sha256_digest(top)[7:], sha256_digest(BASE)[7:]]  # top first
    assert (dirs[0] / "app").read_bytes() == b"app-v1"
    assert (dirs[1] / "etc" / "os-release").is_file()
    assert store.manifest_blob(img.id) == blobs.manifest
    assert store.config_blob("busybox:1.28") == blobs.config
    # re-importing is idempotent: same image, same layers, nothing duplicated
    assert [i.id for i in store.import_archive(archive)] == [img.id]
    assert len(store.list()) == 1 and len(list(store.layers_dir.iterdir())) == 2


def test_import_docker_archive(store: ImageStore, tmp_root: Path) -> None:
    blobs = image([BASE, layer({"x": b"x"})], ["example.com/team/app:2", "app"])
    archive = tmp_root / "docker.tar"
    write_docker_archive(archive, [blobs])
    (img,) = store.import_archive(archive)
    assert img.id == sha256_digest(blobs.config)
    assert img.repo_tags == ["example.com/team/app:2", "docker.io/library/app:latest"]
    assert store.get("app").id == img.id
    manifest = json.loads(store.manifest_blob(img.id))  # synthesised: the archive had none
    assert [d["digest"] for d in manifest["layers"]] == img.diff_ids
    assert manifest["config"]["digest"] == img.id


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
def test_import_archives_written_by_skopeo(store: ImageStore, tmp_root: Path) -> None:
    blobs = image([BASE, layer({"app": b"app"})], ["localhost/podhost/interop:1"], gz=True)
    ours = tmp_root / "ours.tar"
    write_oci_archive(ours, [blobs])
    for transport, ref in (
        ("docker-archive", "example.com/skopeo/docker:1"),
        ("oci-archive", "example.com/skopeo/oci:2"),
    ):
        out = tmp_root / f"{transport}.tar"
        subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "-q", f"oci-archive:{ours}", f"{transport}:{out}:{ref}"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        (img,) = store.import_archive(out)
        assert img.diff_ids == [sha256_digest(BASE), sha256_digest(layer({"app": b"app"}))]
        assert store.get(ref).id == img.id, (transport, img.repo_tags)
        assert (store.layer_dirs(img)[0] / "app").read_bytes() == b"app"
    assert len(list(store.layers_dir.iterdir())) == 2


# --- refusals leave nothing ----------------------------------------------------------------------------


def test_tampered_blobs_are_refused(store: ImageStore, tmp_root: Path) -> None:
    good = image([BASE, layer({"app": b"app"})], ["localhost/t/t:1"])
    other = layer({"app": b"evil"})
    cases: dict[str, Path] = {}

    p = cases["layer-blob"] = tmp_root / "layer-blob.tar"
    write_oci_archive(p, [good])
    rewrite_member(p, "blobs/sha256/" + sha256_digest(good.layers[1])[7:], other)

    p = cases["config-blob"] = tmp_root / "config-blob.tar"
    write_oci_archive(p, [good])
    rewrite_member(p, "blobs/sha256/" + sha256_digest(good.config)[7:], good.config.replace(b"sh", b"zz"))

    # Manifest and blob agree, but the config's diff_id for the layer is wrong.
    wrong = json.loads(good.config)
    wrong["rootfs"]["diff_ids"][1] = sha256_digest(other)
    cfg = json.dumps(wrong).encode()
    p = cases["diff-id"] = tmp_root / "diff-id.tar"
    write_oci_archive(p, [ImageBlobs(cfg, good.layers, good.names, build.manifest_json(cfg, good.layers))])

    p = cases["docker-layer"] = tmp_root / "docker-layer.tar"
    write_docker_archive(p, [good])
    rewrite_member(p, sha256_digest(good.layers[1])[7:] + "/layer.tar", other)

    p = cases["docker-config"] = tmp_root / "docker-config.tar"
    write_docker_archive(p, [good])
    rewrite_member(p, sha256_digest(good.config)[7:] + ".json", good.config.replace(b"sh", b"zz"))

    for name, path in cases.items():
        with pytest.raises(InvalidArgument, match="digest|diff_id"):
            store.import_archive(path)
        assert store.list() == [], name
        assert leftovers(store) == [], name


def test_all_or_nothing_across_images_of_one_archive(store: ImageStore, tmp_root: Path) -> None:
    first = image([BASE], ["localhost/t/first:1"])
    second = image([layer({"b": b"b"})], ["localhost/t/second:1"])
    archive = tmp_root / "two.tar"
    write_oci_archive(archive, [first, second])
    rewrite_member(archive, "blobs/sha256/" + sha256_digest(second.layers[0])[7:], layer({"b": b"B"}))
    with pytest.raises(InvalidArgument):
        store.import_archive(archive)
    assert store.list() == [] and leftovers(store) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 300, b"truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_malformed_archive_is_refused(store: ImageStore, tmp_root: Path, content: bytes) -> None:
    archive = tmp_root / "bad.tar"
    if content == b"truncated":
        write_oci_archive(archive, [image([BASE], ["localhost/t/t:1"])])
        archive.write_bytes(archive.read_bytes()[:1536])
    else:
        archive.write_bytes(content)
    with pytest.raises(InvalidArgument):
        store.import_archive(archive)
    assert store.list() == [] and leftovers(store) == []


def test_bad_index_and_unknown_format(store: ImageStore, tmp_root: Path) -> None:
    archive = tmp_root / "x.tar"
    with tarfile.open(archive, "w") as tf:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", b"{not json")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArgument, match="index.json"):
        store.import_archive(archive)
    with tarfile.open(archive, "w") as tf:
        tf.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="neither"):
        store.import_archive(archive)
    with pytest.raises(NotFound):
        store.import_archive(tmp_root / "missing.tar")
    assert leftovers(store) == []


# --- names, sharing, removal ---------------------------------------------------------------------------


def test_layer_sharing_and_removal(store: ImageStore) -> None:
    a_top, b_top = layer({"a": b"a"}), layer({"b": b"b"})
    a_blobs, b_blobs = image([BASE, a_top], ["localhost/t/a:1"]), image([BASE, b_top], ["localhost/t/b:1"])
    a = store.add_image(a_blobs.manifest, a_blobs.config, a_blobs.layers, a_blobs.names)
    b = store.add_image(b_blobs.manifest, b_blobs.config, b_blobs.layers, b_blobs.names)
    base_dir = store.layers_dir / sha256_digest(BASE)[7:]
    assert store.layer_dirs(a)[1] == store.layer_dirs(b)[1] == base_dir
    assert len(list(store.layers_dir.iterdir())) == 3

    store.remove("localhost/t/a:1")  # its last name: the image goes, the shared base stays
    assert [i.id for i in store.list()] == [b.id]
    assert base_dir.is_dir() and not (store.layers_dir / sha256_digest(a_top)[7:]).exists()
    assert store.layer_dirs(store.get(b.id))[1] == base_dir

    store.remove(b.id[7:19])  # by id prefix
    assert store.list() == []
    assert list(store.layers_dir.iterdir()) == [] and list(store.blobs_dir.iterdir()) == []
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(NotFound):
        store.remove(b.id)


def test_known_layers_need_no_blob(store: ImageStore) -> None:
    first = image([BASE], ["localhost/t/first:1"])
    store.add_image(first.manifest, first.config, first.layers, first.names)
    top = layer({"t": b"t"})
    second = image([BASE, top], ["localhost/t/second:1"])
    assert store.has_layer(sha256_digest(BASE)) and not store.has_layer(sha256_digest(top))
    img = store.add_image(second.manifest, second.config, [None, top], second.names)
    assert store.get("localhost/t/second:1").id == img.id
    third = image([layer({"new": b"n"})], ["localhost/t/third:1"])
    with pytest.raises(InvalidArgument, match="no blob"):
        store.add_image(third.manifest, third.config, [None], third.names)
    with pytest.raises(InvalidArgument, match="layer blobs given"):
        store.add_image(third.manifest, third.config, [], third.names)


def test_tags_pinning_and_lookup(store: ImageStore) -> None:
    one = image([BASE], ["localhost/t/one:1"], cmd=["one"])
    two = image([BASE], ["localhost/t/two:1"], cmd=["two"])
    a = store.add_image(one.manifest, one.config, one.layers, one.names)
    b = store.add_image(two.manifest, two.config, two.layers, two.names)

    store.tag(a.id, "extra")
    assert store.get("extra").id == a.id
    store.tag(b.id, "docker.io/library/extra:latest")  # a name moves; `a` keeps its other name
    assert store.get("extra").id == b.id and "docker.io/library/extra:latest" not in store.get(a.id).repo_tags
    with pytest.raises(InvalidArgument):
        store.tag(a.id, "Not A Name")

    store.set_pinned(b.id, True)
    store.remove("extra")  # one of two names: allowed even when pinned
    assert store.get(b.id).repo_tags == ["localhost/t/two:1"]
    with pytest.raises(FailedPrecondition):
        store.remove("localhost/t/two:1")
    with pytest.raises(FailedPrecondition):
        store.remove(b.id)
    assert store.get(b.id).pinned
    store.set_pinned(b.id, False)
    store.remove("localhost/t/two:1")
    assert store.find(b.id) is None and store.get(a.id).id == a.id


def test_ambiguous_id_prefix(store: ImageStore) -> None:
    seen: dict[str, str] = {}
    for n in range(40):
        blobs = image([BASE], [f"localhost/t/n{n}:1"], cmd=[str(n)])
        img = store.add_image(blobs.manifest, blobs.config, blobs.layers, blobs.names)
        first = img.id[7]
        if first in seen:
            with pytest.raises(NotFound, match="ambiguous"):
                store.get(first)
            assert store.get(img.id[7:20]).id == img.id
            return
        seen[first] = img.id
    raise AssertionError("no two ids shared a first hex digit")


def test_concurrent_imports_share_one_layer(store: ImageStore) -> None:
    imgs = [image([BASE, layer({f"f{i}": b"x"})], [f"localhost/t/c{i}:1"]) for i in range(4)]
    errors: list[BaseException] = []

    def add(b: ImageBlobs) -> None:
        try:
            store.add_image(b.manifest, b.config, b.layers, b.names)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=add, args=(b,)) for b in imgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list()) == 4 and len(list(store.layers_dir.iterdir())) == 5
    assert list(store.tmp_dir.iterdir()) == []


def test_removal_during_an_import_keeps_the_layers_it_reuses(store: ImageStore, tmp_root: Path) -> None:
    """Image A is removed while B, which reuses A's base layer, is being imported: the base must stay."""
    a = image([BASE], ["localhost/t/a:1"])
    store.add_image(a.manifest, a.config, a.layers, a.names)
    top = layer({"top": b"t"})
    b = image([BASE, top], ["localhost/t/b:1"])
    fifo = tmp_root / "top.fifo"
    os.mkfifo(fifo)
    result: list[object] = []

    def import_b() -> None:
        try:
            with open(fifo, "rb") as src:
                result.append(store.add_image(b.manifest, b.config, [BASE, src], b.names))
        except BaseException as e:  # noqa: BLE001 (asserted below)
            result.append(e)

    t = threading.Thread(target=import_b)
    t.start()
    with open(fifo, "wb") as w:  # opens once B is reading; B has leased BASE (bottom first) by then
        wait_for("B's lease on BASE", lambda: store._leases, 10, interval=0.005)
        store.remove("localhost/t/a:1")
        w.write(top)
    t.join(timeout=10)
    (img,) = result
    assert not isinstance(img, BaseException), img
    assert [i.repo_tags for i in store.list()] == [["localhost/t/b:1"]]
    assert all(d.is_dir() for d in store.layer_dirs(store.get("localhost/t/b:1")))
    assert not store._leases


def test_peers_on_one_root_stay_coherent(tmp_root: Path) -> None:
    blobs = image([BASE], ["localhost/t/peer:1"])
    with ImageStore(tmp_root / "images") as a, ImageStore(tmp_root / "images") as b:
        img = a.add_image(blobs.manifest, blobs.config, blobs.layers, blobs.names)
        assert b.get("localhost/t/peer:1").id == img.id
        b.tag(img.id, "localhost/t/peer:2")
        assert a.get("localhost/t/peer:2").id == img.id
        b.remove(img.id)
        assert a.list() == [] and list(a.layers_dir.iterdir()) == []


def test_fs_info(store: ImageStore) -> None:
    empty_bytes, empty_inodes = store.fs_info()
    big = layer({"big": os.urandom(1 << 20)})
    blobs = image([big], ["localhost/t/big:1"])
    store.add_image(blobs.manifest, blobs.config, blobs.layers, blobs.names)
    used, inodes = store.fs_info()
    assert used >= empty_bytes + (1 << 20)
    assert inodes >= empty_inodes + 4  # layer dir, file, config and manifest blobs


# --- crash recovery ------------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from podhost.runtime.image.store import ImageStore
from tests.wait import wait_for
root, fifo, manifest, config = sys.argv[1:5]
store = ImageStore(Path(root))
with open(fifo, "rb") as layer:
    store.add_image(Path(manifest).read_bytes(), Path(config).read_bytes(), [layer], ["localhost/t/killed:1"])
"""


def test_import_killed_midway_leaves_a_consistent_store(tmp_root: Path) -> None:
    """A real SIGKILL in the middle of unpacking: the layer comes through a fifo we stop feeding."""
    # Big enough that the unpacker's 1 MiB reads are served from the half we send.
    files = {f"dir{i // 50}/file{i}": os.urandom(10_000) for i in range(400)}
    big = layer(files)
    blobs = image([big], ["localhost/t/killed:1"])
    (tmp_root / "manifest").write_bytes(blobs.manifest or b"")
    (tmp_root / "config").write_bytes(blobs.config)
    fifo = tmp_root / "layer.fifo"
    os.mkfifo(fifo)
    root = tmp_root / "images"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(root),
            str(fifo),
            str(tmp_root / "manifest"),
            str(tmp_root / "config"),
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        with open(fifo, "wb") as w:
            w.write(big[: len(big) // 2])
            w.flush()
            wait_for("the child to start unpacking", lambda: any((root / "tmp").rglob("file*")), 10)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    except BrokenPipeError:
        pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert any((root / "tmp").iterdir()), "the kill should have left a half-unpacked work dir"

    with ImageStore(root) as store:
        assert store.list() == []
        assert list(store.tmp_dir.iterdir()) == [] and list(store.layers_dir.iterdir()) == []
        # and the store works afterwards
        img = store.add_image(blobs.manifest, blobs.config, blobs.layers, blobs.names)
        assert (store.layer_dirs(img)[0] / "dir0" / "file0").read_bytes() == files["dir0/file0"]


def test_sweep_removes_orphans_but_not_a_live_peers_work(tmp_root: Path) -> None:
    root = tmp_root / "images"
    kept = image([BASE], ["localhost/t/kept:1"])
    with ImageStore(root) as store:
        store.add_image(kept.manifest, kept.config, kept.layers, kept.names)
    live = ImageStore(root)
    try:
        # What a crash between "layer renamed into place" and "index written" leaves, a torn temp file,
        # and a work dir (here: a live peer's, so it must survive the next store's construction).
        orphan = root / "layers" / ("f" * 64)
        (orphan / "sub").mkdir(parents=True)
        (root / "blobs" / "sha256" / ("e" * 64)).write_bytes(b"orphan blob")
        (root / ".index.json.1.2.tmp").write_bytes(b"{")
        (root / "tmp" / "123-dead").mkdir()
        with ImageStore(root) as second:  # a live peer exists: no sweep
            assert orphan.exists() and (root / "tmp" / "123-dead").exists()
            assert [i.repo_tags for i in second.list()] == [["localhost/t/kept:1"]]
    finally:
        live.close()
    with ImageStore(root) as store:
        assert not orphan.exists() and not (root / "tmp" / "123-dead").exists()
        assert not (root / ".index.json.1.2.tmp").exists()
        assert not (root / "blobs" / "sha256" / ("e" * 64)).exists()
        (img,) = store.list()
        assert store.layer_dirs(img)[0].is_dir()
        assert sorted(p.name for p in store.blobs_dir.iterdir()) == sorted(
            [img.id[7:], sha256_digest(kept.manifest or b"")[7:]]
        )


def test_damaged_index_is_an_error_not_an_empty_store(tmp_root: Path) -> None:
    root = tmp_root / "images"
    blobs = image([BASE], ["localhost/t/kept:1"])
    with ImageStore(root) as store:
        img = store.add_image(blobs.manifest, blobs.config, blobs.layers, blobs.names)
        layer_dir = store.layer_dirs(img)[0]
    (root / "index.json").write_bytes(b"{damaged")
    with pytest.raises(RuntimeFailure, match="unreadable"):
        ImageStore(root)
    assert layer_dir.is_dir()  # the sweep did not take the index's damage for "no images"


# --- built images ------------------------------------------------------------------------------------


def test_test_images_and_pause_image(tmp_root: Path) -> None:
    with ImageStore(tmp_root / "a") as a:
        start = time.perf_counter()
        images = build.ensure_test_images(a)
        elapsed = time.perf_counter() - start
        assert elapsed < 1.0, f"building and importing the test images took {elapsed:.2f}s"
        again = build.ensure_test_images(a)
        assert {k: v.id for k, v in images.items()} == {k: v.id for k, v in again.items()}
        busybox = images["localhost/podhost/busybox:latest"]
        assert images["docker.io/library/busybox:1.28"].id == busybox.id
        assert busybox.config.cmd == ["sh"]
        nginx = images["docker.io/library/nginx:latest"]
        assert nginx.id != busybox.id and nginx.diff_ids == busybox.diff_ids
        assert nginx.config.cmd == build.NGINX_CMD and nginx.config.exposed_ports == ["80/tcp"]
        assert len(list(a.layers_dir.iterdir())) == 1
        top = a.layer_dirs(busybox)[0]
        assert (top / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size
        assert os.readlink(top / "bin" / "sh") == "busybox"
        assert (top / "tmp").stat().st_mode & 0o7777 == 0o1777

        pause = build.ensure_pause_image(a, Path("/bin/busybox"))
        assert pause.pinned and pause.repo_tags == ["localhost/podhost/pause:3.10"]
        assert pause.config.entrypoint == ["/pause"] and pause.config.user == "65535:65535"
        assert (a.layer_dirs(pause)[0] / "pause").stat().st_mode & 0o777 == 0o755
        with pytest.raises(FailedPrecondition):
            a.remove("localhost/podhost/pause:3.10")
    with ImageStore(tmp_root / "b") as b:  # another store, another run: the same ids
        assert {k: v.id for k, v in build.ensure_test_images(b).items()} == {
            k: v.id for k, v in images.items()
        }
        assert build.ensure_pause_image(b, Path("/bin/busybox")).id == pause.id


def test_no_mount_leak() -> None:
    """Nothing any image test mounted is still mounted (rootfs tests unmount what they mount)."""
    assert mounts_under(TMP_PREFIX) == []


def test_only_regular_files_are_imported(store: ImageStore, tmp_root: Path) -> None:
    """/dev/zero never ends and a FIFO's open waits for a writer: either held a daemon thread forever."""
    fifo = tmp_root / "archive.fifo"
    os.mkfifo(fifo)
    (tmp_root / "empty.tar").touch()
    (tmp_root / "link.tar").symlink_to("/dev/zero")
    cases = {
        Path("/dev/zero"): "not a regular file (a character device)",
        fifo: "not a regular file (a FIFO)",
        tmp_root: "not a regular file (a directory)",
        tmp_root / "link.tar": "not a regular file (a character device)",
        tmp_root / "empty.tar": "is empty",
    }
    for path, why in cases.items():
        started = time.monotonic()
        with pytest.raises(InvalidArgument) as err:
            store.import_archive(path)
        assert time.monotonic() - started < 2
        assert str(path) in str(err.value) and why in str(err.value)
    with pytest.raises(NotFound):
        store.import_archive(tmp_root / "missing.tar")
    assert store.list() == [] and leftovers(store) == []


def test_layer_directories_are_spread_over_ext4_block_groups(tmp_path: Path) -> None:
    """On ext4 the store marks layers/ and tmp/ FS_TOPDIR_FL (chattr +T): each layer's directory goes to a
    block group of the allocator's choosing, not beside the inodes the last removal freed (creating files
    there scanned past each of them: cold pulls after removals were 3x slower). Elsewhere: no flag."""
    on_ext4 = linux.fstype_of(str(tmp_path)) == "ext4"
    store = ImageStore(tmp_path / "images")
    try:
        for d in (store.layers_dir, store.tmp_dir):
            flags = subprocess.run(["lsattr", "-d", str(d)], capture_output=True, text=True).stdout.split()[0]
            assert ("T" in flags) == on_ext4, (d, flags)
    finally:
        store.close()
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        assert not linux.mark_top_directory(str(shm))  # tmpfs has no such flag: nothing to mark
    finally:
        shm.rmdir()
