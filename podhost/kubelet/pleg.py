"""The pod lifecycle event generator: which pod worker must look again, and when.

Two sources, one output (`wake(pod_uid)`, or `wake_all()` when an event names no pod we can map):
- events: CRI GetContainerEvents, streamed. A runtime publishes CREATED/STARTED/STOPPED/DELETED for
  containers and for sandboxes (a sandbox event carries the sandbox id as its container_id), so a
  worker hears of a pause or container death within milliseconds. The event's pod sandbox status names
  the pod (metadata.uid); otherwise the id is looked up in what the last relist saw.
- relist: ListPodSandbox + ListContainers once per `relist_period` (1 s) against a runtime without
  GetContainerEvents (Unimplemented: the stream is not retried), compared with the previous listing;
  every pod whose sandboxes or containers changed state is woken. While events flow it is only the
  safety net: at once whenever the stream broke (events may have been lost), then every 300 s.

It never acts on a pod: it only wakes the pod's worker, which observes and decides for itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import PodhostError, Unimplemented
from podhost.kubelet.podspec import LABEL_POD_UID

log = logging.getLogger(__name__)

DEFAULT_RELIST_PERIOD = 1.0
#: With a working event stream the relist is only a safety net: a broken stream relists at once when it
#: reconnects. The kubelet's evented PLEG slows its generic relist to the same 300 s
#: (eventedPlegRelistPeriod). A relist costs in proportion to the pods (at 1,000 pods, ~30 ms of CPU):
#: every 10 s it was most of the daemon's idle CPU.
EVENTED_RELIST_PERIOD = 300.0
#: Wait before opening the event stream again after it broke (the runtime restarting, say).
RECONNECT_SECONDS = 1.0


def diff(old: dict[str, tuple[str, int]], new: dict[str, tuple[str, int]]) -> set[str]:
    """Pod uids whose objects (id -> (pod uid, state)) appeared, vanished or changed state."""
    changed = {new[k][0] for k in new.keys() - old.keys()} | {old[k][0] for k in old.keys() - new.keys()}
    changed |= {new[k][0] for k in new.keys() & old.keys() if new[k] != old[k]}
    changed.discard("")
    return changed


class PLEG:
    def __init__(
        self,
        cri: CRIClient,
        wake: Callable[[str], None],
        wake_all: Callable[[], None],
        relist_period: float = DEFAULT_RELIST_PERIOD,
    ) -> None:
        self.cri = cri
        self._wake, self._wake_all = wake, wake_all
        self.relist_period = relist_period
        self._stop = threading.Event()
        self._seen: dict[str, tuple[str, int]] = {}  # sandbox/container id -> (pod uid, state)
        self._owner: dict[str, str] = {}  # id -> pod uid, also for ids gone since
        self._lock = threading.Lock()
        self.events_supported: bool | None = None  # None until the runtime answered either way
        self._stream: Any = None
        self._threads = [
            threading.Thread(target=self._relist_loop, name="pleg-relist", daemon=True),
            threading.Thread(target=self._event_loop, name="pleg-events", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        for t in self._threads:
            t.join(timeout=2)

    # --- relist ----------------------------------------------------------------------------------------

    def relist(self) -> None:
        sandboxes = self.cri.list_pod_sandbox()
        containers = self.cri.list_containers()
        now: dict[str, tuple[str, int]] = {}
        for s in sandboxes:
            now[s.id] = (s.metadata.uid or s.labels.get(LABEL_POD_UID, ""), int(s.state))
        for c in containers:
            now[c.id] = (c.labels.get(LABEL_POD_UID, ""), int(c.state))
        with self._lock:
            changed = diff(self._seen, now)
            self._seen = now
            for key, (uid, _) in now.items():
                self._owner[key] = uid
            if len(self._owner) > 4 * len(now) + 1000:  # forget ids gone long ago
                self._owner = {k: v for k, v in self._owner.items() if k in now}
        for uid in changed:
            self._wake(uid)

    def _period(self) -> float:
        if self.events_supported:
            return max(self.relist_period, EVENTED_RELIST_PERIOD)
        return self.relist_period

    def _relist_loop(self) -> None:
        while not self._stop.wait(self._period()):
            try:
                self.relist()
            except PodhostError as e:
                log.debug("relist failed: %s", e)

    # --- events ----------------------------------------------------------------------------------------

    def _event_loop(self) -> None:
        while not self._stop.is_set():
            stream = self.cri.container_events()
            self._stream = stream  # close() cancels it
            try:
                for event in stream:
                    self.events_supported = True
                    self._on_event(event)
            except PodhostError as error:
                if self._stop.is_set():
                    return
                if isinstance(error, Unimplemented):
                    self.events_supported = False
                    log.info(
                        "the runtime has no GetContainerEvents (%s): relisting every %.1f s",
                        error,
                        self.relist_period,
                    )
                    return
                log.debug("container event stream broke: %s", error)
            if self._stop.is_set():
                return
            # Events may have been lost: relist now, and every relist_period until events flow again.
            self.events_supported = None
            try:
                self.relist()
            except PodhostError as e:
                log.debug("relist failed: %s", e)
            self._stop.wait(RECONNECT_SECONDS)

    def _on_event(self, event: pb.ContainerEventResponse) -> None:
        uid = event.pod_sandbox_status.metadata.uid if event.HasField("pod_sandbox_status") else ""
        if not uid:
            for status in event.containers_statuses:
                if status.id == event.container_id:
                    uid = status.labels.get(LABEL_POD_UID, "")
        with self._lock:
            uid = uid or self._owner.get(event.container_id, "")
            if uid:
                self._owner[event.container_id] = uid
        log.debug("event %s %s (pod %s)", event.container_event_type, event.container_id[:13], uid or "?")
        if uid:
            self._wake(uid)
        else:
            self._wake_all()
