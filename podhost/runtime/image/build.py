"""Images built on this machine, with no network: the pause image and the test images.

Entries (or a directory) become a one-layer OCI image. The build is deterministic: entries in byte order,
mtime 0, uid/gid 0, no user/group names, an uncompressed layer (so its digest is its diff_id), and a
config without timestamps; the same inputs give the same image id on every run and machine.

`ensure_test_images` makes the images the article's demo names, from Debian's static /bin/busybox:
"docker.io/library/busybox:1.28" and "docker.io/library/nginx:latest" are LOCAL LOOK-ALIKES, not the
Docker Hub images (busybox:1.28 is podhost's busybox under a second name; "nginx" is busybox httpd
serving /var/www on port 80), so the demo runs air-gapped.

`nginx_image_blobs` makes the demo's `nginx` the real thing: Debian's nginx (from its .deb, the one in
apt's cache or one `apt-get download nginx` fetched) with the shared libraries `ldd` names, on the busybox
base, configured as shared/conformance/critest-images.sh configures it (user nginx, logs to the
container's stdout and stderr, `nginx -g 'daemon off;'`), so `ps ax` in the pod shows its master process
and a worker. `demo_image_archive` writes it with busybox:1.28 as one OCI archive for CRI LoadImage.

This module never pulls and never runs anything but `busybox --list` and `ldd`.
"""

from __future__ import annotations

import io
import json
import os
import re
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
#: Where apt keeps downloaded packages (`apt-get download` puts them in the current directory instead).
APT_ARCHIVES = Path("/var/cache/apt/archives")
NGINX_REAL_CMD = ["nginx", "-g", "daemon off;"]
NGINX_CONF = """\
user  nginx;
worker_processes  1;
error_log  /var/log/nginx/error.log warn;
pid        /var/run/nginx.pid;
events { worker_connections  1024; }
http {
    default_type  application/octet-stream;
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_user_agent"';
    access_log  /var/log/nginx/access.log  main;
    sendfile  on;
    keepalive_timeout  65;
    include /etc/nginx/conf.d/*.conf;
}
"""
NGINX_SITE = """\
server {
    listen       80;
    server_name  localhost;
    location / { root /usr/share/nginx/html; index index.html index.htm; }
}
"""
NGINX_INDEX_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
    "<body><h1>Welcome to nginx!</h1></body></html>\n"
)
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


# --- the demo's real nginx ----------------------------------------------------------------------------


def find_deb(package: str, directories: Sequence[Path] = (APT_ARCHIVES,)) -> Path | None:
    """The newest `<package>_*_<arch>.deb` in `directories` (apt's cache first), or None."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    found = [f for d in directories for f in d.glob(f"{package}_*_{arch}.deb")]
    return max(found, key=lambda f: f.name) if found else None


def deb_files(deb: Path) -> dict[str, tuple[int, bytes]]:
    """The regular files of a .deb's data archive: path (relative) -> (mode, content). A .deb is an `ar`
    archive (deb(5)) holding debian-binary, control.tar.* and data.tar.* (xz, gz or uncompressed)."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise InvalidArgument(f"{deb} is not a Debian package (no ar magic)")
    at = 8
    while at + 60 <= len(blob):
        name = blob[at : at + 16].decode().strip().rstrip("/")
        size = int(blob[at + 48 : at + 58].decode().strip())
        data = blob[at + 60 : at + 60 + size]
        at += 60 + size + (size % 2)  # members are padded to an even offset
        if not name.startswith("data.tar"):
            continue
        files = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            for member in tf.getmembers():
                if member.isfile():
                    content = tf.extractfile(member)
                    assert content is not None
                    files[member.name.removeprefix("./")] = (member.mode & 0o7777, content.read())
        return files
    raise InvalidArgument(f"{deb} has no data.tar member")


def shared_libraries(binary: Path) -> list[Path]:
    """The absolute paths `ldd` names for `binary` (its libraries and the dynamic loader)."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, check=True, timeout=30, text=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeFailure(f"ldd {binary}: {e}") from e
    return sorted({Path(p) for p in re.findall(r"(/\S+) \(0x", out.stdout)})


def _with_parents(entries: list[Entry]) -> list[Entry]:
    """`entries` plus a 0755 directory for every parent none of them makes (first entry of a path wins)."""
    seen: dict[str, Entry] = {}
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            seen.setdefault("/".join(parts[:i]), Entry("/".join(parts[:i]), tarfile.DIRTYPE, 0o755))
        seen.setdefault(e.path, e)
    return list(seen.values())


def nginx_entries(deb: Path, workdir: Path, busybox: Path = BUSYBOX_BINARY) -> list[Entry]:
    """The busybox root filesystem with Debian's nginx from `deb` (see the module docstring)."""
    files = deb_files(deb)
    if "usr/sbin/nginx" not in files:
        raise InvalidArgument(f"{deb} has no usr/sbin/nginx")
    mode, binary = files["usr/sbin/nginx"]
    workdir.mkdir(parents=True, exist_ok=True)
    nginx = workdir / "nginx"
    nginx.write_bytes(binary)
    nginx.chmod(0o755)
    entries = [
        e for e in busybox_entries(busybox) if e.path not in ("etc/passwd", "etc/group", "var/www/index.html")
    ]
    entries += [
        Entry("etc/passwd", tarfile.REGTYPE, 0o644, data=(PASSWD + NGINX_USER).encode()),
        Entry("etc/group", tarfile.REGTYPE, 0o644, data=(GROUP + "nginx:x:101:\n").encode()),
        Entry("usr/sbin/nginx", tarfile.REGTYPE, 0o755, source=nginx),
        Entry("etc/nginx/nginx.conf", tarfile.REGTYPE, 0o644, data=NGINX_CONF.encode()),
        Entry("etc/nginx/conf.d/default.conf", tarfile.REGTYPE, 0o644, data=NGINX_SITE.encode()),
        Entry("usr/share/nginx/html/index.html", tarfile.REGTYPE, 0o644, data=NGINX_INDEX_HTML.encode()),
        Entry("var/log/nginx/access.log", tarfile.SYMTYPE, 0o777, linkname="/dev/stdout"),
        Entry("var/log/nginx/error.log", tarfile.SYMTYPE, 0o777, linkname="/dev/stderr"),
    ]
    entries += [
        Entry(d, tarfile.DIRTYPE, 0o755) for d in ("var/lib/nginx", "var/cache/nginx", "var/run", "run")
    ]
    for lib in shared_libraries(nginx):
        entries.append(Entry(str(lib).lstrip("/"), tarfile.REGTYPE, 0o755, source=lib.resolve()))
    return _with_parents(entries)


NGINX_USER = "nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n"


def demo_image_archive(path: Path, deb: Path, busybox: Path = BUSYBOX_BINARY) -> Path:
    """The images examples/shared-namespace-demo.yaml names, as one OCI archive for CRI LoadImage:
    "nginx" (Debian's nginx from `deb`) and "busybox:1.28" (podhost's busybox under that name)."""
    images = []
    nginx_layer = tar_entries(nginx_entries(deb, path.parent / "nginx-build"))
    busybox_layer = tar_entries(busybox_entries(busybox))
    for names, layer, config in (
        (
            [NGINX_IMAGE],
            nginx_layer,
            {"cmd": NGINX_REAL_CMD, "exposed_ports": ["80/tcp"], "stop_signal": "SIGQUIT"},
        ),
        ([BUSYBOX_128_IMAGE], busybox_layer, {"cmd": ["sh"]}),
    ):
        cfg = config_json([sha256_digest(layer)], **config)  # type: ignore[arg-type]
        images.append(ImageBlobs(cfg, [layer], names, manifest_json(cfg, [layer])))
    write_oci_archive(path, images)
    return path


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
