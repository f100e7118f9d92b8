"""StartContainer through runc's exec fifo, in-process: what `runc start` does, without its exec.

`runc create` leaves the container's init (`runc init`, comm "runc:[2:INIT]") blocked opening
`<root>/<id>/exec.fifo` for writing. `runc start` opens it for reading, reads init's "0" until EOF (init's
end closes on its execve of the container's process), then removes the fifo: from then on `runc state`
says "running". Doing those three steps here saves a Go process start per container (~5 ms of the
~8 ms StartContainer took; bench "sandbox + container"). Only for runc 1.x, whose layout this is, and
only when the bundle has no poststart hooks (they must run once the container has started, and where
runc runs them is its own business); anything else goes through `runc start`.

The order (read, then remove) keeps `runc state` honest: a daemon killed between the two leaves a fifo
beside a process that already runs, which `start` below recognizes (init no longer runc's) and finishes.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from podhost.errors import FailedPrecondition, RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.container import spec

FIFO_NAME = "exec.fifo"
RUNC_INIT_COMM = "runc:[2:INIT]"
POLL_MS = 50


def applies(binary: str, bundle_config: Path) -> bool:
    """Whether a container of `binary` with this config.json may be started through its fifo."""
    if Path(binary).name != "runc" or not bundle_config.is_file():
        return False
    return not spec.declares_hooks(bundle_config, "poststart")


def start(fifo: Path, init: procs.Proc, timeout: float) -> bool:
    """Release `init` (the container's `runc init`) through `fifo`. False when there is no fifo (the
    caller runs `runc start`, which says why); RuntimeFailure on a timeout; FailedPrecondition when init
    is gone before it was released."""
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        _release(fd, fifo, init, time.monotonic() + timeout)
    finally:
        os.close(fd)
    fifo.unlink(missing_ok=True)
    return True


def _release(fd: int, fifo: Path, init: procs.Proc, deadline: float) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got = b""
    while True:
        if poller.poll(POLL_MS):
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                continue
            if chunk:
                got += chunk
                continue
            if got:
                return  # "0", then EOF: init has exec'd the container's process
            raise FailedPrecondition("container process exited before it was started")
        if not procs.alive(init.pid, init.start_time):
            raise FailedPrecondition("container process is already dead")
        if procs.comm(init.pid) != RUNC_INIT_COMM:
            return  # released by a start that was killed before it removed the fifo
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"start: container init (pid {init.pid}) did not open {fifo}")
