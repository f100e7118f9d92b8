"""Whole-file writes that a crash cannot tear: the one way podhost replaces a file it owns.

A write goes to a temp file in the same directory, is fsynced, renamed over the old file, and the
directory is fsynced, so a process SIGKILLed at any instant leaves either the old content or the new,
never half of it. Neutral ground: the runtime's records and the kubelet's desired state both use it, and
neither layer imports the other for it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, whole.

    `durable=False` skips the fsyncs: for run-dir files that a reboot wipes and the runtime rewrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
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


def write_json_atomic(path: Path, obj: Any, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), durable=durable)


def sweep_partial_writes(directory: Path) -> None:
    """Remove the temp files of writes a killed process never finished in `directory` (write_atomic's
    hidden `.<name>.<pid>.<thread>.tmp`). Only while nothing writes there, e.g. at daemon start."""
    if directory.is_dir():
        for stale in directory.glob(f".*{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
