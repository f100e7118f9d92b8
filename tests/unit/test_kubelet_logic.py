"""The pod manager's pure parts: back-off, probe verdicts, phase, endpoints, PLEG diff, manifests, CLI text."""

from __future__ import annotations

import pytest

from podhost.kubelet import status as st
from podhost.kubelet.backoff import CrashLoopBackOff, retry_backoff
from podhost.kubelet.endpoints import PodView, endpoints_for
from podhost.kubelet.manager import static_pod_uid
from podhost.kubelet.manifest import ManifestError, Probe, load_objects, parse_pod
from podhost.kubelet.pleg import diff
from podhost.kubelet.podspec import container_config, container_mounts, sandbox_config
from podhost.kubelet.probes import LIVENESS, READINESS, STARTUP, ProbeTracker


def pod_doc(**spec: object) -> dict:
    base: dict = {"containers": [{"name": "a", "image": "busybox"}]}
    base.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "x"}},
        "spec": base,
    }


# --- CrashLoopBackOff ------------------------------------------------------------------------------------


def test_backoff_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    b = CrashLoopBackOff(base=10, cap=40, reset=600)
    t = 1000.0
    assert b.restart_at("c", t - 1, t) == t  # first exit: restart now
    assert b.restart_at("c", t - 1, t) == t  # the same exit asked again: same answer
    waits = []
    for i in range(1, 6):
        finished = t + i * 100
        waits.append(b.restart_at("c", finished - 1, finished) - finished)
    assert waits == [10, 20, 40, 40, 40]
    assert b.wait("c") == 40


def test_backoff_resets_after_a_long_run() -> None:
    b = CrashLoopBackOff(base=10, cap=300, reset=600)
    b.restart_at("c", 0, 1)
    assert b.restart_at("c", 2, 3) == 13
    assert b.restart_at("c", 100, 800) == 800  # ran 700 s >= 600: back to an immediate restart
    assert b.restart_at("c", 801, 802) == 812


def test_retry_backoff_doubles_to_its_cap_and_a_success_forgets_it() -> None:
    retry = retry_backoff()
    assert retry.until("a") == 0.0  # nothing failed: nothing held
    waits = []
    for i in range(8):
        until = retry.step("a", 100.0 * i)
        waits.append(until - 100.0 * i)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert retry.wait("a") == 30 and retry.until("b") == 0.0  # keys are independent
    retry.forget("a")
    assert retry.step("a", 1000.0) == 1001.0


def test_backoff_peek_records_nothing() -> None:
    b = CrashLoopBackOff(base=10, cap=300, reset=600)
    b.restart_at("c", 0, 1)
    assert b.peek_restart("c", 2, 3) == (13, 10)
    assert b.peek_restart("c", 2, 3) == (13, 10) and b.wait("c") == 0
    assert b.restart_at("c", 2, 3) == 13 and b.wait("c") == 10


# --- probes ----------------------------------------------------------------------------------------------


def test_probe_thresholds_and_initial_verdicts() -> None:
    probe = Probe(
        handler="exec", command=["true"], period_seconds=2, failure_threshold=3, success_threshold=2
    )
    ready = ProbeTracker.start(READINESS, probe, container_started=100.0)
    assert not ready.verdict and ready.due(100.0) and not ready.due(99.0)
    assert not ready.record(True, "", 100.0)  # one success of two
    assert ready.record(True, "", 102.0) and ready.verdict
    assert ready.next_due == 104.0
    assert not ready.record(False, "no", 104.0) and not ready.record(False, "no", 106.0)
    assert ready.record(False, "no", 108.0) and not ready.verdict and ready.message == "no"
    live = ProbeTracker.start(LIVENESS, Probe(handler="exec", command=["x"], failure_threshold=1), 0.0)
    assert live.verdict  # liveness starts alive
    assert live.record(False, "dead", 0.0) and live.failed
    startup = ProbeTracker.start(STARTUP, Probe(handler="exec", command=["x"], failure_threshold=2), 0.0)
    startup.record(False, "", 0.0)
    assert not startup.failed
    startup.record(False, "", 1.0)
    assert startup.failed and not startup.verdict


# --- phase -----------------------------------------------------------------------------------------------


def _c(state: str, code: int | None = None, last: bool = False) -> st.ContainerStatus:
    c = st.ContainerStatus(name="c", image="i", state=state)
    if code is not None:
        c.terminated = st.Terminated(exit_code=code, reason="Completed" if code == 0 else "Error")
    if last:
        c.last_state = st.Terminated(exit_code=1, reason="Error")
    return c


@pytest.mark.parametrize(
    ("policy", "containers", "phase"),
    [
        ("Always", [_c("running")], st.RUNNING),
        ("Always", [_c(st.WAITING)], st.PENDING),
        ("Always", [_c(st.WAITING, last=True)], st.RUNNING),  # CrashLoopBackOff
        ("Always", [_c(st.TERMINATED, 0)], st.RUNNING),
        ("OnFailure", [_c(st.TERMINATED, 0)], st.SUCCEEDED),
        ("OnFailure", [_c(st.WAITING, last=True)], st.RUNNING),
        ("Never", [_c(st.TERMINATED, 1)], st.FAILED),
        ("Never", [_c(st.TERMINATED, 0), _c(st.TERMINATED, 0)], st.SUCCEEDED),
        ("Never", [_c(st.TERMINATED, 0), _c("running")], st.RUNNING),
    ],
)
def test_pod_phase(policy: str, containers: list[st.ContainerStatus], phase: str) -> None:
    assert st.pod_phase(policy, [], containers, initialized=True) == phase


def test_phase_with_init_containers() -> None:
    assert st.pod_phase("Always", [_c("running")], [_c(st.WAITING)], initialized=False) == st.PENDING
    assert st.pod_phase("Never", [_c(st.TERMINATED, 2)], [_c(st.WAITING)], initialized=False) == st.FAILED


def test_condition_transition_time_moves_only_on_change() -> None:
    s = st.PodStatus()
    s.set_condition(st.READY, False, "X", "x", 1.0)
    s.set_condition(st.READY, False, "Y", "y", 2.0)
    assert s.conditions[st.READY].last_transition == 1.0 and s.conditions[st.READY].reason == "Y"
    s.set_condition(st.READY, True, "", "", 3.0)
    assert s.conditions[st.READY].last_transition == 3.0 and s.ready


# --- endpoints -------------------------------------------------------------------------------------------


def test_endpoints_list_ready_pods_and_resolve_named_ports() -> None:
    svc_doc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {selector: {app: x}, ports: [{name: http, port: 80, targetPort: web}]}\n"
    )
    (svc,) = load_objects(svc_doc)
    ported = pod_doc(
        containers=[{"name": "a", "image": "i", "ports": [{"name": "web", "containerPort": 8080}]}]
    )
    a = parse_pod(ported)
    b = parse_pod({**ported, "metadata": {"name": "q", "labels": {"app": "x"}}})
    c = parse_pod({**pod_doc(), "metadata": {"name": "r", "labels": {"app": "x"}}})  # no port "web"
    other = parse_pod({**ported, "metadata": {"name": "s", "labels": {"app": "y"}}})
    views = [
        PodView(a, "10.0.0.1", True),
        PodView(b, "10.0.0.2", False),
        PodView(c, "10.0.0.3", True),
        PodView(other, "10.0.0.4", True),
    ]
    ep = endpoints_for(svc, views)  # type: ignore[arg-type]
    assert ep.addresses() == ["10.0.0.1:8080"]
    subset = ep.to_dict()["subsets"][0]
    assert subset["notReadyAddresses"][0]["ip"] == "10.0.0.2"


# --- PLEG ------------------------------------------------------------------------------------------------


def test_pleg_diff_names_the_pods_that_changed() -> None:
    old = {"s1": ("u1", 0), "c1": ("u1", 1), "c2": ("u2", 1)}
    new = {"s1": ("u1", 0), "c1": ("u1", 2), "c3": ("u3", 0), "c4": ("", 1)}
    assert diff(old, new) == {"u1", "u2", "u3"}


# --- manifests and CRI configs ---------------------------------------------------------------------------


def test_probes_volumes_and_services_parse() -> None:
    pod = parse_pod(
        pod_doc(
            volumes=[
                {"name": "data", "emptyDir": {}},
                {"name": "h", "hostPath": {"path": "/srv", "type": "Directory"}},
            ],
            containers=[
                {
                    "name": "a",
                    "image": "i",
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "h", "mountPath": "/h", "readOnly": True},
                    ],
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                    "readinessProbe": {"httpGet": {"path": "/x", "port": "http"}, "successThreshold": 2},
                    "startupProbe": {"tcpSocket": {"port": 80}},
                    "ports": [{"name": "http", "containerPort": 80}],
                }
            ],
        )
    )
    c = pod.containers[0]
    assert (
        c.liveness_probe and c.liveness_probe.period_seconds == 1 and c.liveness_probe.failure_threshold == 3
    )
    assert c.readiness_probe and c.readiness_probe.port == "http" and c.readiness_probe.success_threshold == 2
    assert c.startup_probe and c.startup_probe.handler == "tcpSocket"
    mounts = container_mounts(c, {"data": "/var/x/data", "h": "/srv"})
    assert [(m.container_path, m.host_path, m.readonly) for m in mounts] == [
        ("/data", "/var/x/data", False),
        ("/h", "/srv", True),
    ]
    assert container_config(pod, c, 0, mounts).mounts[1].readonly
    assert sandbox_config(pod, 0, "/l", cgroup_parent="/x/podu").linux.cgroup_parent == "/x/podu"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "containers": [
                    {"name": "a", "image": "i", "lifecycle": {"preStop": {"tcpSocket": {"port": 1}}}}
                ]
            },
            r"lifecycle.preStop.tcpSocket: not supported on this node",
        ),
        (
            {
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "livenessProbe": {"exec": {"command": ["x"]}, "successThreshold": 2},
                    }
                ]
            },
            r"livenessProbe.successThreshold: must be 1",
        ),
        (
            {
                "containers": [
                    {
                        "name": "a",
                        "image": "i",
                        "readinessProbe": {"periodSeconds": 0, "exec": {"command": ["x"]}},
                    }
                ]
            },
            r"readinessProbe.periodSeconds: must be at least 1",
        ),
        (
            {"volumes": [{"name": "v", "nfs": {"server": "s", "path": "/p"}}]},
            r"spec.volumes\[0\].nfs: not supported on this node",
        ),
        (
            {"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]},
            r"spec.volumes\[0\].projected.sources\[0\].serviceAccountToken: not supported on this node",
        ),
        (
            {
                "containers": [
                    {"name": "a", "image": "i", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}
                ]
            },
            r"spec.containers\[0\].volumeMounts\[0\].name: no volume named 'nope'",
        ),
        ({"dnsPolicy": "None"}, r"spec.dnsConfig.nameservers: required"),
    ],
)
def test_broken_pods_name_the_field(spec: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_pod(pod_doc(**spec))


def test_broken_services_and_streams() -> None:
    with pytest.raises(ManifestError, match=r"spec.type: NodePort: not supported on this node"):
        load_objects("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort}\n")
    with pytest.raises(
        ManifestError, match=r"f.yaml \(document 2\): spec.containers\[0\].image: Required value"
    ):
        load_objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c}]}\n",
            "f.yaml",
        )
    with pytest.raises(ManifestError, match="appears twice"):
        load_objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\n"
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n"
        )


def test_static_pod_uid_is_stable_per_content() -> None:
    assert static_pod_uid("/m/a.yaml", "x") == static_pod_uid("/m/a.yaml", "x")
    assert static_pod_uid("/m/a.yaml", "x") != static_pod_uid("/m/a.yaml", "y")
