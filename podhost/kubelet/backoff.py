"""CrashLoopBackOff: how long a pod worker waits before it restarts a container that keeps exiting.

The kubelet's rule (pkg/kubelet/kuberuntime, flowcontrol.Backoff): the first restart after an exit is
immediate; every later exit waits `delay` after the container finished, and the delay doubles each time
it is used (10 s, 20 s, 40 s ... capped at 5 min). A container that ran for `reset` (10 min) before it
exited starts again from the first step. Pure: the caller passes the clock, so tests need no sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BASE = 10.0
DEFAULT_CAP = 300.0
DEFAULT_RESET = 600.0


@dataclass(frozen=True)
class _Entry:
    finished: float  # the exit this entry answers for
    wait: float  # the wait that exit got (0 for the first exit)
    next_wait: float  # the wait the next exit will get


class CrashLoopBackOff:
    """Back-off state for every container (by key) of one pod worker."""

    def __init__(
        self, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, reset: float = DEFAULT_RESET
    ) -> None:
        self.base, self.cap, self.reset = base, cap, reset
        self._entries: dict[str, _Entry] = {}

    def restart_at(self, key: str, started: float, finished: float) -> float:
        """When the container that ran from `started` to `finished` (seconds) may start again.

        Asking again about the same exit gives the same answer; each new exit moves one step."""
        entry = self._entries.get(key)
        if entry is not None and entry.finished == finished:
            return finished + entry.wait
        if entry is None or finished - started >= self.reset:
            entry = _Entry(finished, 0.0, self.base)
        else:
            entry = _Entry(finished, entry.next_wait, min(entry.next_wait * 2, self.cap))
        self._entries[key] = entry
        return finished + entry.wait

    def wait(self, key: str) -> float:
        """The wait the latest exit of `key` got (what "back-off 20s" reports)."""
        entry = self._entries.get(key)
        return entry.wait if entry else 0.0

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
