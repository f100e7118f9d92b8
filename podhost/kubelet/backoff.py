"""Back-off: how long a pod worker waits before it tries again. The one timer of the pod manager.

The kubelet keeps one mechanism for this, `flowcontrol.Backoff` (k8s.io/client-go/util/flowcontrol), and
uses it for CrashLoopBackOff and for image pulls alike: per key, a wait that doubles each time it is used,
up to a cap, forgotten once the thing it guards has gone well for long enough. podhost does the same with
one class, `Backoff`, used two ways by the pod worker:
- CrashLoopBackOff (`CrashLoopBackOff`, keyed by container name, one step per exit): the first restart
  after an exit is immediate; every later exit waits `delay` after the container finished, and the delay
  doubles each time it is used (10 s, 20 s, 40 s ... capped at 5 min). A container that ran for `reset`
  (10 min) before it exited starts again from the first step.
- retries (`retry_backoff()`, keyed by container name or `SANDBOX`, one step per failure): a failed
  RunPodSandbox, CreateContainer, StartContainer or image pull waits 1 s, 2 s, 4 s ... capped at 30 s; a
  success forgets the key.
- image pulls (`image_pull_backoff()`, keyed by image, one step per failed pull; kubelet/images.py): the
  kubelet's ImagePullBackOff, with the CrashLoopBackOff's steps (10 s doubling to 5 min), the first one
  included: a failed pull is tried again only after the wait.

Pure: the caller passes the clock, so tests need no sleeping. `peek` answers without recording, which is
what lets the pod-actions function decide without changing anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_BASE = 10.0
DEFAULT_CAP = 300.0
DEFAULT_RESET = 600.0
#: Wait before retrying a failed RunPodSandbox / CreateContainer / pull (doubles, like the back-off).
RETRY_BASE = 1.0
RETRY_CAP = 30.0
#: The retry key of the pod's sandbox (container names are the other keys; "" is never a valid name).
SANDBOX = ""


@dataclass(frozen=True)
class _Entry:
    event: float  # the event (an exit's finish time, a failure's time) this entry answers for
    wait: float  # the wait that event got
    next_wait: float  # the wait the next event will get

    @property
    def until(self) -> float:
        return self.event + self.wait


class Backoff:
    """Per-key back-off state: each new event of a key waits one step longer, up to `cap`.

    `first_wait` is the wait of a key's first event (`base` unless given; 0 for CrashLoopBackOff, whose
    first restart is immediate). An event whose key ran for `reset` seconds or more before it (`ran`)
    starts the steps again."""

    def __init__(
        self, base: float, cap: float, reset: float = math.inf, first_wait: float | None = None
    ) -> None:
        self.base, self.cap, self.reset = base, cap, reset
        self.first_wait = base if first_wait is None else first_wait
        self._entries: dict[str, _Entry] = {}

    def _next(self, key: str, event: float, ran: float) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and entry.event == event:
            return entry  # the same event asked again: the same answer
        if entry is None or ran >= self.reset:
            first = self.first_wait
            return _Entry(event, first, self.base if first < self.base else min(first * 2, self.cap))
        return _Entry(event, entry.next_wait, min(entry.next_wait * 2, self.cap))

    def peek(self, key: str, event: float, ran: float = 0.0) -> tuple[float, float]:
        """(until when, wait) the event at `event` of `key` gets, without recording it."""
        entry = self._next(key, event, ran)
        return entry.until, entry.wait

    def step(self, key: str, event: float, ran: float = 0.0) -> float:
        """Record the event at `event` of `key` (after `ran` seconds of running); when it may go again."""
        entry = self._next(key, event, ran)
        self._entries[key] = entry
        return entry.until

    def until(self, key: str) -> float:
        """When `key`'s latest event has waited out (0.0 for a key with none)."""
        entry = self._entries.get(key)
        return entry.until if entry else 0.0

    def wait(self, key: str) -> float:
        """The wait the latest event of `key` got (what "back-off 20s" reports)."""
        entry = self._entries.get(key)
        return entry.wait if entry else 0.0

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class CrashLoopBackOff(Backoff):
    """Back-off state for every container (by name) of one pod worker: one step per exit."""

    def __init__(
        self, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, reset: float = DEFAULT_RESET
    ) -> None:
        super().__init__(base, cap, reset, first_wait=0.0)

    def peek_restart(self, key: str, started: float, finished: float) -> tuple[float, float]:
        """(when, wait): when the container that ran from `started` to `finished` may start again."""
        return self.peek(key, finished, finished - started)

    def restart_at(self, key: str, started: float, finished: float) -> float:
        """When the container that ran from `started` to `finished` (seconds) may start again.

        Asking again about the same exit gives the same answer; each new exit moves one step."""
        return self.step(key, finished, finished - started)


def retry_backoff() -> Backoff:
    """The retry timer of a pod worker's failed CRI calls and pulls: 1 s doubling to 30 s."""
    return Backoff(RETRY_BASE, RETRY_CAP)


def image_pull_backoff(base: float = DEFAULT_BASE) -> Backoff:
    """The pull back-off of a pod worker's images (ImagePullBackOff): `base` doubling to 5 min."""
    return Backoff(base, DEFAULT_CAP)
