"""Pulling an image from a registry into the local store (CRI PullImage).

Theory of operation, one pull:
1. Resolve. The reference's endpoints (`hosts.endpoints`: mirrors in order, then the registry) are tried
   in turn for the manifest; an endpoint that is down, refuses, or lacks the image passes to the next.
   The manifest is checked against the digest it was asked by (or the `Docker-Content-Digest` the
   registry sent); an index is resolved to this machine's platform and that manifest fetched by digest
   from the same endpoint. Every blob after that comes from the endpoint that answered.
2. Config. Fetched whole (small, bounded) and verified; its `rootfs.diff_ids` say which layers the store
   already has (`ImageStore.has_layer`): those are not downloaded.
3. Layers. Missing layers are downloaded concurrently (`max_concurrent_downloads` at once, manifest
   order first) into a work directory of the store (`ImageStore.temp_dir`), each hashed while it
   streams. The store unpacks them in order *while they download*: each layer reaches `add_image` as a
   reader that follows its file as it grows (`_Tail`), and the store checks both digests again itself.
4. Commit. `add_image` makes the image visible all at once, or not at all.

Integrity: a blob whose content does not hash to its digest, or runs past its size, fails the pull with
an error naming the blob (InvalidArgument), whichever endpoint served it; nothing is retried from a
mirror, so a bad mirror is seen. Atomicity: everything a pull writes lives in its work directory
until the commit; an error removes it, and a killed daemon leaves it to the store's startup sweep.

Two pulls at once: layers are locked by diff_id (in sorted order, so pulls never deadlock) from before
their download until the image holding them is committed, so a second pull of the same image (or of
one sharing layers) waits, then finds the layers stored and downloads none of them.

Progress cannot be streamed over CRI PullImage (a unary call); it is logged here, per pull, with the
reference and the manifest digest.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from podhost.config import RegistryConfig
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, PodhostError, Unavailable
from podhost.runtime.image import reference
from podhost.runtime.image.registry import auth, hosts, manifest
from podhost.runtime.image.registry.client import Cancelled, Fetched, RegistryClient
from podhost.runtime.image.store import ImageStore
from podhost.runtime.image.unpack import LayerSource
from podhost.runtime.model import Image

log = logging.getLogger(__name__)


@dataclass
class Resolved:
    """What step 1 found: the endpoint that answered, the platform manifest and how we got to it."""

    client: RegistryClient
    manifest: manifest.Manifest
    manifest_bytes: bytes
    manifest_digest: str
    index_digest: str | None


@dataclass
class _Download:
    """One blob being written to `path`; readers follow it with `_Tail`."""

    desc: manifest.Descriptor
    path: Path
    written: int = 0
    finished: bool = False
    error: BaseException | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def advance(self, n: int) -> None:
        with self.cond:
            self.written += n
            self.cond.notify_all()

    def finish(self, error: BaseException | None) -> None:
        with self.cond:
            self.finished, self.error = True, error
            self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.finished)


class _Tail(io.RawIOBase):
    """Reads a blob while it downloads: blocks for more bytes, EOF once the download has succeeded."""

    def __init__(self, download: _Download) -> None:
        self._dl = download
        self._file: io.FileIO | None = None
        self._pos = 0
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.started = True
        dl = self._dl
        with dl.cond:
            dl.cond.wait_for(lambda: dl.written > self._pos or dl.finished)
            if dl.error is not None:
                raise dl.error
            available = dl.written - self._pos
        if available <= 0:
            return 0
        if self._file is None:
            self._file = io.FileIO(dl.path, "r")
        n = self._file.readinto(memoryview(buffer)[: min(len(buffer), available)])
        self._pos += n or 0
        return n or 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


class _KeyedLocks:
    """Named locks held as a sorted set; entries are dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, keys: Sequence[str]) -> Iterator[None]:
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                with self._guard:
                    lock, users = self._locks.get(key, (threading.Lock(), 0))
                    self._locks[key] = (lock, users + 1)
                taken.append(key)
                lock.acquire()
            yield
        finally:
            for key in reversed(taken):
                with self._guard:
                    lock, users = self._locks[key]
                    if lock.locked():
                        lock.release()
                    if users <= 1:
                        del self._locks[key]
                    else:
                        self._locks[key] = (lock, users - 1)


def pull_names(ref: reference.Reference) -> list[str]:
    """The names a pulled image gets: its tag, or for a digest reference its repo digest only."""
    if ref.digest:
        return [f"{ref.repository}@{ref.digest}"]
    return [str(ref)]


def config_diff_ids(config: bytes, what: str) -> list[str]:
    try:
        doc = json.loads(config)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise InvalidArgument(f"{what}: no rootfs.diff_ids ({e})") from e
    if not isinstance(diff_ids, list):
        raise InvalidArgument(f"{what}: rootfs.diff_ids is not a list")
    return [reference.check_digest(str(d)) for d in diff_ids]


class Puller:
    """Pulls images into one store; thread-safe (the CRI server pulls from several threads)."""

    def __init__(
        self,
        store: ImageStore,
        registries: dict[str, RegistryConfig] | None = None,
        max_concurrent_downloads: int = 3,
        *,
        docker_config: Path | None = None,
        platform: manifest.Platform | None = None,
    ) -> None:
        self.store = store
        self.registries = dict(registries or {})
        self.max_concurrent_downloads = max(1, max_concurrent_downloads)
        self.docker_config = docker_config
        self.platform = platform or manifest.host_platform()
        self._layer_locks = _KeyedLocks()

    # --- step 1: resolve ------------------------------------------------------------------------------

    def _client(self, endpoint: hosts.Endpoint, cri_auth: auth.AuthConfig | None) -> RegistryClient:
        creds = auth.credentials_for(endpoint.host, cri_auth, self.registries, self.docker_config)
        return RegistryClient(endpoint, creds, pool_size=self.max_concurrent_downloads + 1)

    def resolve(self, ref: reference.Reference, cri_auth: auth.AuthConfig | None = None) -> Resolved:
        """Find the platform manifest of `ref` on the first endpoint that has it (caller closes the client)."""
        failures: list[PodhostError] = []
        for endpoint in hosts.endpoints(ref.domain, self.registries):
            client = self._client(endpoint, cri_auth)
            try:
                return self._resolve_on(client, ref)
            except (NotFound, Unavailable, FailedPrecondition) as e:
                client.close()
                log.info("pull %s: endpoint %s: %s", ref, endpoint, e)
                failures.append(e)
            except BaseException:
                client.close()
                raise
        if len(failures) == 1:
            raise failures[0]
        kinds = {type(f) for f in failures}
        cls: type[PodhostError] = kinds.pop() if len(kinds) == 1 else Unavailable
        raise cls(f"pull {ref}: every endpoint failed: " + "; ".join(str(f) for f in failures))

    def _resolve_on(self, client: RegistryClient, ref: reference.Reference) -> Resolved:
        what = f"{ref}"
        top = client.get_manifest(ref.path, ref.digest or ref.tag)
        top_digest = self._check_top(top, ref, client)
        doc = manifest.parse(top.data, top.content_type, f"manifest {top_digest}")
        index_digest = None
        data, digest = top.data, top_digest
        if isinstance(doc, manifest.Index):
            index_digest = top_digest
            desc = manifest.choose(doc, self.platform, f"{what} (index {top_digest})")
            sub = client.get_manifest(ref.path, desc.digest)
            manifest.verify(sub.data, desc.digest, f"manifest {desc.digest} of {what}")
            data, digest = sub.data, desc.digest
            doc = manifest.parse(sub.data, sub.content_type, f"manifest {desc.digest}")
            if isinstance(doc, manifest.Index):
                raise InvalidArgument(
                    f"{what}: index {top_digest} points at another index for {self.platform}"
                )
        return Resolved(client, doc, data, digest, index_digest)

    @staticmethod
    def _check_top(top: Fetched, ref: reference.Reference, client: RegistryClient) -> str:
        computed = manifest.sha256_digest(top.data)
        if ref.digest:
            manifest.verify(top.data, ref.digest, f"manifest {ref}")
        elif top.digest_header.startswith("sha256:") and top.digest_header != computed:
            raise InvalidArgument(
                f"manifest {ref} from {client.endpoint.host}: content hashes to {computed}, but the registry "
                f"says {top.digest_header}"
            )
        return computed

    # --- the pull --------------------------------------------------------------------------------------

    def pull(self, ref: str, cri_auth: auth.AuthConfig | None = None) -> Image:
        """Pull `ref` (tag or digest) for this machine's platform; returns the stored image."""
        parsed = reference.parse(ref)
        started = time.monotonic()
        resolved = self.resolve(parsed, cri_auth)
        try:
            for attempt in range(2):
                try:
                    image, downloaded = self._fetch_and_store(parsed, resolved)
                    break
                except InvalidArgument as e:
                    # A layer we counted on was removed (image GC) between the check and the commit.
                    if attempt or "no blob was given" not in str(e):
                        raise
                    log.info("pull %s: a stored layer went away during the pull; fetching it", parsed)
        finally:
            resolved.client.close()
        log.info(
            "pull %s: image %s (manifest %s) from %s in %.2fs, %d bytes downloaded",
            parsed,
            image.id,
            resolved.manifest_digest,
            resolved.client.endpoint,
            time.monotonic() - started,
            downloaded,
        )
        return image

    def _fetch_and_store(self, ref: reference.Reference, r: Resolved) -> tuple[Image, int]:
        cfg_what = f"config of {ref}"
        config = self._config(r, ref, cfg_what)
        diff_ids = config_diff_ids(config, cfg_what)
        layers = r.manifest.layers
        if len(diff_ids) != len(layers):
            raise InvalidArgument(
                f"{ref}: manifest {r.manifest_digest} has {len(layers)} layers, its config {len(diff_ids)} diff_ids"
            )
        missing = [d for d in diff_ids if not self.store.has_layer(d)]
        with self._layer_locks.hold(missing):
            return self._store_image(ref, r, config, diff_ids)

    def _config(self, r: Resolved, ref: reference.Reference, what: str) -> bytes:
        known = self.store.find(r.manifest.config.digest)
        if known is not None and known.id == r.manifest.config.digest:
            with contextlib.suppress(OSError, NotFound):
                data = self.store.config_blob(known.id)
                manifest.verify(data, known.id, what)
                return data
        return r.client.fetch_blob(ref.path, r.manifest.config, what)

    def _store_image(
        self, ref: reference.Reference, r: Resolved, config: bytes, diff_ids: list[str]
    ) -> tuple[Image, int]:
        layers = r.manifest.layers
        with self.store.temp_dir() as work:
            downloads: dict[str, _Download] = {}
            sources: list[LayerSource | None] = []
            tails: list[_Tail | None] = []
            for desc, diff_id in zip(layers, diff_ids, strict=True):
                if self.store.has_layer(diff_id):
                    sources.append(None)
                    tails.append(None)
                    continue
                dl = downloads.get(desc.digest)
                if dl is None:
                    dl = downloads[desc.digest] = _Download(desc, work / desc.digest.removeprefix("sha256:"))
                tail = _Tail(dl)
                sources.append(io.BufferedReader(tail, 1 << 20))
                tails.append(tail)
            total = sum(d.desc.size for d in downloads.values())
            log.info(
                "pull %s: manifest %s, %d layers, %d to download (%d bytes)",
                ref,
                r.manifest_digest,
                len(layers),
                len(downloads),
                total,
            )
            cancel = threading.Event()
            with ThreadPoolExecutor(self.max_concurrent_downloads, thread_name_prefix="pull") as pool:
                futures = [
                    pool.submit(self._download, r.client, ref, dl, cancel) for dl in downloads.values()
                ]
                try:
                    image = self.store.add_image(
                        r.manifest_bytes,
                        config,
                        sources,
                        pull_names(ref),
                        index_digest=r.index_digest,
                        concurrent=True,  # every layer is its own download
                    )
                except BaseException as e:
                    reported = self._explain(e, tails, downloads, cancel, futures)
                    if reported is e:
                        raise
                    raise reported from e
                finally:
                    cancel.set()
                    for t in tails:
                        if t is not None:
                            t.close()
            return image, total

    def _download(
        self, client: RegistryClient, ref: reference.Reference, dl: _Download, cancel: threading.Event
    ) -> None:
        error: BaseException | None = None
        try:
            if cancel.is_set():
                raise Cancelled(f"download of {dl.desc.digest} cancelled")
            client.download_blob(ref.path, dl.desc, dl.path, cancel=cancel, on_bytes=dl.advance)
        except BaseException as e:
            error = e
        finally:
            dl.finish(error)

    @staticmethod
    def _explain(
        error: BaseException,
        tails: list[_Tail | None],
        downloads: dict[str, _Download],
        cancel: threading.Event,
        futures: list[Future[None]],
    ) -> BaseException:
        """The error to report: a blob that failed verification beats the unpack error it caused.

        The store may trip over a corrupted layer (a gzip error) before that layer's download has
        finished hashing it; wait for that one download (it is the one being read) and prefer its words.
        """
        reading = [t for t in tails if t is not None and t.started]
        current = reading[-1]._dl if reading else None  # noqa: SLF001
        if current is not None and not isinstance(error, Cancelled):
            current.wait()
        cancel.set()
        for f in futures:
            f.result()  # _download never raises; this only waits
        for dl in downloads.values():
            if isinstance(dl.error, InvalidArgument):
                return dl.error
        for dl in downloads.values():
            if dl.error is not None and not isinstance(dl.error, Cancelled) and dl is current:
                return dl.error
        return error
