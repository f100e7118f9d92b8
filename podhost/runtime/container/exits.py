"""Container exits as events: inotify on conmon's exit dir, plus pidfds that reap exited conmons, served
by a `procs.ProcessWatcher` of its own.

Theory of operation. conmon writes `<exit dir>/<container id>` (the exit code as text) the moment the
container's init exits, through a temp file renamed into place, so IN_MOVED_TO (or IN_CLOSE_WRITE, for
a writer that does not rename) on the directory says "container <id> exited, its code is readable". The
watcher's thread blocks in epoll on the inotify fd and on a pidfd per conmon: conmon double-forks, and
when the daemon is a child subreaper the detached conmon is re-parented to it, so its exit must be reaped
here or it stays a zombie. No timer, no polling: the thread sleeps until the kernel has news. Its own
watcher, not the runtime's: handling a container's exit (NRI plugins, the pod manager's callback) must
never delay the news of a pause's death, which StopPodSandbox may be waiting for.

Owns the watcher and the inotify fd. Never reads exit codes or touches records: it hands the container
id to the callback given at construction (which must be quick, it runs on the watcher's thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from podhost import linux
from podhost.runtime import procs

log = logging.getLogger(__name__)


def is_exit_file_name(name: str) -> bool:
    """conmon's final file is named after the container id; its temp files carry a '.XXXXXX' suffix."""
    return bool(name) and "." not in name


class ExitWatcher:
    def __init__(self, exit_dir: Path, on_exit_file: Callable[[str], None]) -> None:
        exit_dir.mkdir(parents=True, exist_ok=True)
        self.exit_dir = exit_dir
        self._on_exit_file = on_exit_file
        self._inotify = linux.inotify_init1()
        try:
            linux.inotify_add_watch(
                self._inotify, os.fsencode(exit_dir), linux.IN_MOVED_TO | linux.IN_CLOSE_WRITE
            )
        except OSError as e:
            os.close(self._inotify)
            raise OSError(e.errno, f"inotify_add_watch {exit_dir}") from None
        self._processes = procs.ProcessWatcher("container-exits")
        self._processes.watch_readable(self._inotify, self._read_inotify)
        self._closed = False

    def watch_process(self, pid: int, started: int) -> None:
        """Reap `pid` (a conmon) when it exits, if it is our child by then."""
        with contextlib.suppress(OSError):
            self._processes.watch(pid, started, lambda _status: None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._processes.close()
        os.close(self._inotify)

    def _read_inotify(self) -> None:
        try:
            buffer = os.read(self._inotify, 65536)
        except BlockingIOError:
            return
        for mask, name in linux.inotify_events(buffer):
            if mask & (linux.IN_MOVED_TO | linux.IN_CLOSE_WRITE) and is_exit_file_name(name):
                try:
                    self._on_exit_file(name)
                except Exception:
                    log.exception("container %s: handling its exit failed", name[:13])
