"""Sidecars (KEP-753), container restart rules (KEP-5307) and RestartAllContainers (KEP-5532), by table:
compute_pod_actions as in test_pod_actions.py, with containers that carry their own restartPolicy,
restartPolicyRules and probes; then the status these pods get (Initialized, ContainersReady, Ready with
readiness gates, AllContainersRestarting, the phase) and the manifest checks of the new fields. Pure.

A container in a row is written "name", "name:Policy" (its own restartPolicy) or
"name:Policy:Action:Op:codes" (one rule, codes comma separated); an init container "s:Always" is a
sidecar, "+startup" after it gives it a startup probe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podhost.cri import api_pb2 as pb
from podhost.kubelet import kuberuntime
from podhost.kubelet import status as st
from podhost.kubelet.backoff import CrashLoopBackOff, retry_backoff
from podhost.kubelet.manifest import ContainerSpec, ManifestError, Pod, Probe, RestartRule, parse_pod
from podhost.kubelet.pod_actions import PodActions, compute_pod_actions, exit_action
from podhost.kubelet.probes import READINESS, STARTUP, ProbeTracker
from tests.unit.test_pod_actions import NOW, C, Row, Sb, observation, summary

LOG_DIR = "/var/log/pods/default_p_u"


def spec(text: str) -> ContainerSpec:
    text, _, extra = text.partition("+")
    name, policy, action, op, codes = (text.split(":") + ["", "", "", ""])[:5]
    c = ContainerSpec(name, "busybox", restart_policy=policy)
    if action:
        c.restart_policy_rules = [RestartRule(action, op, tuple(int(v) for v in codes.split(",")))]
    if extra == "startup":
        c.startup_probe = Probe("exec", ["true"])
    return c


@dataclass
class R:
    id: str
    expected: str
    containers: tuple[C, ...] = ()
    specs: tuple[str, ...] = ("a",)
    init: tuple[str, ...] = ()
    policy: str = "Always"
    exits: tuple[tuple[str, float, float], ...] = ()
    unhealthy: dict[str, str] = field(default_factory=dict)
    started: tuple[str, ...] = ()  # container names whose startup probe succeeded


def pod_of(row: R) -> Pod:
    return Pod(
        name="p",
        uid="u",
        restart_policy=row.policy,
        containers=[spec(s) for s in row.specs],
        init_containers=[spec(s) for s in row.init],
    )


def decide(row: R) -> PodActions:
    base = Row(row.id, row.expected, containers=row.containers, sandboxes=(Sb(),))
    obs = observation(base)
    crash_loop = CrashLoopBackOff(base=10, cap=40, reset=600)
    for name, ran, ago in row.exits:
        crash_loop.restart_at(name, NOW - ago - ran, NOW - ago)
    running = {c.metadata.name: c.id for c in obs.containers if c.state == 1}  # CONTAINER_RUNNING
    unhealthy = {running[n]: kind for n, kind in row.unhealthy.items()}
    started = [running[n] for n in row.started]
    return compute_pod_actions(pod_of(row), obs, NOW, crash_loop, retry_backoff(), unhealthy, started=started)


def words(a: PodActions) -> str:
    """test_pod_actions' summary, plus "restart-all:X" (the trigger) "kill=..." "remove=..." (by name)."""
    out = summary(a)
    r = a.restart_all
    if r is not None:
        killed = ",".join(c.metadata.name for c in r.kill)
        removed = ",".join(cid.split("-")[0] for cid in r.remove)
        more = f"restart-all:{r.spec.name} kill={killed} remove={removed}"
        out = more if out == "-" else f"{out} {more}"
    return out


RULE42 = "RestartAllContainers:In:42"
ROWS = [
    # --- sidecars (restartable init containers) --------------------------------------------------------
    R("sidecar first: it starts as the first init container", "init:s", init=("s:Always", "i")),
    R(
        "sidecar running (no startup probe): the next init container starts",
        "init:i",
        init=("s:Always", "i"),
        containers=(C("s", "running"),),
    ),
    R(
        "sidecar running, its startup probe not passed: the next one waits",
        "-",
        init=("s:Always+startup", "i"),
        containers=(C("s", "running"),),
    ),
    R(
        "sidecar running, its startup probe passed: the next one starts",
        "init:i",
        init=("s:Always+startup", "i"),
        containers=(C("s", "running"),),
        started=("s",),
    ),
    R(
        "sidecar running, init done: the app starts beside it",
        "start:a",
        init=("s:Always", "i"),
        containers=(C("s", "running"), C("i", "exited", code=0)),
    ),
    R(
        "sidecar running, regular init container still running: wait",
        "-",
        init=("s:Always", "i"),
        containers=(C("s", "running"), C("i", "running")),
    ),
    R(
        "two sidecars start in order: the second once the first runs",
        "init:t",
        init=("s:Always", "t:Always"),
        containers=(C("s", "running"),),
    ),
    R(
        "sidecar exited before the app ran: restarted as the next init step",
        "init:s!",
        init=("s:Always", "i"),
        containers=(C("s", "exited", code=1),),
    ),
    R(
        "sidecar exited while the app runs: only the sidecar restarts",
        "start:s!",
        init=("s:Always",),
        containers=(C("s", "exited", code=2), C("a", "running")),
    ),
    R(
        "sidecar exited with 0 under a Never pod: still restarted (Always is its own policy)",
        "start:s!",
        policy="Never",
        init=("s:Always",),
        containers=(C("s", "exited", code=0), C("a", "running")),
    ),
    R(
        "sidecar crash loop: its back-off holds it, the app keeps running",
        "backoff:s:10 wake:+5",
        init=("s:Always",),
        containers=(C("s", "exited", code=1, attempt=1), C("a", "running")),
        exits=(("s", 3, 60),),
    ),
    R(
        "sidecar failed its liveness probe: killed, to be restarted",
        "kill:s",
        init=("s:Always",),
        containers=(C("s", "running"), C("a", "running")),
        unhealthy={"s": "liveness"},
    ),
    R(
        "an exited regular init container is not run again once the app ran",
        "-",
        init=("s:Always", "i"),
        containers=(C("s", "running"), C("i", "exited", code=0), C("a", "running")),
    ),
    # --- restartPolicy per container and restartPolicyRules (KEP-5307) --------------------------------
    R(
        "container Never in an Always pod: exit 1 stays",
        "-",
        specs=("a:Never",),
        containers=(C("a", "exited", 1),),
    ),
    R(
        "container OnFailure in an Always pod: exit 0 stays",
        "-",
        specs=("a:OnFailure",),
        containers=(C("a", "exited", 0),),
    ),
    R(
        "container Always in a Never pod: exit 0 restarts",
        "start:a!",
        policy="Never",
        specs=("a:Always",),
        containers=(C("a", "exited", 0),),
    ),
    R(
        "rule Restart In [42] over Never: exit 42 restarts",
        "start:a!",
        policy="Never",
        specs=("a:Never:Restart:In:42",),
        containers=(C("a", "exited", 42),),
    ),
    R(
        "rule Restart In [42] over Never: exit 1 stays (the policy decides)",
        "-",
        policy="Never",
        specs=("a:Never:Restart:In:42",),
        containers=(C("a", "exited", 1),),
    ),
    R(
        "rule Restart NotIn [0]: exit 3 restarts",
        "start:a!",
        specs=("a:Never:Restart:NotIn:0",),
        containers=(C("a", "exited", 3),),
    ),
    R(
        "rule Restart NotIn [0]: exit 0 stays",
        "-",
        specs=("a:Never:Restart:NotIn:0",),
        containers=(C("a", "exited", 0),),
    ),
    R(
        "regular init container with its own Never: a failure blocks the pod",
        "-",
        init=("i:Never",),
        containers=(C("i", "exited", 1),),
    ),
    # --- RestartAllContainers (KEP-5532) ----------------------------------------------------------------
    R(
        "app exits 42 with a RestartAllContainers rule: every container killed and removed",
        "restart-all:a kill=s,b remove=s,i,b,a",
        init=("s:Always", "i"),
        specs=(f"a:Never:{RULE42}", "b"),
        containers=(C("s", "running"), C("i", "exited", 0), C("a", "exited", 42), C("b", "running")),
    ),
    R(
        "app exits 1, the rule wants 42: its own policy (Never) decides, nothing restarts",
        "-",
        specs=(f"a:Never:{RULE42}", "b"),
        containers=(C("a", "exited", 1), C("b", "running")),
    ),
    R(
        "a sidecar's RestartAllContainers rule restarts the pod",
        "restart-all:s kill=a remove=a,s",
        init=(f"s:Always:{RULE42}",),
        containers=(C("s", "exited", 42), C("a", "running")),
    ),
    R(
        "a regular init container's rule restarts the pod too",
        "restart-all:i kill= remove=i",
        init=(f"i:Never:{RULE42}",),
        containers=(C("i", "exited", 42),),
    ),
    R(
        "the pod restarts again within the trigger's back-off: held",
        "backoff:a:10 wake:+5",
        specs=(f"a:Never:{RULE42}", "b"),
        containers=(C("a", "exited", 42, attempt=1), C("b", "running", attempt=1)),
        exits=(("a", 3, 60),),
    ),
    R(
        "after the restart nothing is left: the init containers run again first",
        "init:i",
        init=("i",),
        specs=(f"a:Never:{RULE42}",),
    ),
    R(
        "the first rule that matches decides: Restart before RestartAllContainers",
        "start:a!",
        specs=("a:Never:Restart:In:42",),
        containers=(C("a", "exited", 42),),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_sidecar_and_rule_actions(row: R) -> None:
    assert words(decide(row)) == row.expected


def test_the_table_covers_enough_rows() -> None:
    assert len(ROWS) >= 25
    assert len({r.id for r in ROWS}) == len(ROWS)


def test_the_restart_all_trigger_is_removed_last_and_its_exit_steps_the_back_off() -> None:
    row = R("", "", specs=(f"a:Never:{RULE42}", "b"), containers=(C("a", "exited", 42), C("b", "exited", 0)))
    actions = decide(row)
    assert actions.restart_all is not None
    assert actions.restart_all.remove[-1] == "a-0-0"
    assert actions.restart_all.message == "container exited with restart policy rule: a exited with code 42"
    assert [name for name, _, _ in actions.exits] == ["a"]


def test_rules_are_evaluated_in_order() -> None:
    p = Pod("p", containers=[spec("a:Never")])
    a = p.containers[0]
    a.restart_policy_rules = [
        RestartRule("RestartAllContainers", "In", (1, 2)),
        RestartRule("Restart", "NotIn", (0,)),
    ]
    assert [exit_action(p, a, code) for code in (1, 2, 3, 0)] == [
        "RestartAllContainers",
        "RestartAllContainers",
        "Restart",
        "",
    ]


# --- status -----------------------------------------------------------------------------------------------


def status_of(
    row: R, trackers: dict[str, dict[str, ProbeTracker]] | None = None, old: st.PodStatus | None = None
) -> st.PodStatus:
    p = pod_of(row)
    p.readiness_gates = list(getattr(row, "gates", ()))
    obs = observation(Row("", "", containers=row.containers, sandboxes=(Sb(),)))
    return st.build_pod_status(p, obs, old or st.PodStatus(), {}, trackers or {}, LOG_DIR, NOW)


def cond(status: st.PodStatus, type_: str) -> tuple[bool, str, str]:
    c = status.conditions[type_]
    return c.status, c.reason, c.message


def tracker(kind: str, verdict: bool) -> ProbeTracker:
    return ProbeTracker(kind, Probe("exec", ["true"]), NOW, verdict=verdict)


def test_a_running_sidecar_counts_toward_ready_and_shows_in_init_statuses() -> None:
    row = R("", "", init=("s:Always",), containers=(C("s", "running"), C("a", "running")))
    status = status_of(row)
    (s,) = status.init_container_statuses
    assert (s.name, s.state, s.started, s.ready) == ("s", "running", True, True)
    assert cond(status, st.INITIALIZED)[0] and cond(status, st.READY)[0]
    assert status.phase == st.RUNNING
    unready = status_of(row, {"s-0-0": {READINESS: tracker(READINESS, False)}})
    assert cond(unready, st.CONTAINERS_READY)[:2] == (False, "ContainersNotReady")
    assert "containers with unready status: [s]" in cond(unready, st.READY)[2]


def test_a_sidecar_not_started_keeps_the_pod_uninitialized() -> None:
    row = R("", "", init=("s:Always+startup",), containers=(C("s", "running"),))
    status = status_of(row, {"s-0-0": {STARTUP: tracker(STARTUP, False)}})
    assert cond(status, st.INITIALIZED)[:2] == (False, "ContainersNotInitialized")
    assert cond(status, st.INITIALIZED)[2].startswith("containers with incomplete status: [s]")
    assert status.phase == st.PENDING


def test_the_app_done_under_never_succeeds_whatever_the_sidecar_does() -> None:
    row = R("", "", policy="Never", init=("s:Always",), containers=(C("s", "running"), C("a", "exited", 0)))
    status = status_of(row)
    assert status.phase == st.SUCCEEDED
    assert cond(status, st.READY)[:2] == (False, "PodCompleted")


def test_a_container_policy_decides_the_phase() -> None:
    never = R("", "", specs=("a:Never",), containers=(C("a", "exited", 1),))
    assert status_of(never).phase == st.FAILED  # an Always pod whose only container will not restart
    rule = R("", "", policy="Never", specs=("a:Never:Restart:In:42",), containers=(C("a", "exited", 42),))
    assert status_of(rule).phase == st.RUNNING  # about to restart


@dataclass
class GatedRow(R):
    gates: tuple[str, ...] = ()


def test_readiness_gates_hold_ready_with_the_kubelets_words() -> None:
    row = GatedRow("", "", containers=(C("a", "running"),), gates=("example.com/lb",))
    status = status_of(row)
    assert cond(status, st.CONTAINERS_READY)[0] is True
    assert cond(status, st.READY) == (
        False,
        "ReadinessGatesNotReady",
        'corresponding condition of pod readiness gate "example.com/lb" does not exist.',
    )
    old = st.PodStatus()
    old.set_condition("example.com/lb", False, "", "", NOW)
    assert cond(status_of(row, old=old), st.READY)[2] == (
        'the status of pod readiness gate "example.com/lb" is not "True", but False'
    )
    old.set_condition("example.com/lb", True, "", "", NOW)
    opened = status_of(row, old=old)
    assert cond(opened, st.READY) == (True, "", "")
    types = [c["type"] for c in opened.to_dict()["conditions"]]
    assert types[-1] == "example.com/lb"  # kept, after the kubelet's own


def test_all_containers_restarting_is_published_for_pods_with_such_a_rule() -> None:
    row = R("", "", specs=(f"a:Never:{RULE42}",), containers=(C("a", "running"),))
    status = status_of(row)
    assert cond(status, st.ALL_CONTAINERS_RESTARTING) == (False, "", "")
    assert (
        st.ALL_CONTAINERS_RESTARTING not in status_of(R("", "", containers=(C("a", "running"),))).conditions
    )
    manager = st.StatusManager(lambda: None)
    manager.publish(lambda old: status)
    manager.restarting_all("container exited with restart policy rule: a exited with code 42", NOW)
    during = manager.get()
    assert cond(during, st.ALL_CONTAINERS_RESTARTING)[:2] == (True, "RestartAllContainersStarted")
    assert not during.ready
    still = status_of(R("", "", specs=(f"a:Never:{RULE42}",), containers=(C("a", "exited", 42),)), old=during)
    assert cond(still, st.ALL_CONTAINERS_RESTARTING)[0] is True  # its container is not removed yet
    gone = status_of(R("", "", specs=(f"a:Never:{RULE42}",)), old=during)
    assert cond(gone, st.ALL_CONTAINERS_RESTARTING) == (False, "", "")


def test_a_status_patch_sets_only_the_conditions_that_are_not_the_kubelets() -> None:
    manager = st.StatusManager(lambda: None)
    manager.set_condition(st.READY, False, "ContainersNotReady", "", NOW)
    theirs = [
        {"type": "example.com/lb", "status": "True", "reason": "LBReady"},
        {"type": st.READY, "status": "True"},  # the kubelet's own: not a client's to set
        {"type": "PodScheduled", "status": "True"},
    ]
    manager.set_external_conditions(theirs, NOW)
    conditions = manager.get().conditions
    assert cond(manager.get(), st.READY) == (False, "ContainersNotReady", "")
    assert cond(manager.get(), "example.com/lb") == (True, "LBReady", "")
    assert "PodScheduled" not in conditions
    manager.set_external_conditions([{"type": "example.com/lb", "status": "True"}], NOW + 5)
    assert manager.get().conditions["example.com/lb"].last_transition == NOW  # no change, no transition
    manager.set_external_conditions([], NOW + 6)
    assert "example.com/lb" not in manager.get().conditions


class _FakeCRI:
    """Records StopContainer calls; an app container's stop takes `app_stop` seconds of a fake clock."""

    def __init__(self, app_stop: float) -> None:
        self.now, self.app_stop, self.stops = 0.0, app_stop, list[tuple[str, int]]()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def stop_container(self, container_id: str, grace: int) -> None:
        with self._lock:
            self.stops.append((container_id, grace))
            if not container_id.startswith("s"):
                self.now = max(self.now, self.app_stop)


def test_sidecars_stop_after_the_apps_in_reverse_order_with_what_is_left_of_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Pod("p", termination_grace_period_seconds=10, containers=[spec("a"), spec("b")])
    p.init_containers = [spec("s1:Always"), spec("i"), spec("s2:Always")]
    cri = _FakeCRI(app_stop=6.5)
    monkeypatch.setattr(kuberuntime, "time", cri)
    runtime = kuberuntime.PodRuntime(cri, p, lambda *a: None, "/nonexistent", Path("/nonexistent"))  # type: ignore[arg-type]
    live = [pb.Container(id=n, metadata=pb.ContainerMetadata(name=n)) for n in ("s1", "s2", "a", "b")]
    assert runtime.kill_containers(live, "test")
    assert sorted(cri.stops[:2]) == [("a", 10), ("b", 10)]  # the apps first, together
    assert cri.stops[2:] == [("s2", 4), ("s1", 4)]  # then the sidecars, last one first, 10 - 6.5 left
    cri.stops, cri.now = [], 0.0
    runtime.kill_containers(live, "test", grace=3)
    assert cri.stops[2:] == [("s2", 2), ("s1", 2)]  # at least 2 s each


# --- manifest ---------------------------------------------------------------------------------------------


def doc(init: list[dict[str, Any]] | None = None, **container: Any) -> dict[str, Any]:
    spec_: dict[str, Any] = {"containers": [{"name": "a", "image": "busybox", **container}]}
    if init:
        spec_["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec_}


def test_the_manifest_reads_sidecars_rules_and_gates() -> None:
    d = doc(
        init=[
            {
                "name": "s",
                "image": "busybox",
                "restartPolicy": "Always",
                "readinessProbe": {"exec": {"command": ["true"]}},
            }
        ],
        restartPolicy="Never",
        restartPolicyRules=[
            {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [42]}}
        ],
    )
    d["spec"]["readinessGates"] = [{"conditionType": "example.com/lb"}]
    p = parse_pod(d)
    assert [c.name for c in p.sidecars] == ["s"] and p.is_sidecar(p.init_containers[0])
    assert p.containers[0].restart_policy_rules == [RestartRule("RestartAllContainers", "In", (42,))]
    assert p.readiness_gates == ["example.com/lb"]


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (
            doc(restartPolicyRules=[{"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}]),
            "spec.containers[0].restartPolicy: Required value",
        ),
        (doc(restartPolicy="Sometimes"), 'spec.containers[0].restartPolicy: Unsupported value: "Sometimes"'),
        (
            doc(
                restartPolicy="Never",
                restartPolicyRules=[{"action": "Reboot", "exitCodes": {"operator": "In"}}],
            ),
            'spec.containers[0].restartPolicyRules[0].action: Unsupported value: "Reboot"',
        ),
        (
            doc(
                restartPolicy="Never",
                restartPolicyRules=[{"action": "Restart", "exitCodes": {"operator": "Is"}}],
            ),
            'spec.containers[0].restartPolicyRules[0].exitCodes.operator: Unsupported value: "Is"',
        ),
        (
            doc(restartPolicy="Never", restartPolicyRules=[{"action": "Restart"}]),
            "spec.containers[0].restartPolicyRules[0].exitCodes: Required value",
        ),
        (
            doc(init=[{"name": "i", "image": "busybox", "startupProbe": {"exec": {"command": ["true"]}}}]),
            "spec.initContainers[0].startupProbe: Forbidden",
        ),
    ],
)
def test_broken_rules_name_the_field(d: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_pod(d)
    assert str(e.value).startswith(message), str(e.value)
