"""Reading CRI-format container logs, as `crictl logs` and `kubectl logs` do.

The format (CRI "container logs" design, written by conmon's k8s-file driver) is one record per line:

    <RFC 3339 nano timestamp> <stdout|stderr> <tags> <content>

where tags is "F" for a complete line or "P" for a partial one whose content continues in the next record
(no newline is added after it). Parsing is pure; `copy_log` reads a file once, `follow_log` keeps reading
as the runtime appends, reopens it after a rotation (ReopenContainerLog) and stops once the container
has exited and the file is drained. Bytes stay bytes: logs need not be UTF-8.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from podhost.cri import api_pb2 as pb
from podhost.errors import NotFound

if TYPE_CHECKING:
    from podhost.cri.client import CRIClient

FOLLOW_POLL_SECONDS = 0.1
#: How often `follow_log` asks whether the container still runs while the file is quiet.
LIVENESS_SECONDS = 1.0


@dataclass(frozen=True)
class LogRecord:
    timestamp: str
    stream: str  # "stdout" or "stderr"
    partial: bool
    content: bytes


def parse_line(line: bytes) -> LogRecord | None:
    """One record from one file line (with or without its newline); None for a line that is not one."""
    line = line.rstrip(b"\n")
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    timestamp, stream, tags = parts[0], parts[1], parts[2]
    if stream not in (b"stdout", b"stderr"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogRecord(timestamp.decode(), stream.decode(), b"P" in tags.split(b":"), content)


def format_record(record: LogRecord, timestamps: bool = False) -> bytes:
    """The text a reader sees for one record: its content, a newline unless partial, a timestamp if asked."""
    text = record.content if record.partial else record.content + b"\n"
    return (record.timestamp.encode() + b" " + text) if timestamps else text


def last_lines(data: bytes, n: int | None) -> list[bytes]:
    """The file's lines, or only the last `n` of them (`--tail N`; None or a negative n means all)."""
    lines = data.splitlines(keepends=True)
    if n is None or n < 0:
        return lines
    return lines[len(lines) - n :] if n else []


@dataclass
class LogWriter:
    """Where records go: stdout records to `stdout`, stderr records to `stderr` (as crictl does)."""

    stdout: BinaryIO
    stderr: BinaryIO
    timestamps: bool = False

    def write_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            record = parse_line(line)
            if record is None:
                continue
            out = self.stderr if record.stream == "stderr" else self.stdout
            out.write(format_record(record, self.timestamps))
            out.flush()


def copy_log(path: str, writer: LogWriter, tail: int | None = None) -> None:
    with open(path, "rb") as f:
        writer.write_lines(last_lines(f.read(), tail))


def follow_log(
    path: str,
    writer: LogWriter,
    still_running: Callable[[], bool],
    tail: int | None = None,
    poll: float = FOLLOW_POLL_SECONDS,
) -> None:
    """Print the log and keep printing what is appended until the container exits (`still_running`)."""
    f = open(path, "rb")  # noqa: SIM115 - reopened on rotation, closed in finally
    try:
        writer.write_lines(last_lines(f.read(), tail))
        pending = b""
        last_check = time.monotonic()
        running = True
        while True:
            chunk = f.read()
            if chunk:
                data = pending + chunk
                complete, _, pending = data.rpartition(b"\n")
                if complete:
                    writer.write_lines((complete + b"\n").splitlines(keepends=True))
                continue
            if _rotated(path, f):
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                continue
            if not running:
                return
            now = time.monotonic()
            if now - last_check >= LIVENESS_SECONDS:
                last_check = now
                # One more read after the container is seen gone, so its last lines are not lost.
                running = still_running()
                continue
            time.sleep(poll)
    finally:
        f.close()


def _rotated(path: str, f: BinaryIO) -> bool:
    """True when `path` now names another file than the one open (the log was rotated and reopened)."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def show_container_log(
    client: CRIClient | None, container_id: str, path: str, writer: LogWriter, follow: bool, tail: int | None
) -> None:
    """Print a container's CRI log; with `follow` (and a client), keep printing while it is running."""
    if not (follow and client is not None):
        copy_log(path, writer, tail)
        return

    def still_running() -> bool:
        try:
            return client.container_status(container_id).status.state == pb.CONTAINER_RUNNING
        except NotFound:
            return False

    follow_log(path, writer, still_running, tail)
