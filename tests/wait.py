"""The one way tests wait: `wait_for(what, predicate, timeout)`.

A test waits for a condition it can observe (a state through CRI, a line in a log, a file), never for a
guessed time. The predicate is polled every 20 ms; an exception it raises counts as "not yet" (an API that
is not serving yet, a file half-written), and the last one is named when the wait gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, predicate: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.02
) -> T:
    """Return the first true value of `predicate`; after `timeout` seconds fail naming `what` and the
    last value (or exception) seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as e:  # "not yet"; named below if it lasts
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)
