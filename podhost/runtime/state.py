"""Records on disk: one JSON file per sandbox or container, each written atomically.

A write goes to a temp file in the same directory, is fsynced, renamed over the old file, and the directory
is fsynced, so a daemon SIGKILLed at any instant leaves either the old record or the new one, never half of
one. This module owns only the files; the services decide what goes in them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from podhost.runtime.model import from_dict, to_dict

log = logging.getLogger(__name__)

R = TypeVar("R")


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, whole.

    `durable=False` skips the fsyncs: for run-dir files that a reboot wipes and the runtime rewrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


class RecordStore(Generic[R]):
    """The records of one kind (sandboxes or containers), keyed by id, cached in memory."""

    def __init__(self, directory: Path, record_type: type[R], corrupt_dir: Path | None = None) -> None:
        self.directory = directory
        self.record_type = record_type
        self._cache: dict[str, R] = {}
        self._lock = threading.RLock()  # guards the two dicts, never held across I/O
        self._record_locks: dict[str, threading.Lock] = {}
        #: ids whose record could not be read at load: recovery cleans up after them from the run dir.
        self.corrupt: list[str] = []
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(".*.tmp"):  # a write the previous daemon never finished
            stale.unlink(missing_ok=True)
        for path in directory.glob("*.json"):
            try:
                record = from_dict(record_type, json.loads(path.read_bytes()))
                if getattr(record, "id", path.stem) != path.stem:
                    raise ValueError("the record names another id")
                self._cache[path.stem] = record
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                # Kept aside for a human, out of the records, rather than silently dropped.
                self.corrupt.append(path.stem)
                aside = corrupt_dir or directory.parent / "corrupt"
                aside.mkdir(parents=True, exist_ok=True)
                log.error("record %s is unreadable (%s): moved to %s", path, e, aside)
                path.rename(aside / f"{directory.name}-{path.stem}-{time.time_ns()}.json")

    def _record_lock(self, record_id: str) -> threading.Lock:
        with self._lock:
            return self._record_locks.setdefault(record_id, threading.Lock())

    def put(self, record_id: str, record: R, durable: bool = True) -> None:
        """Write one record. Writes of one record are serialised; writes of different records (and every
        read) proceed while a write waits for its fsync, so parallel pod starts do not queue up here.
        `durable=False` skips the fsyncs (the write still survives the daemon's death, not the machine's)."""
        data = to_dict(record)
        with self._record_lock(record_id):
            write_atomic(
                self.directory / f"{record_id}.json",
                json.dumps(data, indent=1, sort_keys=True).encode(),
                durable=durable,
            )
            with self._lock:
                self._cache[record_id] = record

    def get(self, record_id: str) -> R | None:
        return self._cache.get(record_id)  # a dict read is atomic; writers replace whole entries

    def delete(self, record_id: str) -> None:
        with self._record_lock(record_id):
            (self.directory / f"{record_id}.json").unlink(missing_ok=True)
            with self._lock:
                self._cache.pop(record_id, None)
                self._record_locks.pop(record_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def __iter__(self) -> Iterator[R]:
        with self._lock:
            return iter(list(self._cache.values()))

    def __len__(self) -> int:
        return len(self._cache)
