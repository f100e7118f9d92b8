"""Events like the kubelet's (`kubectl get events`): Normal/Warning, a reason, a message, an object.

The recorder keeps the latest `capacity` events in memory and folds a repeat of the event just before it
for the same object into one line with a count, as the API server's event aggregation does. It never
blocks and never raises: events are for people, not for control flow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
DEFAULT_CAPACITY = 2000


@dataclass
class Event:
    namespace: str
    object: str  # "pod/name" or "pod/name/container"
    type: str
    reason: str
    message: str
    first_timestamp: float
    last_timestamp: float
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventRecorder:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._last: dict[tuple[str, str], Event] = {}
        self._lock = threading.Lock()

    def record(self, namespace: str, obj: str, type_: str, reason: str, message: str) -> None:
        now = time.time()
        (log.warning if type_ == WARNING else log.info)("%s/%s: %s: %s", namespace, obj, reason, message)
        with self._lock:
            last = self._last.get((namespace, obj))
            if last is not None and (last.type, last.reason, last.message) == (type_, reason, message):
                last.count += 1
                last.last_timestamp = now
                return
            event = Event(namespace, obj, type_, reason, message, now, now)
            self._events.append(event)
            self._last[(namespace, obj)] = event

    def list(self, namespace: str = "", obj_prefix: str = "") -> list[Event]:
        with self._lock:
            return [
                e
                for e in self._events
                if (not namespace or e.namespace == namespace)
                and (not obj_prefix or e.object == obj_prefix or e.object.startswith(obj_prefix + "/"))
            ]

    def forget(self, namespace: str, obj_prefix: str) -> None:
        """Drop the aggregation state of a deleted object (its events stay listed until they age out)."""
        with self._lock:
            for key in [k for k in self._last if k[0] == namespace and k[1].startswith(obj_prefix)]:
                del self._last[key]
