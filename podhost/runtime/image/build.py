"""Images built on this machine, with no network: the pause image and the test images.

Entries (or a directory) become a one-layer OCI image. The build is deterministic: entries in byte order,
mtime 0, uid/gid 0, no user/group names, an uncompressed layer (so its digest is its diff_id), and a
config without timestamps; the same inputs give the same image id on every run and machine.

`ensure_test_images` makes the images the article's demo names, from Debian's static /bin/busybox:
"docker.io/library/busybox:1.28" and "docker.io/library/nginx:latest" are LOCAL LOOK-ALIKES, not the
Docker Hub images (busybox:1.28 is podhost's busybox under a second name; "nginx" is busybox httpd
serving /var/www on port 80), so the demo runs air-gapped.

This module never pulls and never runs anything but `busybox --list`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.config import PAUSE_IMAGE
from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime.image.archive import ImageBlobs, host_platform, sha256_digest, write_oci_archive
from podhost.runtime.image.store import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST, ImageStore
from podhost.runtime.image.unpack import MEDIA_TYPE_TAR
from podhost.runtime.model import Image

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
EPOCH = "1970-01-01T00:00:00Z"
BUSYBOX_BINARY = Path("/bin/busybox")

BUSYBOX_IMAGE = "localhost/podhost/busybox:latest"
BUSYBOX_128_IMAGE = "docker.io/library/busybox:1.28"
NGINX_IMAGE = "docker.io/library/nginx:latest"
NGINX_CMD = ["httpd", "-f", "-v", "-p", "80", "-h", "/var/www"]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nwww-data:x:33:\nnobody:x:65534:\n"
INDEX_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
    "<body><h1>Welcome to nginx!</h1><p>(busybox httpd in a podhost look-alike image)</p></body></html>\n"
)


# --- pure: layer, config and manifest bytes ----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry of a layer to pack: a dir, a file (from `data` or `source`), a symlink or a hardlink."""

    path: str  # relative, "/"-separated
    type: bytes  # tarfile.DIRTYPE, REGTYPE, SYMTYPE, LNKTYPE or FIFOTYPE
    mode: int = 0o755
    data: bytes = b""
    source: Path | None = None  # a regular file's content, read when packing
    linkname: str = ""


def _order(entry: Entry) -> tuple[bytes, ...]:
    """Depth first, parents before children, names in byte order (the order of `_walk`)."""
    return tuple(os.fsencode(c) for c in entry.path.split("/"))


def _walk(root: Path, rel: str = "") -> Iterator[str]:
    for name in sorted(os.listdir(root / rel), key=os.fsencode):
        child = f"{rel}/{name}" if rel else name
        yield child
        if stat.S_ISDIR(os.lstat(root / child).st_mode):
            yield from _walk(root, child)


def dir_entries(rootfs: Path) -> Iterator[Entry]:
    """The entries of a directory tree on disk (owners and times are not kept: see `tar_entries`)."""
    first_name: dict[tuple[int, int], str] = {}
    for rel in _walk(rootfs):
        path = rootfs / rel
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            yield Entry(rel, tarfile.DIRTYPE, mode)
        elif stat.S_ISLNK(st.st_mode):
            yield Entry(rel, tarfile.SYMTYPE, 0o777, linkname=os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_name:
                yield Entry(rel, tarfile.LNKTYPE, mode, linkname=first_name[key])
            else:
                first_name[key] = rel
                yield Entry(rel, tarfile.REGTYPE, mode, source=path)
        elif stat.S_ISFIFO(st.st_mode):
            yield Entry(rel, tarfile.FIFOTYPE, mode)
        else:
            raise InvalidArgument(f"cannot pack {path}: not a file, directory, symlink or fifo")


def tar_entries(entries: Iterable[Entry]) -> bytes:
    """A deterministic, uncompressed layer tar: entries in `_order`, owners 0:0, mtime 0, modes kept."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in sorted(entries, key=_order):
            info = tarfile.TarInfo(e.path)
            info.type = e.type
            info.mode = e.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.linkname = e.linkname
            if e.type != tarfile.REGTYPE:
                tf.addfile(info)
            elif e.source is not None:
                info.size = os.stat(e.source).st_size
                with open(e.source, "rb") as f:
                    tf.addfile(info, f)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def layer_tar(rootfs: Path) -> bytes:
    """The directory `rootfs` as a deterministic, uncompressed layer tar."""
    return tar_entries(dir_entries(rootfs))


def config_json(
    diff_ids: Sequence[str],
    *,
    cmd: Sequence[str],
    entrypoint: Sequence[str] = (),
    env: Sequence[str] | None = None,
    user: str = "",
    working_dir: str = "",
    exposed_ports: Sequence[str] = (),
    stop_signal: str = "",
) -> bytes:
    """An OCI image config (image-spec config.md) with no timestamps but the epoch."""
    cfg: dict[str, object] = {"Env": list(DEFAULT_ENV if env is None else env)}
    if entrypoint:
        cfg["Entrypoint"] = list(entrypoint)
    if cmd:
        cfg["Cmd"] = list(cmd)
    if user:
        cfg["User"] = user
    if working_dir:
        cfg["WorkingDir"] = working_dir
    if exposed_ports:
        cfg["ExposedPorts"] = {p: {} for p in sorted(exposed_ports)}
    if stop_signal:
        cfg["StopSignal"] = stop_signal
    os_name, arch = host_platform()
    doc = {
        "architecture": arch,
        "os": os_name,
        "created": EPOCH,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": EPOCH, "created_by": "podhost build"} for _ in diff_ids],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def manifest_json(config: bytes, layers: Sequence[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": MEDIA_TYPE_TAR, "digest": sha256_digest(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def busybox_list_args(busybox: Path) -> list[str]:
    return [str(busybox), "--list"]


# --- building ----------------------------------------------------------------------------------------


def _add_layer_image(store: ImageStore, layer: bytes, name: str, **config: object) -> Image:
    cfg = config_json([sha256_digest(layer)], **config)  # type: ignore[arg-type]
    return store.add_image(manifest_json(cfg, [layer]), cfg, [layer], [name])


def busybox_entries(busybox: Path = BUSYBOX_BINARY) -> list[Entry]:
    """The busybox root filesystem as entries: /bin/busybox and one symlink per applet (`busybox
    --list`), passwd/group (root, www-data 33, nobody 65534), /tmp 1777, mount points, /root 0700,
    /var/www/index.html."""
    try:
        out = subprocess.run(busybox_list_args(busybox), capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeFailure(f"cannot list the applets of {busybox}: {e}") from e
    applets = sorted({a for a in out.stdout.decode().split() if a and "/" not in a and a != "busybox"})
    entries = [
        Entry(d, tarfile.DIRTYPE, 0o755) for d in ("bin", "etc", "proc", "sys", "dev", "var", "var/www")
    ]
    entries += [
        Entry("tmp", tarfile.DIRTYPE, 0o1777),
        Entry("root", tarfile.DIRTYPE, 0o700),
        Entry("bin/busybox", tarfile.REGTYPE, 0o755, source=busybox),
        Entry("etc/passwd", tarfile.REGTYPE, 0o644, data=PASSWD.encode()),
        Entry("etc/group", tarfile.REGTYPE, 0o644, data=GROUP.encode()),
        Entry("var/www/index.html", tarfile.REGTYPE, 0o644, data=INDEX_HTML.encode()),
    ]
    entries += [Entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, linkname="busybox") for a in applets]
    return entries


def write_entries(dest: Path, entries: Iterable[Entry]) -> Path:
    """Materialise entries under `dest` (modes set explicitly, so the umask cannot change the image)."""
    dest.mkdir(parents=True, exist_ok=True)
    for e in sorted(entries, key=_order):
        path = dest / e.path
        if e.type == tarfile.DIRTYPE:
            path.mkdir(exist_ok=True)
        elif e.type == tarfile.SYMTYPE:
            os.symlink(e.linkname, path)
            continue
        elif e.type == tarfile.LNKTYPE:
            os.link(dest / e.linkname, path, follow_symlinks=False)
            continue
        elif e.type == tarfile.FIFOTYPE:
            os.mkfifo(path)
        elif e.source is not None:
            shutil.copyfile(e.source, path)
        else:
            path.write_bytes(e.data)
        os.chmod(path, e.mode)
    return dest


def busybox_rootfs(dest: Path, busybox: Path = BUSYBOX_BINARY) -> Path:
    """A minimal root filesystem around Debian's static busybox, on disk (see `busybox_entries`)."""
    return write_entries(dest, busybox_entries(busybox))


def ensure_test_images(store: ImageStore, busybox: Path = BUSYBOX_BINARY) -> dict[str, Image]:
    """Make (idempotently) the test images, keyed by name:

    - "localhost/podhost/busybox:latest": busybox, cmd ["sh"];
    - "docker.io/library/busybox:1.28": the same image under a second name (a local look-alike of the
      Docker Hub tag the article's demo uses);
    - "docker.io/library/nginx:latest": a local look-alike of nginx: the same layer, cmd busybox httpd
      serving /var/www on port 80.

    The layer is packed from `busybox_entries` in memory, byte for byte what `busybox_rootfs` then
    `layer_tar` would give.
    """
    layer = tar_entries(busybox_entries(busybox))
    image = _add_layer_image(store, layer, BUSYBOX_IMAGE, cmd=["sh"])
    store.tag(image.id, BUSYBOX_128_IMAGE)
    _add_layer_image(store, layer, NGINX_IMAGE, cmd=NGINX_CMD, exposed_ports=["80/tcp"])
    return {name: store.get(name) for name in (BUSYBOX_IMAGE, BUSYBOX_128_IMAGE, NGINX_IMAGE)}


def ensure_pause_image(store: ImageStore, pause_binary: Path, name: str = PAUSE_IMAGE) -> Image:
    """The pause image: /pause only, entrypoint ["/pause"], user 65535:65535, pinned (never removed)."""
    if not pause_binary.is_file():
        raise InvalidArgument(f"pause binary {pause_binary} does not exist")
    layer = tar_entries([Entry("pause", tarfile.REGTYPE, 0o755, source=pause_binary)])
    image = _add_layer_image(store, layer, name, cmd=[], entrypoint=["/pause"], user="65535:65535")
    store.set_pinned(image.id, True)
    return store.get(image.id)


def test_image_archives(workdir: Path, pause_binary: Path, busybox: Path = BUSYBOX_BINARY) -> dict[str, Path]:
    """The test images as OCI-layout tarballs (one per image, reused when present), byte for byte the
    images `ensure_test_images`/`ensure_pause_image` add to podhost's store: another runtime (containerd)
    imports them and so runs exactly the same bits, under the same image ids."""
    workdir.mkdir(parents=True, exist_ok=True)
    busybox_layer = tar_entries(busybox_entries(busybox))
    pause_layer = tar_entries([Entry("pause", tarfile.REGTYPE, 0o755, source=pause_binary)])
    specs: dict[str, tuple[str, bytes, dict[str, Any]]] = {
        BUSYBOX_IMAGE: ("busybox", busybox_layer, {"cmd": ["sh"]}),
        BUSYBOX_128_IMAGE: ("busybox-1.28", busybox_layer, {"cmd": ["sh"]}),
        NGINX_IMAGE: ("nginx", busybox_layer, {"cmd": NGINX_CMD, "exposed_ports": ["80/tcp"]}),
        PAUSE_IMAGE: ("pause", pause_layer, {"cmd": [], "entrypoint": ["/pause"], "user": "65535:65535"}),
    }
    archives = {}
    for name, (short, layer, config) in specs.items():
        out = workdir / f"{short}.oci.tar"
        if not out.exists():
            cfg = config_json([sha256_digest(layer)], **config)
            tmp = out.with_suffix(".tmp")
            write_oci_archive(tmp, [ImageBlobs(cfg, [layer], [name], manifest_json(cfg, [layer]))])
            os.replace(tmp, out)
        archives[name] = out
    return archives
