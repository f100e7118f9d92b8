"""Image pull progress for `podhost apply` on a terminal.

CRI PullImage is one unary call, so neither the runtime nor the pod manager can stream a pull's bytes.
What the user can be shown is what the pod manager reports: its Pulling / Pulled / Failed events per
container, the time each pull has taken so far, and (as for `podhost cri pull`) how much the image
filesystem grew meanwhile. `PullTracker` is the pure part; `follow` drives it and draws.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

SPINNER = "|/-\\"


@dataclass
class PullTracker:
    """Which containers of the applied pods still wait for their image, from the manager's events.

    `containers` are event objects ("pod/NAME/CONTAINER") in namespace-qualified form "NS/pod/NAME/C".
    A container is settled by a Pulled event (also sent when the image was already present) or by any
    Warning (a failed pull); events older than `since` (an earlier apply) are ignored."""

    containers: set[str]
    since: float
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)  # container -> (image msg, start)
    settled: set[str] = field(default_factory=set)
    _seen: set[tuple[str, str, float]] = field(default_factory=set)

    def update(self, events: Iterable[dict[str, Any]]) -> list[str]:
        """Feed the current events; returns the lines to print for pulls that just ended."""
        lines = []
        for e in sorted(events, key=lambda e: e["last_timestamp"]):
            key = f"{e['namespace']}/{e['object']}"
            ident = (key, e["reason"], e["last_timestamp"])
            if key not in self.containers or e["last_timestamp"] < self.since or ident in self._seen:
                continue
            self._seen.add(ident)
            if e["reason"] == "Pulling":
                self.pending[key] = (e["message"], e["first_timestamp"])
            elif e["reason"] == "Pulled" or e["type"] == "Warning":
                started = self.pending.pop(key, (None, None))[1]
                self.settled.add(key)
                took = f" ({e['last_timestamp'] - started:.1f} s)" if started is not None else ""
                lines.append(f"{key.split('/', 1)[1]}: {e['message']}{took}")
        return lines

    @property
    def done(self) -> bool:
        return self.containers <= self.settled

    def status_line(self, now: float, tick: int, grown: int | None) -> str:
        key, (message, started) = next(iter(self.pending.items()))
        line = f"{SPINNER[tick % 4]} {key.split('/', 1)[1]}: {message} {now - started:5.1f}s"
        if grown:
            from podhost.cli.tables import human_size

            line += f"  image filesystem +{human_size(grown, 3)}"
        return line


def follow(
    tracker: PullTracker,
    events: Callable[[], list[dict[str, Any]]],
    fs_used: Callable[[], int | None],
    out: TextIO = sys.stderr,
    limit: float = 900.0,
) -> None:
    """Redraw one status line while pulls are pending; print a line as each ends; return once every
    container is settled (or after `limit` seconds: pulls go on in the daemon regardless)."""
    started, tick, base = time.monotonic(), 0, fs_used()
    while not tracker.done and time.monotonic() - started < limit:
        lines = tracker.update(events())
        for line in lines:
            out.write("\r\x1b[K" + line + "\n")
        if tracker.pending:
            used = fs_used() if tick % 4 == 0 else None
            grown = used - base if used is not None and base is not None else None
            out.write("\r\x1b[K" + tracker.status_line(time.time(), tick, grown))
        out.flush()
        tick += 1
        time.sleep(0.25)
    out.write("\r\x1b[K")
    out.flush()
