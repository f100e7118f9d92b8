"""The named stages of the lifecycle verbs: where a request is, how long each step took, and a crash hook.

Every side-effecting CRI verb walks through the stages listed in `STAGES`, entering each with
`StageTimer.enter`. The names appear in errors ("sandbox network creation: ...") and in the log line of a
finished request, as CRI-O's stage strings do, so a slow or stuck request says where it is.

Entering a stage is also where a cancelled call stops: the CRI layer binds each request's liveness
(`bind_call`), and `enter` raises Cancelled once the caller is gone (it cancelled, or its deadline
passed), so the request unwinds through the same undo as an error and leaves nothing behind.

The same calls are the fault-injection points the crash tests use; both hooks are read once from the
environment and cost one comparison when unset:
- `PODHOST_KILL_AT=Verb:stage[:N]` makes the daemon SIGKILL itself the N-th time (default 1st) any request
  enters that stage, so a test can crash it at an exact point and check what recovery makes of it;
- `PODHOST_STAGE_TRACE=FILE` appends "Verb stage" to FILE at every stage entered (one O_APPEND write),
  so a soak that kills the daemon at a random instant can say which stage the kill landed in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from podhost.errors import Cancelled

log = logging.getLogger(__name__)

KILL_AT_ENV = "PODHOST_KILL_AT"
TRACE_ENV = "PODHOST_STAGE_TRACE"

#: Every named stage of each verb, in the order a successful request enters them.
STAGES: dict[str, tuple[str, ...]] = {
    "RunPodSandbox": (
        "sandbox files",
        "pod cgroup",
        "pause",
        "pause started",
        "namespace pins",
        "sandbox network creation",
        "pod cgroup join",
        "NRI plugins",
        "record",
    ),
    "CreateContainer": ("bundle", "rootfs", "spec", "NRI plugins", "runtime create", "created", "record"),
    "StartContainer": ("runtime start", "record"),
    "StopPodSandbox": ("stop containers", "NRI plugins", "kill pause", "network teardown", "record"),
    "RemovePodSandbox": ("remove containers", "stop", "cgroup", "files", "record"),
}


def _kill_spec() -> tuple[str, int] | None:
    value = os.environ.get(KILL_AT_ENV, "")
    if not value:
        return None
    verb, _, rest = value.partition(":")
    stage, _, nth = rest.partition(":")
    return f"{verb}:{stage}", int(nth or 1)


_KILL_AT = _kill_spec()
_TRACE_FD = (
    os.open(os.environ[TRACE_ENV], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    if os.environ.get(TRACE_ENV)
    else -1
)
_hits = 0
_hits_lock = threading.Lock()
_call = threading.local()


@contextmanager
def bind_call(is_active: Callable[[], bool]) -> Iterator[None]:
    """Make `is_active` (e.g. grpc's `context.is_active`) say, for this thread, whether the caller still
    waits; stages entered while it says False raise Cancelled."""
    previous = getattr(_call, "is_active", None)
    _call.is_active = is_active
    try:
        yield
    finally:
        _call.is_active = previous


def checkpoint(verb: str, stage: str) -> None:
    """Called on entering `stage` of `verb`: traces it, and crashes the daemon there when asked to."""
    global _hits
    if _TRACE_FD >= 0:
        os.write(_TRACE_FD, f"{verb} {stage}\n".encode())
    if _KILL_AT is not None and _KILL_AT[0] == f"{verb}:{stage}":
        with _hits_lock:
            _hits += 1
            if _hits == _KILL_AT[1]:
                os.kill(os.getpid(), signal.SIGKILL)


class StageTimer:
    """Names the stage a request is in (for errors) and how long each took (for the log line). With an
    empty `verb` (a step inside another request) it only times: no trace, no crash hook, no cancel."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.current = ""
        self._start = self._mark = time.monotonic()
        self._times: list[tuple[str, float]] = []

    def enter(self, stage: str) -> None:
        now = time.monotonic()
        if self.current:
            self._times.append((self.current, (now - self._mark) * 1e3))
            if self.verb and log.isEnabledFor(logging.DEBUG):  # `podhost daemon --debug`: where time goes
                log.debug("%s: %s took %.1f ms", self.verb, self.current, self._times[-1][1])
        self.current, self._mark = stage, now
        if stage and self.verb:
            checkpoint(self.verb, stage)
            is_active = getattr(_call, "is_active", None)
            if is_active is not None and not is_active():
                raise Cancelled(f"{self.verb}: the caller went away before {stage!r}; undone")

    def __str__(self) -> str:
        total = (self._mark - self._start) * 1e3
        return f"{total:.1f} ms (" + ", ".join(f"{name} {ms:.1f}" for name, ms in self._times) + ")"


class UndoStack(contextlib.ExitStack):
    """The undo steps of a request, run in reverse when it fails (`pop_all()` on success keeps them
    from running). A failing step is logged and the next one still runs, and the error that caused the
    unwinding is the one the caller sees, never an undo step's."""

    def callback(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def step() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("undo step %s failed", getattr(fn, "__qualname__", fn))

        super().callback(step)
        return fn
