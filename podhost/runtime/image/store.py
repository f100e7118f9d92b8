"""The local image store: content-addressed blobs, one unpacked directory per layer, and an index of images.

Layout under the root (`Config.image_dir`):

    blobs/sha256/<hex>     manifests and configs (compressed layer blobs are not kept once unpacked)
    layers/<hex>/          one unpacked layer per diff_id, the overlay lowerdir, shared by every image
                           that has it
    index.json             {"images": {id: Image}, "manifests": {id: digest}, "layers": {diff_id: {size}}}
    tmp/                   work directories of imports in progress
    index.lock, alive.lock flock(2) files (see below)

Theory of operation. An import *prepares* outside the lock (each layer is unpacked into tmp/ and both
of its digests are checked) and then *commits* under the lock: layers are renamed into layers/, blobs
written, and index.json replaced atomically last. A removal writes index.json first and deletes layer
directories after. So a daemon SIGKILLed at any point leaves the index true; what it can leave is
garbage (tmp/ work dirs, layers or blobs no image references), which the next store removes when it
is constructed. That startup sweep runs only when no other live store holds `alive.lock` (each store
holds it shared for its lifetime), so a second store on the same root never sweeps a peer's import.
Mutations take `index.lock` exclusively and re-read index.json if a peer changed it, so several
stores (threads or processes) on one root stay coherent; one store is thread-safe through an RLock.
An import that reuses a stored layer leases it until it commits, so a concurrent `remove` of the last
image using that layer keeps it (leases are per store object: peers in other processes do not see
them).

For a registry puller: `has_layer(diff_id)` says which blobs need no download, `temp_dir()` gives a
download area on the store's filesystem, and `add_image(manifest, config, [path | None, ...], [ref])`
does the rest (pass the pulled reference; a digest reference adds a repo digest and no tag).

Durability is against process crashes, not power loss: unpacked files are not fsynced one by one.
The store never mounts anything and never decides whether an image is in use by a container: callers
that remove images must check that first (removing a layer under a running container's overlay
would pull files from under it).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import fcntl
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhost import linux
from podhost.atomicfile import write_atomic, write_json_atomic
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from podhost.runtime.image import reference
from podhost.runtime.image.archive import ImageArchive, parse_json, sha256_digest
from podhost.runtime.image.unpack import LayerInfo, LayerSource, hash_layer, remove_tree, unpack_layer
from podhost.runtime.model import Image, ImageConfig, from_dict, to_dict

log = logging.getLogger(__name__)

INDEX_VERSION = 1
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass
class _Prepared:
    """An image whose layers are unpacked and verified in the work dir, not yet in the store."""

    image_id: str
    config: bytes
    manifest: bytes
    manifest_digest: str
    image_config: ImageConfig
    diff_ids: list[str]
    tags: list[str]
    repositories: list[str]  # for repo digests
    layer_sizes: dict[str, int] = field(default_factory=dict)
    index_digests: list[str] = field(default_factory=list)  # a registry index that led to the manifest


#: Layers of one pull unpacked at once (each its own download and directory).
UNPACK_WORKERS = 4


@dataclass
class _Transaction:
    """Layers unpacked by one import (shared by every image it adds), keyed by diff_id."""

    work: Path
    new_layers: dict[str, LayerInfo] = field(default_factory=dict)
    leased: list[str] = field(default_factory=list)  # stored layers this import reuses


class ImageStore:
    """Images on local disk. Every public method is thread-safe; images returned are copies."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.layers_dir = self.root / "layers"
        self.tmp_dir = self.root / "tmp"
        self.index_path = self.root / "index.json"
        for d in (self.root, self.blobs_dir, self.layers_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o711)
        for d in (self.layers_dir, self.tmp_dir):
            # Each layer unpacks into a directory of its own: on ext4, spread them over block groups.
            # Beside their parent, creating a layer's files scans past every inode the last removal
            # freed (ext4 holds a freed inode back for a while): pulls after removals took 3x longer.
            try:
                linux.mark_top_directory(str(d))
            except OSError as e:  # a placement hint: the store works without it
                log.warning("image store %s: cannot mark %s a top directory: %s", self.root, d.name, e)
        self._lock = threading.RLock()
        self._images: dict[str, Image] = {}
        self._manifests: dict[str, str] = {}  # image id -> manifest digest
        self._layers: dict[str, dict[str, int]] = {}  # diff_id -> {"size": bytes}
        self._stamp: tuple[int, int, int] | None = None
        #: stored layers an import in progress reuses: `remove` keeps them even if no image is left
        #: using them, since the import is about to reference them again.
        self._leases: collections.Counter[str] = collections.Counter()
        self._index_fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._alive_fd = os.open(self.root / "alive.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._alive_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.debug("image store %s: another store is live, skipping the startup sweep", self.root)
        else:
            with self._mutate():
                self._sweep()
        fcntl.flock(self._alive_fd, fcntl.LOCK_SH)
        with self._lock:
            self._refresh()

    def close(self) -> None:
        """Release the store's lock files (the store must not be used afterwards)."""
        with self._lock:
            for name in ("_index_fd", "_alive_fd"):
                fd = getattr(self, name, -1)
                if fd >= 0:
                    os.close(fd)
                    setattr(self, name, -1)

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # --- index ---------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read index.json when it is not the version this store last read or wrote."""
        try:
            st = os.stat(self.index_path)
        except FileNotFoundError:
            self._images, self._manifests, self._layers, self._stamp = {}, {}, {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            doc = json.loads(self.index_path.read_bytes())
            images = {k: from_dict(Image, v) for k, v in doc.get("images", {}).items()}
            manifests = dict(doc.get("manifests", {}))
            layers = {k: dict(v) for k, v in doc.get("layers", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # Never start empty over a damaged index: the sweep would then delete every layer.
            raise RuntimeFailure(
                f"image index {self.index_path} is unreadable ({e}); fix or remove it"
            ) from e
        self._images, self._manifests, self._layers = images, manifests, layers
        self._stamp = stamp

    def _save(self) -> None:
        doc = {
            "version": INDEX_VERSION,
            "images": {k: to_dict(v) for k, v in self._images.items()},
            "manifests": self._manifests,
            "layers": self._layers,
        }
        write_json_atomic(self.index_path, doc)
        st = os.stat(self.index_path)
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def _mutate(self) -> Iterator[None]:
        """Exclusive access to the index across threads and processes; on error, forget unsaved changes."""
        with self._lock:
            fcntl.flock(self._index_fd, fcntl.LOCK_EX)
            try:
                self._refresh()
                yield
            except BaseException:
                self._stamp = None
                self._refresh()
                raise
            finally:
                fcntl.flock(self._index_fd, fcntl.LOCK_UN)

    def _sweep(self) -> None:
        """Remove what an interrupted import or removal left: work dirs, unreferenced layers and blobs."""
        for entry in os.scandir(self.tmp_dir):
            remove_tree(entry.path)
        for d in (self.root, self.blobs_dir, self.layers_dir):
            for entry in os.scandir(d):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    remove_tree(entry.path)
        broken = [
            i for i, img in self._images.items() if not all(self._has_layer_dir(d) for d in img.diff_ids)
        ]
        for image_id in broken:
            log.warning("image store %s: image %s has lost layers; dropping it", self.root, image_id)
            del self._images[image_id]
            self._manifests.pop(image_id, None)
        used_layers = {d for img in self._images.values() for d in img.diff_ids}
        for entry in os.scandir(self.layers_dir):
            if "sha256:" + entry.name not in used_layers:
                log.info("image store %s: removing unreferenced layer %s", self.root, entry.name)
                remove_tree(entry.path)
        used_blobs = set(self._images) | set(self._manifests.values())
        for entry in os.scandir(self.blobs_dir):
            if "sha256:" + entry.name not in used_blobs:
                remove_tree(entry.path)
        stale = set(self._layers) - used_layers
        if broken or stale:
            for diff_id in stale:
                del self._layers[diff_id]
            self._save()

    # --- paths ---------------------------------------------------------------------------------------

    def _layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / reference.check_digest(diff_id).removeprefix("sha256:")

    def _has_layer_dir(self, diff_id: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self._layer_path(diff_id)).st_mode)
        except (FileNotFoundError, InvalidArgument):
            return False

    def has_layer(self, diff_id: str) -> bool:
        """True when the layer is unpacked here (a puller then need not download its blob)."""
        with self._lock:
            self._refresh()
            return diff_id in self._layers and self._has_layer_dir(diff_id)

    @contextlib.contextmanager
    def temp_dir(self) -> Iterator[Path]:
        """A fresh work directory on the store's filesystem, removed on exit (and by the startup sweep)."""
        path = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            remove_tree(path)

    # --- adding images -------------------------------------------------------------------------------

    def add_image(
        self,
        manifest: bytes | None,
        config: bytes,
        layers: Sequence[LayerSource | None],
        names: Iterable[str] = (),
        *,
        layer_digests: Sequence[str | None] | None = None,
        index_digest: str | None = None,
        concurrent: bool = False,
    ) -> Image:
        """Add one image from its blobs; all of it or nothing.

        `layers` are the layer blobs in manifest order (bottom first): a path, bytes or a readable
        stream, or None for a layer the store already has (see `has_layer`; a registry puller skips
        those downloads). With `manifest` None (a docker archive) an OCI manifest is synthesised from
        the layers, using `layer_digests` where known. Every blob is checked against its digest and every
        layer against the config's rootfs.diff_ids; a mismatch is InvalidArgument and adds nothing.
        `index_digest` (a puller's multi-platform index) becomes a repo digest beside the manifest's, so
        the image is found by the digest it was pulled by. With `concurrent`, the layers (independent
        streams, e.g. separate downloads) are unpacked at once, each into its own directory.
        """
        with self._transaction() as tx:
            prepared = self._prepare(
                tx, manifest, config, list(layers), list(names), layer_digests, concurrent=concurrent
            )
            if index_digest:
                prepared.index_digests.append(reference.check_digest(index_digest))
            return self._commit(tx, [prepared])[0]

    def import_archive(self, path: Path) -> list[Image]:
        """Import every image of an OCI image-layout or docker-archive tarball; all of them or none."""
        with ImageArchive(Path(path)) as archive, self._transaction() as tx:
            prepared = []
            for found in archive.images():
                layers: list[LayerSource | None] = list(found.layers)
                prepared.append(
                    self._prepare(tx, found.manifest, found.config, layers, found.names, found.layer_digests)
                )
            images = self._commit(tx, prepared)
        log.info("image store %s: imported %s from %s", self.root, [i.id for i in images], path)
        return images

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        with self.temp_dir() as work:
            tx = _Transaction(work)
            try:
                yield tx
            finally:
                with self._lock:
                    self._leases.subtract(tx.leased)
                    self._leases += collections.Counter()  # drop the zero counts

    def _prepare(
        self,
        tx: _Transaction,
        manifest: bytes | None,
        config: bytes,
        layers: list[LayerSource | None],
        names: list[str],
        hinted: Sequence[str | None] | None,
        concurrent: bool = False,
    ) -> _Prepared:
        image_id = sha256_digest(config)
        cfg = parse_json(config, f"image config {image_id}")
        if not isinstance(cfg, dict):
            raise InvalidArgument(f"image config {image_id} is not an object")
        diff_ids = _diff_ids(cfg, image_id)
        image_config = _image_config(cfg, image_id)
        refs = [reference.parse(n) for n in names]
        expected: list[str | None] = list(hinted) if hinted is not None else [None] * len(layers)
        manifest_doc: dict[str, Any] | None = None
        if manifest is not None:
            manifest_doc = _check_manifest(manifest, image_id)
            expected = [str(d.get("digest", "")) for d in manifest_doc["layers"]]
        if not len(diff_ids) == len(layers) == len(expected):
            raise InvalidArgument(
                f"image {image_id}: {len(diff_ids)} diff_ids in the config, {len(expected)} layers in the "
                f"manifest, {len(layers)} layer blobs given"
            )
        for want in expected:
            if want is not None:
                reference.check_digest(want)
        infos = self._prepare_layers(tx, diff_ids, layers, expected, concurrent)
        if manifest is None:
            manifest = _synthesise_manifest(config, infos)
        return _Prepared(
            image_id=image_id,
            config=config,
            manifest=manifest,
            manifest_digest=sha256_digest(manifest),
            image_config=image_config,
            diff_ids=diff_ids,
            tags=[str(r) for r in refs if r.tag],
            repositories=[r.repository for r in refs],
            layer_sizes={i.diff_id: i.size for i in infos},
        )

    def _prepare_layers(
        self,
        tx: _Transaction,
        diff_ids: list[str],
        layers: list[LayerSource | None],
        expected: list[str | None],
        concurrent: bool,
    ) -> list[LayerInfo]:
        """Each layer unpacked (or checked, when stored), in order; with `concurrent`, the distinct
        layers at once: unpacking is mostly file creation and gunzip, which run outside the GIL, so a
        pull uses every core (GNU tar on the same layers gains as much from running in parallel)."""
        items = list(zip(diff_ids, layers, expected, strict=True))
        if not concurrent or sum(src is not None for _, src, _ in items) < 2:
            return [self._prepare_layer(tx, *item) for item in items]
        first = {diff_id: i for i, (diff_id, _, _) in reversed(list(enumerate(items)))}
        with ThreadPoolExecutor(min(UNPACK_WORKERS, len(first)), thread_name_prefix="unpack") as pool:
            futures = {
                diff_id: pool.submit(self._prepare_layer, tx, *items[i]) for diff_id, i in first.items()
            }
        if errors := [e for f in futures.values() if (e := f.exception()) is not None]:
            raise errors[0]
        return [futures[diff_id].result() for diff_id in diff_ids]

    def _prepare_layer(
        self, tx: _Transaction, diff_id: str, src: LayerSource | None, want: str | None
    ) -> LayerInfo:
        if diff_id in tx.new_layers:
            return tx.new_layers[diff_id]
        with self._lock:
            self._refresh()
            stored = diff_id in self._layers and self._has_layer_dir(diff_id)
            if stored:
                self._leases[diff_id] += 1
                tx.leased.append(diff_id)
                size = self._layers[diff_id].get("size", 0)
        if stored:
            if src is None:
                return LayerInfo(want or diff_id, diff_id, size, "")
            info = hash_layer(src)  # already unpacked: only check the blob is what it claims
            _check_layer_digests(info, diff_id, want)
            return LayerInfo(info.digest, diff_id, size, info.media_type, info.blob_size)
        if src is None:
            raise InvalidArgument(f"layer {diff_id} is not in the store and no blob was given for it")
        info = unpack_layer(
            src,
            tx.work / diff_id.removeprefix("sha256:"),
            expected_digest=want,
            expected_diff_id=diff_id,
        )
        tx.new_layers[diff_id] = info
        return info

    def _commit(self, tx: _Transaction, prepared: list[_Prepared]) -> list[Image]:
        moved: list[Path] = []
        with self._mutate():
            try:
                for diff_id, info in tx.new_layers.items():
                    dest = self._layer_path(diff_id)
                    if not self._has_layer_dir(diff_id):
                        os.rename(tx.work / dest.name, dest)
                        moved.append(dest)
                    self._layers.setdefault(diff_id, {"size": info.size})
                for p in prepared:
                    for blob in (p.config, p.manifest):
                        path = self.blobs_dir / sha256_digest(blob).removeprefix("sha256:")
                        if not path.exists():
                            write_atomic(path, blob, mode=0o644)
                images = [self._record(p) for p in prepared]
                self._save()
            except BaseException:
                for dest in moved:
                    remove_tree(dest)
                raise
            return [copy.deepcopy(self._images[i.id]) for i in images]

    def _record(self, p: _Prepared) -> Image:
        image = self._images.get(p.image_id)
        if image is None:
            image = Image(
                id=p.image_id,
                config=p.image_config,
                diff_ids=list(p.diff_ids),
                size=sum(
                    self._layers.get(d, {}).get("size", p.layer_sizes.get(d, 0)) for d in set(p.diff_ids)
                ),
                created_at=time.time_ns(),
            )
            self._images[p.image_id] = image
        self._manifests[p.image_id] = p.manifest_digest
        for tag in p.tags:
            self._assign_tag(image, tag)
        for repo in p.repositories:
            for digest in (p.manifest_digest, *p.index_digests):
                digest_ref = f"{repo}@{digest}"
                if digest_ref not in image.repo_digests:
                    image.repo_digests.append(digest_ref)
        return image

    def _assign_tag(self, image: Image, tag: str) -> None:
        """Give `tag` to `image`, taking it from any other image (which stays, reachable by id)."""
        for other in self._images.values():
            if other is not image and tag in other.repo_tags:
                other.repo_tags.remove(tag)
                log.info("image store %s: tag %s moved from %s to %s", self.root, tag, other.id, image.id)
        if tag not in image.repo_tags:
            image.repo_tags.append(tag)

    # --- lookups -------------------------------------------------------------------------------------

    def _resolve(self, ref_or_id: str) -> tuple[Image, str]:
        """The image `ref_or_id` names and how: "id", "tag" or "digest". NotFound otherwise."""
        s = ref_or_id.strip() if isinstance(ref_or_id, str) else ""
        if not s:
            raise NotFound("image reference is empty")
        if s.startswith("sha256:") and _HEX_PREFIX_RE.match(s[7:]):
            return self._by_id_prefix(s[7:], ref_or_id), "id"
        parsed: reference.Reference | None
        try:
            parsed = reference.parse(s)
        except InvalidArgument:
            parsed = None
        if parsed is not None:
            if parsed.digest:
                for image in self._images.values():
                    if (
                        f"{parsed.repository}@{parsed.digest}" in image.repo_digests
                        or image.id == parsed.digest
                    ):
                        return image, "digest"
            else:
                name = str(parsed)
                for image in self._images.values():
                    if name in image.repo_tags:
                        return image, "tag"
        if _HEX_PREFIX_RE.match(s):
            return self._by_id_prefix(s, ref_or_id), "id"
        raise NotFound(f"image {ref_or_id!r} not found")

    def _by_id_prefix(self, prefix: str, ref: str) -> Image:
        found = [img for i, img in self._images.items() if i[7:].startswith(prefix)]
        if len(found) == 1:
            return found[0]
        if found:
            raise NotFound(f"image id prefix {ref!r} is ambiguous ({len(found)} images)")
        raise NotFound(f"image {ref!r} not found")

    def get(self, ref_or_id: str) -> Image:
        """The image named by a (short or normalised) name, a repo digest, a full id or a unique id prefix."""
        with self._lock:
            self._refresh()
            return copy.deepcopy(self._resolve(ref_or_id)[0])

    def find(self, ref: str) -> Image | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def tag(self, image_id: str, name: str) -> Image:
        """Add the name `name` to the image; a name held by another image moves (as `docker tag`)."""
        parsed = reference.parse(name)
        if not parsed.tag:
            raise InvalidArgument(f"cannot tag with {name!r}: a tag name has no digest-only form")
        with self._mutate():
            image = self._resolve(image_id)[0]
            self._assign_tag(image, str(parsed))
            self._save()
            return copy.deepcopy(image)

    def set_pinned(self, image_id: str, pinned: bool) -> None:
        """Pin (never removed, never garbage-collected: the pause image) or unpin an image."""
        with self._mutate():
            image = self._resolve(image_id)[0]
            if image.pinned != pinned:
                image.pinned = pinned
                self._save()

    def remove(self, ref_or_id: str) -> None:
        """Remove a name (the image goes with its last name), or by id or digest the whole image.

        Layers no image references any more are deleted. FailedPrecondition for a pinned image.
        """
        with self._mutate():
            image, how = self._resolve(ref_or_id)
            if how == "tag":
                tag = reference.normalize(ref_or_id)
                if len(image.repo_tags) > 1:
                    image.repo_tags.remove(tag)
                    repo = reference.parse(tag).repository
                    if not any(reference.parse(t).repository == repo for t in image.repo_tags):
                        image.repo_digests = [d for d in image.repo_digests if not d.startswith(repo + "@")]
                    self._save()
                    return
            if image.pinned:
                raise FailedPrecondition(f"image {image.id} ({', '.join(image.repo_tags)}) is pinned")
            del self._images[image.id]
            manifest_digest = self._manifests.pop(image.id, None)
            used = {d for img in self._images.values() for d in img.diff_ids}
            gone = [d for d in dict.fromkeys(image.diff_ids) if d not in used and not self._leases[d]]
            for diff_id in gone:
                self._layers.pop(diff_id, None)
            self._save()
            # The index no longer names them: a crash from here on leaves only garbage for the sweep.
            for blob in (image.id, manifest_digest):
                if blob and blob not in self._images and blob not in self._manifests.values():
                    (self.blobs_dir / blob.removeprefix("sha256:")).unlink(missing_ok=True)
            for diff_id in gone:
                self._delete_layer_dir(diff_id)
        log.info("image store %s: removed image %s (layers deleted: %d)", self.root, image.id, len(gone))

    def _delete_layer_dir(self, diff_id: str) -> None:
        """Rename into tmp/ first, so a crash mid-delete never leaves a half layer under layers/."""
        src = self._layer_path(diff_id)
        doomed = self.tmp_dir / f"rm-{src.name[:12]}-{secrets.token_hex(4)}"
        try:
            os.rename(src, doomed)
        except FileNotFoundError:
            return
        remove_tree(doomed)

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, TOP layer first (the order of overlayfs `lowerdir=`)."""
        dirs = [self._layer_path(d) for d in reversed(image.diff_ids)]
        for d in dirs:
            if not d.is_dir():
                raise NotFound(f"image {image.id}: layer {d.name} is missing from the store")
        return dirs

    def config_blob(self, image_id: str) -> bytes:
        """The image's config JSON as stored (CRI ImageStatus verbose info, an exporter)."""
        with self._lock:
            self._refresh()
            image = self._resolve(image_id)[0]
        return (self.blobs_dir / image.id.removeprefix("sha256:")).read_bytes()

    def manifest_blob(self, image_id: str) -> bytes:
        with self._lock:
            self._refresh()
            image = self._resolve(image_id)[0]
            digest = self._manifests[image.id]
        return (self.blobs_dir / digest.removeprefix("sha256:")).read_bytes()

    def fs_info(self) -> tuple[int, int]:
        """(bytes used, inodes used) by the whole store, hardlinked inodes counted once."""
        seen: set[tuple[int, int]] = set()
        used = 0
        stack = [str(self.root)]
        while stack:
            path = stack.pop()
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                used += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                try:
                    with os.scandir(path) as it:
                        stack.extend(e.path for e in it)
                except (FileNotFoundError, NotADirectoryError):
                    continue
        return used, len(seen)

    # Last in the class: as a method name, `list` would shadow the builtin in annotations below it.
    def list(self) -> list[Image]:
        """Every image in the store."""
        with self._lock:
            self._refresh()
            return [copy.deepcopy(i) for i in self._images.values()]


# --- pure helpers ------------------------------------------------------------------------------------


def _diff_ids(cfg: dict[str, Any], image_id: str) -> list[str]:
    rootfs = cfg.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise InvalidArgument(f"image config {image_id} has no rootfs.diff_ids")
    for d in diff_ids:
        reference.check_digest(d)
    return [str(d) for d in diff_ids]


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} must be a list of strings")
    return list(value)


def _image_config(cfg: dict[str, Any], image_id: str) -> ImageConfig:
    c = cfg.get("config") or {}
    if not isinstance(c, dict):
        raise InvalidArgument(f"image config {image_id}: config is not an object")
    what = f"image config {image_id}"
    labels = c.get("Labels") or {}
    ports = c.get("ExposedPorts") or {}
    if not isinstance(labels, dict) or not isinstance(ports, dict):
        raise InvalidArgument(f"{what}: Labels and ExposedPorts must be objects")
    return ImageConfig(
        env=_str_list(c.get("Env"), f"{what} Env"),
        entrypoint=_str_list(c.get("Entrypoint"), f"{what} Entrypoint"),
        cmd=_str_list(c.get("Cmd"), f"{what} Cmd"),
        working_dir=str(c.get("WorkingDir") or ""),
        user=str(c.get("User") or ""),
        stop_signal=str(c.get("StopSignal") or ""),
        exposed_ports=sorted(str(p) for p in ports),
        labels={str(k): str(v) for k, v in labels.items()},
    )


def _check_manifest(manifest: bytes, image_id: str) -> dict[str, Any]:
    digest = sha256_digest(manifest)
    doc = parse_json(manifest, f"manifest {digest}")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise InvalidArgument(f"manifest {digest} has no config descriptor")
    if doc["config"].get("digest") != image_id:
        raise InvalidArgument(
            f"manifest {digest} names config {doc['config'].get('digest')}, but the config given is {image_id}"
        )
    layers = doc.get("layers")
    if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
        raise InvalidArgument(f"manifest {digest}: layers is not a list of descriptors")
    return doc


def _check_layer_digests(info: LayerInfo, diff_id: str, want: str | None) -> None:
    if want and info.digest != want:
        raise InvalidArgument(f"layer blob digest mismatch: expected {want}, got {info.digest}")
    if info.diff_id != diff_id:
        raise InvalidArgument(f"layer diff_id mismatch: config says {diff_id}, content is {info.diff_id}")


def _synthesise_manifest(config: bytes, infos: list[LayerInfo]) -> bytes:
    """An OCI manifest for an image that came without one (docker archive); deterministic."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": i.media_type, "digest": i.digest, "size": i.blob_size} for i in infos],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
