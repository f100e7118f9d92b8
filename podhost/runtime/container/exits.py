"""Container exits as events: inotify on conmon's exit dir, plus pidfds that reap exited conmons.

Theory of operation. conmon writes `<exit dir>/<container id>` (the exit code as text) the moment the
container's init exits, through a temp file renamed into place, so IN_MOVED_TO (or IN_CLOSE_WRITE, for
a writer that does not rename) on the directory says "container <id> exited, its code is readable". One
thread blocks in epoll on the inotify fd and on a pidfd per conmon: conmon double-forks, and when the
daemon is a child subreaper the detached conmon is re-parented to it, so its exit must be reaped here or
it stays a zombie. No timer, no polling: the thread sleeps until the kernel has news.

Owns the thread and the fds. Never reads exit codes or touches records: it hands the container id to
the callback given at construction (which must be quick, it runs on this thread).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from podhost.runtime import procs

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(None, use_errno=True)


def parse_events(buffer: bytes) -> list[tuple[int, str]]:
    """(mask, name) of each `struct inotify_event` in `buffer`."""
    out = []
    offset = 0
    while offset + _EVENT.size <= len(buffer):
        _, mask, _, length = _EVENT.unpack_from(buffer, offset)
        raw = buffer[offset + _EVENT.size : offset + _EVENT.size + length]
        out.append((mask, raw.split(b"\0", 1)[0].decode(errors="replace")))
        offset += _EVENT.size + length
    return out


def is_exit_file_name(name: str) -> bool:
    """conmon's final file is named after the container id; its temp files carry a '.XXXXXX' suffix."""
    return bool(name) and "." not in name


class ExitWatcher:
    def __init__(self, exit_dir: Path, on_exit_file: Callable[[str], None]) -> None:
        exit_dir.mkdir(parents=True, exist_ok=True)
        self.exit_dir = exit_dir
        self._on_exit_file = on_exit_file
        self._inotify = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self._inotify, os.fsencode(exit_dir), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            err = ctypes.get_errno()
            os.close(self._inotify)
            raise OSError(err, f"inotify_add_watch {exit_dir}")
        self._epoll = select.epoll()
        self._epoll.register(self._inotify, select.EPOLLIN)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._pidfds: dict[int, int] = {}  # pidfd -> pid
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="container-exits", daemon=True)
        self._thread.start()

    def watch_process(self, pid: int, started: int) -> None:
        """Reap `pid` (a conmon) when it exits, if it is our child by then."""
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return
        if procs.start_time(pid) != started:
            os.close(pidfd)
            return
        with self._lock:
            self._pidfds[pidfd] = pid
        self._epoll.register(pidfd, select.EPOLLIN)

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        with self._lock:
            for pidfd in self._pidfds:
                os.close(pidfd)
            self._pidfds.clear()
        for fd in (self._inotify, self._wake_r, self._wake_w):
            os.close(fd)
        self._epoll.close()

    def _run(self) -> None:
        while not self._stopping:
            try:
                ready = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in ready:
                if self._stopping:
                    return
                if fd == self._inotify:
                    self._read_inotify()
                elif fd != self._wake_r:
                    self._reap(fd)

    def _read_inotify(self) -> None:
        try:
            buffer = os.read(self._inotify, 65536)
        except BlockingIOError:
            return
        for mask, name in parse_events(buffer):
            if mask & (IN_MOVED_TO | IN_CLOSE_WRITE) and is_exit_file_name(name):
                try:
                    self._on_exit_file(name)
                except Exception:
                    log.exception("container %s: handling its exit failed", name[:13])

    def _reap(self, pidfd: int) -> None:
        with self._lock:
            pid = self._pidfds.pop(pidfd, None)
        if pid is None:
            return
        self._epoll.unregister(pidfd)
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            pass  # not our child: its parent (or init) reaps it
        finally:
            os.close(pidfd)
