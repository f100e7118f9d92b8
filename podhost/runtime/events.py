"""Lifecycle events, fanned out to subscribers (CRI GetContainerEvents, the pod manager's PLEG).

Publishers never block: each subscriber has its own bounded queue, and a subscriber that falls that far
behind loses its oldest events (the PLEG's periodic relist is the safety net for exactly that case).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

from podhost.runtime.model import ContainerEvent, ContainerEventType

_QUEUE_SIZE = 4096


class Subscription:
    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._queue: queue.Queue[ContainerEvent | None] = queue.Queue(_QUEUE_SIZE)
        self.closed = False

    def _offer(self, event: ContainerEvent | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def get(self, timeout: float | None = None) -> ContainerEvent | None:
        """The next event; None after `timeout` seconds without one, or once the subscription is closed."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop receiving; a reader blocked in `get` wakes up with None. Safe to call from any thread."""
        if self.closed:
            return
        self.closed = True
        self._bus._unsubscribe(self)
        self._offer(None)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def publish(self, container_id: str, event_type: ContainerEventType, sandbox_id: str) -> None:
        event = ContainerEvent(container_id, event_type, time.time_ns(), sandbox_id)
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._offer(event)
