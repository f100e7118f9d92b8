"""The lifecycle tables, the one update path, atomic name reservation and keyed locks (no root needed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from podhost.errors import AlreadyExists, InvalidArgument, NotFound
from podhost.runtime.events import EventBus
from podhost.runtime.lifecycle import (
    CONTAINER_STATE,
    CONTAINER_TRANSITIONS,
    SANDBOX_STATE,
    SANDBOX_TRANSITIONS,
    IllegalTransition,
    KeyedLocks,
    Lifecycle,
    NameIndex,
    container_cri_state,
    sandbox_cri_state,
)
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerEventType,
    ContainerStage,
    ContainerState,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxState,
    SandboxStage,
)
from podhost.runtime.state import RecordStore


def sandboxes(tmp_path: Path) -> tuple[Lifecycle[PodSandbox, SandboxStage], EventBus]:
    events = EventBus()
    store: RecordStore[PodSandbox] = RecordStore(tmp_path / "sandboxes", PodSandbox)
    return Lifecycle(
        store, SANDBOX_TRANSITIONS, sandbox_cri_state, events, lambda s: s.id, "pod sandbox"
    ), events


def containers(tmp_path: Path) -> Lifecycle[Container, ContainerStage]:
    store: RecordStore[Container] = RecordStore(tmp_path / "containers", Container)
    return Lifecycle(
        store, CONTAINER_TRANSITIONS, container_cri_state, EventBus(), lambda c: c.sandbox_id, "container"
    )


def test_every_stage_has_a_row_and_a_cri_state() -> None:
    assert set(SANDBOX_TRANSITIONS) == set(SandboxStage) == set(SANDBOX_STATE)
    assert set(CONTAINER_TRANSITIONS) == set(ContainerStage) == set(CONTAINER_STATE)
    assert [s for s, state in SANDBOX_STATE.items() if state == PodSandboxState.SANDBOX_READY] == [
        SandboxStage.READY
    ]


def test_find_and_resolve_see_only_visible_records(tmp_path: Path) -> None:
    """By full id or unique prefix, as crictl allows; a create still under way (CREATING) is not found,
    and errors name the kind."""
    life, _ = sandboxes(tmp_path)
    life.create(PodSandbox(id="abc1", config=PodSandboxConfig(), stage=SandboxStage.READY, created_at=2))
    life.create(PodSandbox(id="abc2", config=PodSandboxConfig(), stage=SandboxStage.STOPPED, created_at=1))
    life.create(PodSandbox(id="abd3", config=PodSandboxConfig()))  # CREATING
    assert [s.id for s in life.visible()] == ["abc2", "abc1"]  # oldest first
    assert life.find("abc1").id == life.resolve("abc1").id == "abc1"
    assert life.resolve("abc2").id == "abc2"
    with pytest.raises(InvalidArgument, match="pod sandbox id prefix 'abc' is ambiguous"):
        life.resolve("abc")
    for hidden in ("abd3", "abd"):
        with pytest.raises(NotFound, match=f"pod sandbox '{hidden}' not found"):
            life.resolve(hidden)
    with pytest.raises(NotFound, match="pod sandbox 'abd3' not found"):
        life.find("abd3")
    with pytest.raises(NotFound):
        life.resolve("")


SANDBOX_MOVES = [
    (SandboxStage.CREATING, SandboxStage.READY, True),
    (SandboxStage.CREATING, SandboxStage.STOPPED, False),
    (SandboxStage.READY, SandboxStage.LOST, True),
    (SandboxStage.READY, SandboxStage.STOPPED, False),  # the network must be released on the way
    (SandboxStage.LOST, SandboxStage.STOPPED, True),
    (SandboxStage.LOST, SandboxStage.READY, False),  # a sandbox never comes back: attempt+1 does
    (SandboxStage.STOPPED, SandboxStage.READY, False),
]


@pytest.mark.parametrize(("start", "to", "allowed"), SANDBOX_MOVES)
def test_sandbox_moves(tmp_path: Path, start: SandboxStage, to: SandboxStage, allowed: bool) -> None:
    life, _ = sandboxes(tmp_path)
    life.create(PodSandbox(id="s1", config=PodSandboxConfig(), stage=start))
    if allowed:
        assert life.update("s1", to).stage == to
    else:
        with pytest.raises(IllegalTransition):
            life.update("s1", to)
        assert life.get("s1").stage == start  # type: ignore[union-attr]


CONTAINER_MOVES = [
    (ContainerStage.CREATING, ContainerStage.CREATED, True),
    (ContainerStage.CREATING, ContainerStage.RUNNING, False),
    (ContainerStage.CREATED, ContainerStage.RUNNING, True),
    (ContainerStage.CREATED, ContainerStage.EXITED, True),  # killed before start, or start failed
    (ContainerStage.RUNNING, ContainerStage.EXITED, True),
    (ContainerStage.RUNNING, ContainerStage.CREATED, False),
    (ContainerStage.EXITED, ContainerStage.RUNNING, False),  # a restart is a new container
]


@pytest.mark.parametrize(("start", "to", "allowed"), CONTAINER_MOVES)
def test_container_moves(tmp_path: Path, start: ContainerStage, to: ContainerStage, allowed: bool) -> None:
    life = containers(tmp_path)
    life.create(Container(id="c1", sandbox_id="s1", config=ContainerConfig(), stage=start))
    if allowed:
        updated = life.update("c1", to)
        assert (updated.stage, updated.state) == (to, CONTAINER_STATE[to])
    else:
        with pytest.raises(IllegalTransition):
            life.update("c1", to)


def test_update_persists_before_publishing_and_derives_the_cri_state(tmp_path: Path) -> None:
    life, events = sandboxes(tmp_path)
    sub = events.subscribe()
    life.create(PodSandbox(id="s1", config=PodSandboxConfig()))
    assert life.get("s1").state == PodSandboxState.SANDBOX_NOTREADY  # type: ignore[union-attr]

    def named(s: PodSandbox) -> None:
        s.ip = "10.0.0.2"

    life.update("s1", SandboxStage.READY, named, ContainerEventType.CONTAINER_STARTED_EVENT)
    event = sub.get(timeout=1)
    assert event is not None and event.container_id == "s1"
    # The event came after the write: a fresh store reads the new stage, state and field from disk.
    again: RecordStore[PodSandbox] = RecordStore(tmp_path / "sandboxes", PodSandbox)
    record = again.get("s1")
    assert record is not None
    assert (record.stage, record.state, record.ip) == (
        SandboxStage.READY,
        PodSandboxState.SANDBOX_READY,
        "10.0.0.2",
    )


def test_a_change_that_fails_leaves_the_record_untouched(tmp_path: Path) -> None:
    life, _ = sandboxes(tmp_path)
    life.create(PodSandbox(id="s1", config=PodSandboxConfig()))

    def broken(s: PodSandbox) -> None:
        s.ip = "10.0.0.9"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        life.update("s1", SandboxStage.READY, broken)
    record = life.get("s1")
    assert record is not None and (record.stage, record.ip) == (SandboxStage.CREATING, "")


def test_a_change_may_not_set_the_stage_itself(tmp_path: Path) -> None:
    life = containers(tmp_path)
    life.create(Container(id="c1", sandbox_id="s1", config=ContainerConfig()))

    def sneaky(c: Container) -> None:
        c.stage = ContainerStage.RUNNING

    with pytest.raises(AssertionError):
        life.update("c1", None, sneaky)
    assert life.get("c1").state == ContainerState.CONTAINER_UNKNOWN  # type: ignore[union-attr]


def test_update_of_an_unknown_record(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        containers(tmp_path).update("nope", ContainerStage.CREATED)


def test_exactly_one_of_many_racing_callers_reserves_a_name() -> None:
    index = NameIndex("container")
    barrier = threading.Barrier(20)
    winners: list[str] = []
    losers: list[str] = []

    def claim(owner: str) -> None:
        barrier.wait()
        try:
            index.reserve("pod_app_0", owner)
            winners.append(owner)
        except AlreadyExists:
            losers.append(owner)

    threads = [threading.Thread(target=claim, args=(f"id{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 19
    assert index.holder("pod_app_0") == winners[0]
    index.release("pod_app_0", losers[0])  # a loser cannot free the winner's name
    assert index.holder("pod_app_0") == winners[0]
    index.release("pod_app_0", winners[0])
    assert index.holder("pod_app_0") is None and len(index) == 0


def test_keyed_locks_exclude_and_forget() -> None:
    locks = KeyedLocks()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with locks.hold("k"):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    inside.wait(5)

    def second_waits() -> None:
        with locks.hold("k"):
            order.append("second in")

    second = threading.Thread(target=second_waits)
    second.start()
    with locks.hold("other"):  # another key is not blocked
        order.append("other")
    release.set()
    t.join()
    second.join()
    assert order == ["first in", "other", "first out", "second in"]
    assert len(locks) == 0  # nothing kept once nobody holds or waits
    with locks.hold("k"), locks.hold("k"):  # re-entrant
        pass
