"""Records on disk: one JSON file per sandbox or container, each written atomically
(`podhost.atomicfile`), so a daemon SIGKILLed at any instant leaves either the old record or the new one,
never half of one. This module owns only the files; the services decide what goes in them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from podhost.atomicfile import sweep_partial_writes, write_atomic
from podhost.runtime.model import from_dict, to_dict

log = logging.getLogger(__name__)

R = TypeVar("R")


class RecordStore(Generic[R]):
    """The records of one kind (sandboxes or containers), keyed by id, cached in memory."""

    def __init__(
        self,
        directory: Path,
        record_type: type[R],
        corrupt_dir: Path | None = None,
        volatile: tuple[Path, tuple[str, ...]] | None = None,
    ) -> None:
        """`volatile`: (a directory on tmpfs, the key path of a field) keeps that field of each record out
        of `directory`, in a file of its own there: values that must not reach a disk (a container's
        environment may hold a Secret's). After a reboot it is gone, and the field reads empty."""
        self.directory = directory
        self.record_type = record_type
        self.volatile = volatile
        self._cache: dict[str, R] = {}
        self._lock = threading.RLock()  # guards the two dicts, never held across I/O
        self._record_locks: dict[str, threading.Lock] = {}
        #: ids whose record could not be read at load: recovery cleans up after them from the run dir.
        self.corrupt: list[str] = []
        directory.mkdir(parents=True, exist_ok=True)
        sweep_partial_writes(directory)  # writes the previous daemon never finished
        for path in directory.glob("*.json"):
            try:
                record = from_dict(record_type, self._merged(path.stem, json.loads(path.read_bytes())))
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

        if volatile is not None and volatile[0].is_dir():
            sweep_partial_writes(volatile[0])  # its half-written parts, as above
            for path in volatile[0].glob("*.json"):  # a part whose record never got written
                if path.stem not in self._cache:
                    path.unlink(missing_ok=True)

    def _record_lock(self, record_id: str) -> threading.Lock:
        with self._lock:
            return self._record_locks.setdefault(record_id, threading.Lock())

    def put(self, record_id: str, record: R, durable: bool = True) -> None:
        """Write one record. Writes of one record are serialised; writes of different records (and every
        read) proceed while a write waits for its fsync, so parallel pod starts do not queue up here.
        `durable=False` skips the fsyncs (the write still survives the daemon's death, not the machine's)."""
        data = to_dict(record)
        with self._record_lock(record_id):
            if self.volatile is not None:
                directory = self.volatile[0]
                holder, last = self._volatile_field(data)
                directory.mkdir(parents=True, exist_ok=True)
                kept = json.dumps(holder.pop(last)).encode()
                write_atomic(directory / f"{record_id}.json", kept, 0o600, durable=False)
            write_atomic(
                self.directory / f"{record_id}.json",
                json.dumps(data, indent=1, sort_keys=True).encode(),
                durable=durable,
            )
            with self._lock:
                self._cache[record_id] = record

    def _merged(self, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """A record read from disk with its volatile field put back (absent after a reboot)."""
        if self.volatile is None:
            return data
        holder, last = self._volatile_field(data)
        try:
            holder[last] = json.loads((self.volatile[0] / f"{record_id}.json").read_bytes())
        except (OSError, ValueError):
            holder.pop(last, None)  # the record type's default
        return data

    def _volatile_field(self, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The dict of a record's data holding the volatile field, and that field's key."""
        assert self.volatile is not None
        *parents, last = self.volatile[1]
        for key in parents:
            data = data[key]
        return data, last

    def get(self, record_id: str) -> R | None:
        return self._cache.get(record_id)  # a dict read is atomic; writers replace whole entries

    def delete(self, record_id: str) -> None:
        with self._record_lock(record_id):
            (self.directory / f"{record_id}.json").unlink(missing_ok=True)
            if self.volatile is not None:
                (self.volatile[0] / f"{record_id}.json").unlink(missing_ok=True)
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
