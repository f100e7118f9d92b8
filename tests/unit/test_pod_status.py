"""build_pod_status and the status manager: what the pod worker publishes from one observation. Pure."""

from __future__ import annotations

from podhost.kubelet import status as st
from podhost.kubelet.manifest import ContainerSpec, Pod, Probe
from podhost.kubelet.probes import READINESS, STARTUP, ProbeTracker
from tests.unit.test_pod_actions import NOW, C, Row, Sb, observation

LOG_DIR = "/var/log/pods/default_p_u"


def pod(policy: str = "Always", init: tuple[str, ...] = (), specs: tuple[str, ...] = ("a",)) -> Pod:
    return Pod(
        name="p",
        uid="u",
        restart_policy=policy,
        containers=[ContainerSpec(n, "busybox") for n in specs],
        init_containers=[ContainerSpec(n, "busybox") for n in init],
    )


def build(
    row: Row,
    history: dict[str, st.ContainerHistory] | None = None,
    trackers: dict[str, dict[str, ProbeTracker]] | None = None,
    old: st.PodStatus | None = None,
) -> st.PodStatus:
    p = pod(row.policy, row.init, row.specs)
    return st.build_pod_status(
        p, observation(row), old or st.PodStatus(), history or {}, trackers or {}, LOG_DIR, NOW
    )


def condition(status: st.PodStatus, type_: str) -> tuple[bool, str]:
    c = status.conditions[type_]
    return c.status, c.reason


def test_no_sandbox_yet_is_pending_and_creating() -> None:
    status = build(Row("", "", sandboxes=()))
    assert status.phase == st.PENDING and status.pod_ip == ""
    assert condition(status, st.POD_READY_TO_START_CONTAINERS) == (False, "SandboxCreating")
    (a,) = status.container_statuses
    assert (a.state, a.reason, a.log_path) == (st.WAITING, "ContainerCreating", f"{LOG_DIR}/a/0.log")
    assert build(Row("", "", sandboxes=(), init=("i",))).container_statuses[0].reason == "PodInitializing"


def test_running_without_probes_is_ready() -> None:
    status = build(Row("", "", containers=(C("a", "running"),)))
    assert status.phase == st.RUNNING and status.ready
    assert condition(status, st.CONTAINERS_READY) == (True, "")
    assert status.container_statuses[0].container_id == "a-0-0"


def test_readiness_and_startup_probes_hold_ready() -> None:
    probe = Probe(handler="exec", command=["true"])
    row = Row("", "", containers=(C("a", "running"),))
    pending = build(row, trackers={"a-0-0": {READINESS: ProbeTracker.start(READINESS, probe, NOW)}})
    assert not pending.ready and pending.phase == st.RUNNING
    assert "a: readiness probe pending" in pending.conditions[st.READY].message
    starting = build(row, trackers={"a-0-0": {STARTUP: ProbeTracker.start(STARTUP, probe, NOW)}})
    (a,) = starting.container_statuses
    assert not a.started and not a.ready and a.unready_reason == "startup probe has not succeeded yet"


def test_a_crash_loop_is_waiting_with_its_last_exit() -> None:
    history = {
        "a": st.ContainerHistory(attempt=3, waiting_reason="CrashLoopBackOff", waiting_message="back-off 40s")
    }
    status = build(Row("", "", containers=(C("a", "exited", code=1, attempt=3),)), history)
    (a,) = status.container_statuses
    assert (a.state, a.reason, a.restart_count) == (st.WAITING, "CrashLoopBackOff", 3)
    assert a.last_state is not None and a.last_state.exit_code == 1 and a.last_state.reason == "Error"
    assert a.previous_log_path == f"{LOG_DIR}/a/2.log"
    assert status.phase == st.RUNNING  # waiting after an exit counts as stopped under Always
    assert history["a"].last_exit == a.last_state  # remembered for after the sandbox goes


def test_never_exit_1_fails_the_pod() -> None:
    status = build(Row("", "", policy="Never", containers=(C("a", "exited", code=1),)))
    (a,) = status.container_statuses
    assert a.state == st.TERMINATED and a.terminated is not None and a.terminated.exit_code == 1
    assert status.phase == st.FAILED
    assert condition(status, st.READY) == (False, "PodFailed")


def test_init_containers_gate_initialized() -> None:
    row = Row("", "", init=("i1", "i2"), containers=(C("i1", "exited"), C("i2", "running")))
    status = build(row)
    assert status.phase == st.PENDING
    assert condition(status, st.INITIALIZED) == (False, "ContainersNotInitialized")
    done = build(Row("", "", init=("i",), containers=(C("i", "exited"), C("a", "running"))))
    assert condition(done, st.INITIALIZED) == (True, "") and done.phase == st.RUNNING


def test_the_last_exit_outlives_a_removed_sandbox() -> None:
    gone = st.Terminated(exit_code=137, reason="Error", container_id="a-0-0")
    history = {"a": st.ContainerHistory(attempt=1, last_exit=gone)}
    status = build(
        Row("", "", sandboxes=(Sb(1),), containers=(C("a", "running", sandbox=1, attempt=1),)), history
    )
    assert status.container_statuses[0].last_state == gone


def test_remember_attempts_and_exits() -> None:
    history: dict[str, st.ContainerHistory] = {}
    obs = observation(
        Row("", "", containers=(C("a", "exited", code=2, attempt=4), C("b", "running", attempt=1)))
    )
    st.remember_attempts(obs, history)
    st.remember_exits(pod(specs=("a", "b")), obs, history)
    assert history["a"].attempt == 4 and history["b"].attempt == 1
    assert history["a"].last_exit is not None and history["a"].last_exit.exit_code == 2
    assert history["b"].last_exit is None


def test_the_status_manager_tells_of_changes_only() -> None:
    told: list[int] = []
    manager = st.StatusManager(lambda: told.append(1))
    row = Row("", "", containers=(C("a", "running"),))
    first = manager.publish(lambda old: build(row, old=old))
    assert len(told) == 1 and manager.get() is first
    manager.publish(lambda old: build(row, old=old))
    assert len(told) == 1  # the same status again: nobody is told
    manager.sandbox_not_ready("PauseExited", "pause (pid 7) killed by signal 9", NOW)
    assert len(told) == 2  # a dead sandbox is always told at once (endpoints)
    status = manager.get()
    assert not status.ready and status.pod_ip == "" and not status.container_statuses[0].ready
    assert condition(status, st.POD_READY_TO_START_CONTAINERS) == (False, "PauseExited")


def test_a_probe_without_its_tracker_yet_holds_ready() -> None:
    """The sync that starts a container publishes before the prober makes its trackers: a container
    whose spec has a readiness (or startup) probe is not Ready until the probe passed (after a pause
    death, `kubectl get pods -w` showed 2/2 for a moment, and the endpoints had the pod)."""
    probe = Probe(handler="exec", command=["true"])
    p = pod()
    p.containers[0].readiness_probe = probe
    row = Row("", "", containers=(C("a", "running"),))
    status = st.build_pod_status(p, observation(row), st.PodStatus(), {}, {}, LOG_DIR, NOW)
    (a,) = status.container_statuses
    assert a.started and not a.ready and a.unready_reason == "readiness probe pending"
    assert condition(status, st.READY) == (False, "ContainersNotReady")
    p.containers[0].readiness_probe, p.containers[0].startup_probe = None, probe
    (a,) = st.build_pod_status(p, observation(row), st.PodStatus(), {}, {}, LOG_DIR, NOW).container_statuses
    assert not a.started and not a.ready
