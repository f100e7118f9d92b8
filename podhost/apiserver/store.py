"""resourceVersions and watch events over the pod manager's state.

Theory of operation. The pod manager keeps the truth (desired pods and services, the workers' status, the
event recorder) and a change counter (`PodManager.version`). kube-apiserver's clients need more: a
resourceVersion on every object that moves when the object changes, and a watch that resumes from a
resourceVersion. `ResourceStore.sync()` gives both without a second source of truth: it renders every
served object from the manager (through the `render` function it is given), compares each with its last
rendering, and for each object that is new, changed or gone takes the next resourceVersion and appends an
ADDED / MODIFIED / DELETED event to a bounded log. The rendering is skipped when the manager's
`signature` has not moved, so a request costs a comparison when nothing changed.

Syncs happen on demand (every read) and, only while someone watches, in one thread that sleeps in
`PodManager.wait_changed` (1 s at most, which is also how recorder events, which do not move the
manager's counter, reach a watch). No watcher, no thread work: a node with a thousand pods and no kubectl
pays nothing.

A watch from a resourceVersion older than the log holds gets 410 Expired, as from etcd's compaction, and
the client lists again.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podhost.apiserver.status import BadRequest, Gone

log = logging.getLogger(__name__)

LOG_SIZE = 4096
Key = tuple[str, str, str]  # resource, namespace ("" for cluster-scoped), name


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: str
    object: dict[str, Any]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.setdefault("metadata", {})
    return meta


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for the resourceVersion the store itself wrote."""
    a = {**old, "metadata": {k: v for k, v in old.get("metadata", {}).items() if k != "resourceVersion"}}
    return a == new


class ResourceStore:
    def __init__(
        self,
        render: Callable[[], dict[str, list[dict[str, Any]]]],
        signature: Callable[[], object],
        wait_changed: Callable[[int, float], int],
        log_size: int = LOG_SIZE,
    ) -> None:
        self._render, self._signature, self._wait_changed = render, signature, wait_changed
        self._objects: dict[Key, dict[str, Any]] = {}
        self._log: deque[WatchEvent] = deque(maxlen=log_size)
        self._lock = threading.Lock()
        self._last_signature: object = object()
        #: Starts from the clock (ms), so versions keep growing across daemon restarts: a client's
        #: version from an earlier daemon is older than the log and gets 410, never a silent gap.
        self.resource_version = int(time.time() * 1000)
        self._listeners: set[Callable[[], None]] = set()
        self._listeners_lock = threading.Lock()
        self._watched = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- syncing --------------------------------------------------------------------------------------

    def sync(self) -> int:
        """Bring the objects up to the manager's state; the current resourceVersion."""
        with self._lock:
            signature = self._signature()
            if signature == self._last_signature:
                return self.resource_version
            rendered = self._render()
            seen: set[Key] = set()
            appended = False
            for resource, objects in rendered.items():
                for obj in objects:
                    meta = _meta(obj)
                    key = (resource, str(meta.get("namespace", "")), str(meta.get("name", "")))
                    seen.add(key)
                    old = self._objects.get(key)
                    if old is not None and _same(old, obj):
                        continue
                    if old is not None and old["metadata"].get("uid") != meta.get("uid"):
                        self._delete(key)  # same name, another object: the old one went first
                        old = None
                    self.resource_version += 1
                    meta["resourceVersion"] = str(self.resource_version)
                    self._objects[key] = obj
                    kind = "ADDED" if old is None else "MODIFIED"
                    self._log.append(WatchEvent(self.resource_version, kind, resource, obj))
                    appended = True
            for key in [k for k in self._objects if k not in seen]:
                self._delete(key)
                appended = True
            self._last_signature = signature
            version = self.resource_version
        if appended:
            self._notify()
        return version

    def _delete(self, key: Key) -> None:
        obj = copy.deepcopy(self._objects.pop(key))
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self._log.append(WatchEvent(self.resource_version, "DELETED", key[0], obj))

    # --- reading --------------------------------------------------------------------------------------

    def list_objects(self, resource: str, namespace: str = "") -> tuple[list[dict[str, Any]], int]:
        """The objects of `resource` (in `namespace`, or all), sorted by namespace and name."""
        self.sync()
        with self._lock:
            found = [
                obj
                for (r, ns, _), obj in sorted(self._objects.items())
                if r == resource and (not namespace or ns == namespace)
            ]
            return found, self.resource_version

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.sync()
        with self._lock:
            return self._objects.get((resource, namespace, name))

    def events_since(self, resource_version: int, resource: str) -> list[WatchEvent]:
        """The log's events of `resource` after `resource_version`; Gone if the log no longer reaches back
        that far."""
        with self._lock:
            if resource_version > self.resource_version:
                raise Gone(
                    f"too large resource version: {resource_version}, current: {self.resource_version}"
                )
            if self._log and self._log[0].resource_version > resource_version + 1:
                raise Gone(
                    f"too old resource version: {resource_version} ({self._log[0].resource_version - 1})"
                )
            return [e for e in self._log if e.resource_version > resource_version and e.resource == resource]

    # --- watching -------------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener` is called (from the syncing thread) whenever new events were logged."""
        with self._listeners_lock:
            self._listeners.add(listener)
            self._watched.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="kube-api-watch", daemon=True)
            self._thread.start()

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._listeners.discard(listener)
            if not self._listeners:
                self._watched.clear()

    def _notify(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("a watch listener failed")

    def _follow(self) -> None:
        version = -1
        while not self._stop.is_set():
            self._watched.wait()
            if self._stop.is_set():
                return
            version = self._wait_changed(version, 1.0)
            try:
                self.sync()
            except Exception:
                log.exception("kube-api: syncing with the pod manager failed")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._watched.set()
        if self._thread is not None:
            self._thread.join(timeout=3)


# --- selectors ---------------------------------------------------------------------------------------------


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    return "" if node is None else str(node)


Predicate = Callable[[dict[str, Any]], bool]


def field_selector(text: str) -> Predicate:
    """`metadata.name=x,status.phase!=Running` (=, == and !=), on any field path."""
    terms: list[tuple[str, str, bool]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(!=|==|=)\s*(.*)", term)
        if not m:
            raise BadRequest(f'invalid field selector: "{term}"')
        terms.append((m.group(1), m.group(3), m.group(2) != "!="))
    return lambda obj: all((field_value(obj, path) == value) == equal for path, value, equal in terms)


_LABEL_SET = re.compile(r"([A-Za-z0-9_./\-]+)\s+(in|notin)\s+\(([^)]*)\)")
LabelCheck = Callable[[dict[str, str]], bool]


def _in(key: str, values: set[str], inside: bool) -> LabelCheck:
    return lambda labels: (labels.get(key) in values) == inside


def _equals(key: str, value: str, equal: bool) -> LabelCheck:
    return lambda labels: (labels.get(key) == value) == equal


def _exists(key: str, present: bool) -> LabelCheck:
    return lambda labels: (key in labels) == present


def label_selector(text: str) -> Predicate:
    """`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`, comma-separated."""
    checks: list[LabelCheck] = []
    rest = text
    for m in _LABEL_SET.finditer(text):
        values = {v.strip() for v in m.group(3).split(",") if v.strip()}
        checks.append(_in(m.group(1), values, m.group(2) == "in"))
        rest = rest.replace(m.group(0), "")
    for term in filter(None, (t.strip() for t in rest.split(","))):
        eq = re.fullmatch(r"([A-Za-z0-9_./\-]+)\s*(!=|==|=)\s*([A-Za-z0-9_.\-]*)", term)
        if eq:
            checks.append(_equals(eq.group(1), eq.group(3), eq.group(2) != "!="))
        elif re.fullmatch(r"!?[A-Za-z0-9_./\-]+", term):
            checks.append(_exists(term.lstrip("!"), not term.startswith("!")))
        else:
            raise BadRequest(f'unable to parse requirement: "{term}"')
    return lambda obj: all(check(obj.get("metadata", {}).get("labels") or {}) for check in checks)
