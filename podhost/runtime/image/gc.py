"""Image garbage collection: by disk-usage thresholds, and on demand.

The kubelet's policy (pkg/kubelet/images/image_gc_manager.go), applied by the runtime to its own store:
when the image filesystem is more than `high` percent used, remove unused images, oldest first, until it
is at most `low` percent used. "Unused" means no container (running or exited) references the image;
pinned images (the pause image) are never removed, nor images younger than `min_age` (a pull that has
not yet been given to CreateContainer must not be collected under it). `prune()` removes every unused,
unpinned image at once (what `crictl rmi --prune` does through CRI).

The collector runs after each pull (`poke`) and every `interval` seconds on its own thread. It decides
only which images go; removal is `ImageStore.remove`, which deletes layers no image references.
Known race, as in the kubelet: a CreateContainer that starts between the in-use check and the removal
of an old unused image fails with NotFound and is retried by its caller.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podhost.errors import FailedPrecondition, NotFound
from podhost.runtime.image.store import ImageStore
from podhost.runtime.model import Image

log = logging.getLogger(__name__)

DEFAULT_MIN_AGE = 120.0  # seconds: the kubelet's ImageMinimumGCAge
DEFAULT_INTERVAL = 300.0  # seconds: the kubelet's image GC period


@dataclass(frozen=True)
class Usage:
    """The image filesystem as statvfs(2) sees it."""

    capacity: int
    used: int

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.capacity if self.capacity else 0.0


def fs_usage(path: Path) -> Usage:
    st = os.statvfs(path)
    return Usage(st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize)


def candidates(images: list[Image], in_use: set[str], now_ns: int, min_age: float) -> list[Image]:
    """Images that may be removed, oldest first (pure)."""
    cutoff = now_ns - int(min_age * 1e9)
    free = [i for i in images if not i.pinned and i.id not in in_use and i.created_at <= cutoff]
    return sorted(free, key=lambda i: (i.created_at, i.id))


class ImageGC:
    """Removes unused images from `store`; `in_use()` gives the image ids containers reference."""

    def __init__(
        self,
        store: ImageStore,
        in_use: Callable[[], set[str]],
        high_percent: int = 85,
        low_percent: int = 80,
        *,
        min_age: float = DEFAULT_MIN_AGE,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.store = store
        self.in_use = in_use
        self.high_percent = high_percent
        self.low_percent = low_percent
        self.min_age = min_age
        self.interval = interval
        self._lock = threading.Lock()  # one collection at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def usage(self) -> Usage:
        return fs_usage(self.store.root)

    def _remove(self, images: list[Image], enough: Callable[[], bool]) -> list[str]:
        removed: list[str] = []
        in_use = self.in_use()  # after listing: a container created meanwhile keeps its image
        for image in images:
            if enough():
                break
            if image.id in in_use:
                continue
            try:
                self.store.remove(image.id)
            except (NotFound, FailedPrecondition) as e:
                log.info("image gc: skipping %s: %s", image.id, e)
                continue
            removed.append(image.id)
            log.info("image gc: removed %s (%s)", image.id, ", ".join(image.repo_tags) or "untagged")
        return removed

    def collect(self) -> list[str]:
        """Apply the thresholds once; returns the ids removed."""
        with self._lock:
            usage = self.usage()
            if usage.percent <= self.high_percent:
                return []
            log.info(
                "image gc: %s is %.1f%% used (high threshold %d%%): freeing down to %d%%",
                self.store.root,
                usage.percent,
                self.high_percent,
                self.low_percent,
            )
            images = candidates(self.store.list(), self.in_use(), time.time_ns(), self.min_age)
            removed = self._remove(images, lambda: self.usage().percent <= self.low_percent)
            after = self.usage().percent
            if after > self.low_percent:
                log.warning(
                    "image gc: %s still %.1f%% used after removing %d image(s): nothing more may go",
                    self.store.root,
                    after,
                    len(removed),
                )
            return removed

    def prune(self) -> list[str]:
        """Remove every unused, unpinned image regardless of age and usage; returns the ids removed."""
        with self._lock:
            images = candidates(self.store.list(), self.in_use(), time.time_ns(), 0.0)
            return self._remove(images, lambda: False)

    # --- background ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="image-gc", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        """Check the thresholds soon (after a pull), without blocking the caller."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.collect()
            except Exception:
                log.exception("image gc failed")
