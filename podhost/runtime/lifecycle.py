"""Lifecycle stages of sandboxes and containers, as data, and the one path by which a record changes.

Theory of operation. A record's `stage` says how far its lifecycle got; the CRI `state` a caller sees is
derived from it (`SANDBOX_STATE`, `CONTAINER_STATE`). The allowed moves are the tables below, and the
only way a stage changes is `Lifecycle.update`: it takes the record's lock, applies the caller's change
to a copy, checks the move against the table, writes the record (a crash leaves the old or the new one),
swaps the copy in and only then publishes the event, so no reader ever sees a state that is not on disk
(containerd's `Status.Update`). A record first reaches disk in its initial stage (CREATING) *before* the
first side effect, so a crash at any instant leaves a record that recovery can finish or undo.

    sandbox:   CREATING -> READY -> LOST (pause gone) -> STOPPED -> (deleted)
               (undone: deleted)    \\____________________/^
    container: CREATING -> CREATED -> RUNNING -> EXITED -> (deleted)
               (undone: deleted)  \\______________/^

Deletion is not a stage: RemovePodSandbox and RemoveContainer delete the record last, after every trace,
so a crash mid-way leaves a STOPPED/EXITED record whose removal is simply done again (it is idempotent).

`NameIndex` reserves names (`name_namespace_uid_attempt` for sandboxes, `<sandbox>_<name>_<attempt>` for
containers) atomically before any work, and releases them when the work fails or the record is deleted.
`KeyedLocks` gives each record its lock for as long as anyone holds or waits for it, and forgets it after,
so churn does not grow the daemon.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from podhost.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from podhost.runtime.events import EventBus
from podhost.runtime.model import (
    Container,
    ContainerEventType,
    ContainerStage,
    ContainerState,
    PodSandbox,
    PodSandboxState,
    SandboxStage,
)
from podhost.runtime.state import RecordStore

SANDBOX_TRANSITIONS: dict[SandboxStage, frozenset[SandboxStage]] = {
    SandboxStage.CREATING: frozenset({SandboxStage.READY}),
    SandboxStage.READY: frozenset({SandboxStage.LOST}),
    SandboxStage.LOST: frozenset({SandboxStage.STOPPED}),
    SandboxStage.STOPPED: frozenset(),
}

CONTAINER_TRANSITIONS: dict[ContainerStage, frozenset[ContainerStage]] = {
    ContainerStage.CREATING: frozenset({ContainerStage.CREATED}),
    ContainerStage.CREATED: frozenset({ContainerStage.RUNNING, ContainerStage.EXITED}),
    ContainerStage.RUNNING: frozenset({ContainerStage.EXITED}),
    ContainerStage.EXITED: frozenset(),
}

SANDBOX_STATE: dict[SandboxStage, PodSandboxState] = {
    stage: PodSandboxState.SANDBOX_READY if stage == SandboxStage.READY else PodSandboxState.SANDBOX_NOTREADY
    for stage in SandboxStage
}

CONTAINER_STATE: dict[ContainerStage, ContainerState] = {
    ContainerStage.CREATING: ContainerState.CONTAINER_UNKNOWN,
    ContainerStage.CREATED: ContainerState.CONTAINER_CREATED,
    ContainerStage.RUNNING: ContainerState.CONTAINER_RUNNING,
    ContainerStage.EXITED: ContainerState.CONTAINER_EXITED,
}

#: Stages whose records callers do not see: the work is not done (or is being undone) yet.
HIDDEN_STAGES = frozenset({SandboxStage.CREATING, ContainerStage.CREATING})


class IllegalTransition(FailedPrecondition):
    """A change the lifecycle table does not allow (e.g. starting an exited container)."""


R = TypeVar("R", PodSandbox, Container)
S = TypeVar("S", SandboxStage, ContainerStage)


class KeyedLocks:
    """One re-entrant lock per key, alive while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.RLock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.RLock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class NameIndex:
    """Reserved names -> the id holding each. Reservation is atomic: exactly one caller wins a name."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}

    def reserve(self, name: str, owner: str) -> None:
        with self._lock:
            holder = self._names.get(name)
            if holder is not None and holder != owner:
                raise AlreadyExists(f"{self.what} name {name!r} is reserved for {holder}")
            self._names[name] = owner

    def release(self, name: str, owner: str) -> None:
        """Drop `name` if `owner` still holds it (a failed reservation must not free the winner's)."""
        with self._lock:
            if self._names.get(name) == owner:
                del self._names[name]

    def holder(self, name: str) -> str | None:
        return self._names.get(name)

    def __len__(self) -> int:
        return len(self._names)


class Lifecycle(Generic[R, S]):
    """The records of one kind, changed only through `create`, `update` and `delete`."""

    def __init__(
        self,
        records: RecordStore[R],
        transitions: dict[S, frozenset[S]],
        cri_state: Callable[[R], None],
        events: EventBus,
        sandbox_of: Callable[[R], str],
        kind: str,
    ) -> None:
        self.records: RecordStore[R] = records
        self.kind = kind  # "pod sandbox" or "container", as errors name it
        self.transitions: dict[S, frozenset[S]] = transitions
        self._cri_state: Callable[[R], None] = cri_state
        self.events = events
        self._sandbox_of: Callable[[R], str] = sandbox_of
        self.locks = KeyedLocks()

    def get(self, record_id: str) -> R | None:
        return self.records.get(record_id)

    def visible(self) -> list[R]:
        """The records callers may see, oldest first: a create still under way is not one yet."""
        return sorted((r for r in self.records if r.stage not in HIDDEN_STAGES), key=lambda r: r.created_at)

    def find(self, record_id: str) -> R:
        """A visible record by its full id."""
        record = self.records.get(record_id)
        if record is None or record.stage in HIDDEN_STAGES:
            raise NotFound(f"{self.kind} {record_id!r} not found")
        return record

    def resolve(self, id_or_prefix: str) -> R:
        """A visible record by full id or unique prefix (as crictl allows)."""
        record = self.records.get(id_or_prefix)
        if record is not None and record.stage not in HIDDEN_STAGES:
            return record
        matches = [r for r in self.visible() if id_or_prefix and r.id.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise InvalidArgument(f"{self.kind} id prefix {id_or_prefix!r} is ambiguous")
        if not matches:
            raise NotFound(f"{self.kind} {id_or_prefix!r} not found")
        return matches[0]

    def create(self, record: R, durable: bool = True) -> None:
        """The first write of a record, in its initial stage, before any side effect."""
        self._cri_state(record)
        self.records.put(record.id, record, durable=durable)

    def update(
        self,
        record_id: str,
        stage: S | None = None,
        change: Callable[[R], None] | None = None,
        event: ContainerEventType | None = None,
        durable: bool = True,
    ) -> R:
        """Move `record_id` to `stage` (None: stay) after applying `change` to a copy; persist, swap the
        copy in, then publish `event`. Raises IllegalTransition for a move the table forbids.

        `durable=False` skips the fsync, for facts that only matter while this machine stays up (a PID:
        a daemon SIGKILLed after the write still finds it, and after a reboot the process is gone anyway)."""
        with self.locks.hold(record_id):
            current = self.records.get(record_id)
            if current is None:
                raise NotFound(f"{record_id} not found")
            updated = copy.deepcopy(current)
            if change is not None:
                change(updated)
            old: S = current.stage  # type: ignore[assignment]
            if updated.stage != old:  # type: ignore[comparison-overlap]
                raise AssertionError("a change function must not set the stage; pass it to update()")
            if stage is not None and stage != old:
                if stage not in self.transitions[old]:
                    raise IllegalTransition(f"{record_id[:13]}: cannot go from {old.value} to {stage.value}")
                updated.stage = stage  # type: ignore[assignment]
            self._cri_state(updated)
            self.records.put(record_id, updated, durable=durable)
        if event is not None:
            self.events.publish(record_id, event, self._sandbox_of(updated))
        return updated

    def delete(self, record_id: str) -> None:
        self.records.delete(record_id)

    def __iter__(self) -> Iterator[R]:
        return iter(self.records)


class RecordLookup(Generic[R, S]):
    """The lookups the sandbox and container services both offer, over their `lifecycle`."""

    lifecycle: Lifecycle[R, S]

    def get(self, record_id: str) -> R:
        return self.lifecycle.find(record_id)

    def resolve(self, id_or_prefix: str) -> R:
        return self.lifecycle.resolve(id_or_prefix)

    def known_ids(self) -> set[str]:
        """Every id with a record, hidden ones included: what owns processes and files."""
        return set(self.lifecycle.records.ids())


def sandbox_cri_state(sandbox: PodSandbox) -> None:
    sandbox.state = SANDBOX_STATE[sandbox.stage]


def container_cri_state(container: Container) -> None:
    container.state = CONTAINER_STATE[container.stage]
