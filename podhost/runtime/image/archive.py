"""Reading image archives: an OCI image-layout tarball or a docker-archive tarball (`docker save`).

- OCI image layout (image-spec image-layout.md): `oci-layout`, `index.json`, `blobs/<alg>/<hex>`. Names
  come from the descriptors' annotations `io.containerd.image.name` (a full name, what `ctr export`
  and `docker save` >= 25 write) or `org.opencontainers.image.ref.name` (a full reference; a bare tag
  such as "latest" names no repository and is ignored). A nested index (multi-platform) is resolved to
  this host's linux/<arch> manifest.
- docker-archive: `manifest.json` = [{"Config": path, "RepoTags": [...], "Layers": [paths]}]. It has
  no manifest, so the store synthesises one from the layers' digests.
An archive with both (docker >= 25) is read as OCI, taking names from manifest.json where the index
has none.

Reading only checks the small JSON blobs it reads; layer blobs are handed to the store as streams, to be
verified while they are unpacked. `write_oci_archive` and `write_docker_archive` make such tarballs from
blobs as given (an export, and how tests craft archives, hostile ones included): they check nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from podhost.errors import InvalidArgument, NotFound
from podhost.runtime.image import reference
from podhost.runtime.image.unpack import clean_name

MAX_JSON_BYTES = 16 << 20
_MAX_SYMLINK_HOPS = 8
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> tuple[str, str]:
    """("linux", GOARCH of this machine), for choosing in a multi-platform index."""
    machine = os.uname().machine
    return "linux", _GOARCH.get(machine, machine)


@dataclass
class ArchivedImage:
    """One image found in an archive, ready for `ImageStore` (layers are open streams)."""

    manifest: bytes | None
    config: bytes
    layers: list[IO[bytes]]
    layer_digests: list[str | None]  # expected blob digests, when the archive says
    names: list[str] = field(default_factory=list)


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from e


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_regular_file(path: Path, what: str = "image archive") -> IO[bytes]:
    """Open `path` for reading only if it is a non-empty regular file (symlinks to one are fine).

    A device (/dev/zero never ends, /dev/tty blocks), a FIFO (open waits for a writer, read for data)
    or a directory would hold the request, and a thread of the daemon, forever. O_NONBLOCK makes the
    open itself return at once even on a FIFO; fstat then decides on the object actually opened, so a
    path swapped between a check and the open cannot slip through. An empty "regular" file is refused
    too: no archive is empty, and procfs files that block on read (/proc/kmsg) report size 0.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError as e:
        raise NotFound(f"{what} {path} does not exist") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise InvalidArgument(f"{what} {path}: cannot open: {e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{what} {path} is not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size == 0:
            raise InvalidArgument(f"{what} {path} is empty")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), f"mode {mode:o}")


class ImageArchive:
    """An opened archive. Use as a context manager; streams it hands out live until it is closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open_regular_file(path)
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:*")  # noqa: SIM115 (closed by close())
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            self._file.close()
            raise InvalidArgument(f"image archive {path} is not a readable tar: {e}") from e
        try:
            self._members: dict[str, tarfile.TarInfo] = {}
            for m in self._tar.getmembers():
                try:
                    self._members[clean_name(m.name)] = m
                except InvalidArgument:
                    continue  # never looked up, so harmless; we only read names we expect
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            self.close()
            raise InvalidArgument(f"image archive {path} is malformed: {e}") from e

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()
        self._file.close()  # a tarfile opened on a file object leaves it open

    # --- members -------------------------------------------------------------------------------------

    def _member(self, name: str) -> tarfile.TarInfo:
        """The regular-file member at `name`, following symlinks inside the archive."""
        try:
            rel = clean_name(name)
        except InvalidArgument as e:
            raise InvalidArgument(f"image archive refers to {name!r}, outside the archive") from e
        for _ in range(_MAX_SYMLINK_HOPS):
            m = self._members.get(rel)
            if m is None:
                raise InvalidArgument(f"image archive {self.path} has no {name!r}")
            if m.isfile():
                return m
            if not (m.issym() or m.islnk()):
                raise InvalidArgument(f"image archive member {name!r} is not a file")
            base = rel.rpartition("/")[0] if m.issym() else ""
            target = m.linkname if not m.linkname.startswith("/") else m.linkname.lstrip("/")
            rel = os.path.normpath(os.path.join(base, target)) if m.issym() else clean_name(target)
            if rel.startswith(".."):
                raise InvalidArgument(f"image archive member {name!r} links outside the archive")
        raise InvalidArgument(f"image archive member {name!r}: too many levels of links")

    def has(self, name: str) -> bool:
        return name in self._members

    def open(self, name: str) -> IO[bytes]:
        f = self._tar.extractfile(self._member(name))
        if f is None:
            raise InvalidArgument(f"image archive member {name!r} is not a file")
        return f

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        m = self._member(name)
        if m.size > limit:
            raise InvalidArgument(f"image archive member {name!r} is too large ({m.size} bytes)")
        try:
            return self.open(name).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise InvalidArgument(f"image archive member {name!r} cannot be read: {e}") from e

    def _blob_name(self, digest: str) -> str:
        reference.check_digest(digest)
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    def read_blob(self, digest: str) -> bytes:
        """A small blob (index, manifest, config), checked against its digest."""
        data = self.read(self._blob_name(digest))
        if sha256_digest(data) != digest:
            raise InvalidArgument(f"blob {digest} in {self.path}: content digest is {sha256_digest(data)}")
        return data

    # --- formats -------------------------------------------------------------------------------------

    def images(self) -> list[ArchivedImage]:
        if self.has("oci-layout") and self.has("index.json"):
            return self._oci_images()
        if self.has("manifest.json"):
            return self._docker_images()
        raise InvalidArgument(
            f"{self.path} is neither an OCI image layout (oci-layout, index.json) nor a docker archive "
            "(manifest.json)"
        )

    def _oci_images(self) -> list[ArchivedImage]:
        layout = parse_json(self.read("oci-layout"), "oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise InvalidArgument("oci-layout has no imageLayoutVersion")
        index = parse_json(self.read("index.json"), "index.json")
        by_manifest: dict[str, ArchivedImage] = {}
        for desc in _descriptors(index, "index.json"):
            names = _names_from_annotations(desc.get("annotations") or {})
            manifest_digest, manifest = self._resolve_manifest(desc, depth=0)
            image = by_manifest.get(manifest_digest)
            if image is None:
                image = self._oci_image(manifest, manifest_digest)
                by_manifest[manifest_digest] = image
            image.names += [n for n in names if n not in image.names]
        if self.has("manifest.json"):  # docker save >= 25: RepoTags for unnamed images
            tags = {}
            for entry in self._docker_manifest():
                config_path = str(entry.get("Config", ""))
                if config_path.startswith("blobs/sha256/"):
                    tags["sha256:" + config_path.rpartition("/")[2]] = entry.get("RepoTags") or []
            for image in by_manifest.values():
                if not image.names:
                    image.names = [str(t) for t in tags.get(sha256_digest(image.config), [])]
        if not by_manifest:
            raise InvalidArgument(f"{self.path}: index.json lists no image")
        return list(by_manifest.values())

    def _resolve_manifest(self, desc: dict[str, Any], depth: int) -> tuple[str, bytes]:
        digest = str(desc.get("digest", ""))
        data = self.read_blob(digest)
        doc = parse_json(data, f"manifest {digest}")
        if desc.get("mediaType") in _INDEX_TYPES or (isinstance(doc, dict) and "manifests" in doc):
            if depth > 3:
                raise InvalidArgument(f"index {digest} nests too deeply")
            return self._resolve_manifest(_pick_platform(_descriptors(doc, digest), digest), depth + 1)
        return digest, data

    def _oci_image(self, manifest: bytes, manifest_digest: str) -> ArchivedImage:
        doc = parse_json(manifest, f"manifest {manifest_digest}")
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise InvalidArgument(f"manifest {manifest_digest} has no config descriptor")
        config = self.read_blob(str(doc["config"].get("digest", "")))
        layers = doc.get("layers") or []
        if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
            raise InvalidArgument(f"manifest {manifest_digest}: layers is not a list of descriptors")
        digests = [str(d.get("digest", "")) for d in layers]
        streams = [self.open(self._blob_name(d)) for d in digests]
        return ArchivedImage(manifest, config, streams, list(digests))

    def _docker_manifest(self) -> list[dict[str, Any]]:
        doc = parse_json(self.read("manifest.json"), "manifest.json")
        if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
            raise InvalidArgument("manifest.json is not a list of objects")
        return doc

    def _docker_images(self) -> list[ArchivedImage]:
        images = []
        for entry in self._docker_manifest():
            config_path = entry.get("Config")
            layer_paths = entry.get("Layers") or []
            if not isinstance(config_path, str) or not isinstance(layer_paths, list):
                raise InvalidArgument("manifest.json entry needs Config (a path) and Layers (a list)")
            config = self.read(config_path)
            # The file name says the config's digest ("<hex>.json" or "blobs/sha256/<hex>"): check it.
            stem = config_path.rpartition("/")[2].removesuffix(".json")
            if len(stem) == 64 and sha256_digest(config) != "sha256:" + stem:
                raise InvalidArgument(f"{config_path}: content digest is {sha256_digest(config)}")
            digests: list[str | None] = []
            for p in layer_paths:
                p = str(p)
                digests.append("sha256:" + p.rpartition("/")[2] if p.startswith("blobs/sha256/") else None)
            streams = [self.open(str(p)) for p in layer_paths]
            names = [str(t) for t in entry.get("RepoTags") or []]
            images.append(ArchivedImage(None, config, streams, digests, names))
        if not images:
            raise InvalidArgument(f"{self.path}: manifest.json lists no image")
        return images


def _descriptors(doc: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise InvalidArgument(f"{what} has no manifests list")
    descs = doc["manifests"]
    if not all(isinstance(d, dict) for d in descs):
        raise InvalidArgument(f"{what}: manifests is not a list of descriptors")
    return descs


def _pick_platform(descs: list[dict[str, Any]], what: str) -> dict[str, Any]:
    want_os, want_arch = host_platform()
    for d in descs:
        p = d.get("platform") or {}
        if p.get("os") == want_os and p.get("architecture") == want_arch:
            return d
    if len(descs) == 1:
        return descs[0]
    raise InvalidArgument(f"index {what} has no manifest for {want_os}/{want_arch}")


def _names_from_annotations(annotations: dict[str, Any]) -> list[str]:
    names = []
    full = annotations.get(ANNOTATION_CONTAINERD_NAME)
    if isinstance(full, str) and full:
        names.append(full)
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    # A bare tag ("latest", "1.28") names no repository: only a reference with '/' or ':' is a name.
    if isinstance(ref_name, str) and any(c in ref_name for c in "/:@") and reference.is_valid(ref_name):
        names.append(ref_name)
    out: list[str] = []
    for n in names:
        normal = reference.normalize(n)
        if normal not in out:
            out.append(normal)
    return out


# --- writing -------------------------------------------------------------------------------------------


@dataclass
class ImageBlobs:
    """An image as blobs, to write into an archive: manifest (None for a docker archive), config, layers."""

    config: bytes
    layers: list[bytes]
    names: list[str] = field(default_factory=list)
    manifest: bytes | None = None


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, written: set[str]) -> None:
    if name in written:
        return
    written.add(name)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tf.addfile(info)


def write_oci_archive(path: Path, images: list[ImageBlobs]) -> None:
    """An OCI image-layout tarball; each name becomes a descriptor with `io.containerd.image.name`
    and `org.opencontainers.image.ref.name` (the tag), as `ctr export` writes them."""
    descs: list[dict[str, Any]] = []
    with tarfile.open(path, "w") as tf:
        written: set[str] = set()
        _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', written)
        for d in ("blobs", "blobs/sha256"):
            _add_dir(tf, d)
        for image in images:
            manifest = image.manifest
            if manifest is None:
                raise InvalidArgument("an OCI archive needs each image's manifest")
            for blob in (manifest, image.config, *image.layers):
                _add_bytes(tf, "blobs/sha256/" + sha256_digest(blob)[7:], blob, written)
            base = {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256_digest(manifest),
                "size": len(manifest),
            }
            if not image.names:
                descs.append(base)
            for name in image.names:
                ref = reference.parse(name)
                annotations = {ANNOTATION_CONTAINERD_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag}
                descs.append({**base, "annotations": annotations})
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descs,
        }
        _add_bytes(tf, "index.json", json.dumps(index).encode(), written)


def write_docker_archive(path: Path, images: list[ImageBlobs]) -> None:
    """A docker-archive tarball (`docker save` before 25): <hex>.json configs, <hex>/layer.tar layers."""
    entries = []
    with tarfile.open(path, "w") as tf:
        written: set[str] = set()
        for image in images:
            config_name = sha256_digest(image.config)[7:] + ".json"
            _add_bytes(tf, config_name, image.config, written)
            layer_names = []
            for layer in image.layers:
                name = sha256_digest(layer)[7:] + "/layer.tar"
                if name not in written:
                    _add_dir(tf, name.partition("/")[0])
                _add_bytes(tf, name, layer, written)
                layer_names.append(name)
            entries.append({"Config": config_name, "RepoTags": list(image.names), "Layers": layer_names})
        _add_bytes(tf, "manifest.json", json.dumps(entries).encode(), written)
