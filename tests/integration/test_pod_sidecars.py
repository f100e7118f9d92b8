"""Native sidecars and RestartAllContainers with real pods, driven by the real kubectl (issue 14).

One daemon (root /tmp/ph-sidecar-*, bridge pha0, subnet 10.231.41.0/24, CrashLoopBackOff base 1 s) serves
the module. The sidecar test proves the order of things from inside the pod: the app refuses to run
without a file only the sidecar writes, and each container's SIGTERM handler appends its name to a file
on a hostPath volume (the app's handler takes a second first, so a sidecar stopped alongside it would
write first). The sidecar's crash is real: its PID 1 is SIGKILLed from the host, found over CRI as
`crictl inspect` finds it. The in-place restart is checked against CRI: the sandbox id, pause's PID and
the pod IP before and after; the init container's line in an emptyDir shows it ran twice in one volume.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from podhost.cri import api_pb2 as pb
from tests.instance import OrphanReaper
from tests.integration.test_kube_api import Kube, kube_checked, kubectl_instance
from tests.integration.test_kubelet_pods import BUSYBOX, KubeletInstance, container
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "pha0", "10.231.41.0/24"


@pytest.fixture(scope="module")
def sidecar_instance(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubectl_instance("ph-sidecar", BRIDGE, SUBNET)


@pytest.fixture
def kube(sidecar_instance: KubeletInstance) -> Iterator[Kube]:
    yield from kube_checked(sidecar_instance, Kube(sidecar_instance))


def pod(k: Kube, name: str) -> dict[str, Any]:
    return k.inst.pods.pod(name)


def cri_container(k: Kube, pod_uid: str, name: str) -> tuple[pb.Container, dict[str, Any]]:
    """The newest running container `name` of the pod over CRI, with its verbose info (pid, ...)."""
    flt = pb.ContainerFilter(
        label_selector={"io.kubernetes.pod.uid": pod_uid, "io.kubernetes.container.name": name},
        state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING),
    )
    (c,) = k.inst.client.list_containers(flt)
    info = json.loads(k.inst.client.container_status(c.id, verbose=True).info["info"])
    return c, info


SIDECAR_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: with-sidecar}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: order, hostPath: {{path: {order}, type: Directory}}}}
  initContainers:
  - name: proxy
    image: {image}
    restartPolicy: Always
    command: [sh, -c, 'trap "echo proxy >> /order/stopped; exit 0" TERM; sleep 1; echo up > /shared/ready;
      while true; do sleep 0.1; done']
    startupProbe: {{exec: {{command: [test, -f, /shared/ready]}}, periodSeconds: 1}}
    readinessProbe: {{exec: {{command: [test, -f, /shared/ready]}}, periodSeconds: 1}}
    volumeMounts: [{{name: shared, mountPath: /shared}}, {{name: order, mountPath: /order}}]
  containers:
  - name: app
    image: {image}
    command: [sh, -c, 'test -f /shared/ready || exit 7; trap "sleep 1; echo app >> /order/stopped; exit 0" TERM;
      while true; do sleep 0.1; done']
    volumeMounts: [{{name: shared, mountPath: /shared}}, {{name: order, mountPath: /order}}]
"""


def test_a_native_sidecar_runs_before_and_during_the_app_restarts_alone_and_stops_last(kube: Kube) -> None:
    order = kube.inst.root / "order"
    order.mkdir()
    kube("apply", "-f", kube.write("sidecar.yaml", SIDECAR_POD.format(order=order, image=BUSYBOX)))

    # Before: the app starts only once the sidecar's startup probe passed (else it exits 7 and restarts).
    p = wait_for(
        "app running", lambda: (p := pod(kube, "with-sidecar"))["status"]["phase"] == "Running" and p
    )
    wait_for("2/2 Ready", lambda: " 2/2 " in kube("get", "pods").stdout, timeout=30)
    p = pod(kube, "with-sidecar")
    proxy, app = container(p, "proxy", "initContainerStatuses"), container(p, "app")
    assert (proxy["started"], proxy["ready"], proxy["restartCount"]) == (True, True, 0)
    assert (app["ready"], app["restartCount"]) == (True, 0)
    assert "running" in proxy["state"] and "running" in app["state"]
    uid = p["metadata"]["uid"]
    proxy_c, proxy_info = cri_container(kube, uid, "proxy")
    app_c, _ = cri_container(kube, uid, "app")
    started = {
        n: kube.inst.client.container_status(c.id).status.started_at
        for n, c in (("proxy", proxy_c), ("app", app_c))
    }
    assert started["proxy"] + 1_000_000_000 <= started["app"], started  # the sidecar's second of warm-up
    conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conditions["Initialized"] == conditions["ContainersReady"] == conditions["Ready"] == "True"

    # During: the sidecar's crash (its PID 1 SIGKILLed from the host) restarts only the sidecar.
    os.kill(int(proxy_info["pid"]), signal.SIGKILL)

    def proxy_back() -> dict[str, Any] | None:
        p = pod(kube, "with-sidecar")
        s = container(p, "proxy", "initContainerStatuses")
        return p if s["restartCount"] == 1 and "running" in s["state"] and s["ready"] else None

    p = wait_for("the sidecar restarted", proxy_back, timeout=30)
    proxy, app = container(p, "proxy", "initContainerStatuses"), container(p, "app")
    assert proxy["lastState"]["terminated"]["exitCode"] == 137
    assert app["restartCount"] == 0 and "running" in app["state"]
    assert cri_container(kube, uid, "app")[0].id == app_c.id  # the very same app container
    assert cri_container(kube, uid, "proxy")[0].id != proxy_c.id
    wait_for("2/2 again", lambda: " 2/2 " in kube("get", "pods").stdout, timeout=30)

    # After: deletion stops the app (its handler takes a second), and only then the sidecar.
    kube("delete", "pod", "with-sidecar", timeout=60)
    assert (order / "stopped").read_text().split() == ["app", "proxy"]


RESTART_ALL_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: restart-all}}
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - {{name: data, emptyDir: {{}}}}
  initContainers:
  - name: setup
    image: {image}
    command: [sh, -c, 'echo setup >> /data/runs']
    volumeMounts: [{{name: data, mountPath: /data}}]
  - name: helper
    image: {image}
    restartPolicy: Always
    command: [sh, -c, 'while true; do sleep 0.1; done']
  containers:
  - name: worker
    image: {image}
    restartPolicy: Never
    restartPolicyRules:
    - action: RestartAllContainers
      exitCodes: {{operator: In, values: [42]}}
    command: [sh, -c, 'if [ "$(wc -l < /data/runs)" -lt 2 ]; then until [ -f /data/go ]; do sleep 0.1; done; exit 42; fi;
      while true; do sleep 0.1; done']
    volumeMounts: [{{name: data, mountPath: /data}}]
"""


def _watch_restarting(watch_output: str) -> list[str]:
    """The AllContainersRestarting statuses, in order, in a `kubectl get -w -o json` stream."""
    seen, decoder, text = [], json.JSONDecoder(), watch_output.strip()
    while text:
        obj, end = decoder.raw_decode(text)
        text = text[end:].lstrip()
        for c in obj.get("status", {}).get("conditions", []):
            if c["type"] == "AllContainersRestarting" and (not seen or seen[-1] != c["status"]):
                seen.append(c["status"])
    return seen


def test_restart_all_containers_keeps_the_sandbox_its_pause_its_ip_and_volumes(kube: Kube) -> None:
    kube("apply", "-f", kube.write("restart-all.yaml", RESTART_ALL_POD.format(image=BUSYBOX)))
    wait_for("2/2 Ready", lambda: " 2/2 " in kube("get", "pods").stdout, timeout=60)
    before = pod(kube, "restart-all")
    sandbox = kube.inst.sandbox(before)
    pause = kube.inst.pause_pid(before)
    ip = before["status"]["podIP"]
    assert ip.startswith("10.231.41.")
    assert container(before, "worker")["restartCount"] == 0
    assert {c["type"]: c["status"] for c in before["status"]["conditions"]}[
        "AllContainersRestarting"
    ] == "False"

    watch = kube.inst.kubectl_watch("get", "pod", "restart-all", "-w", "-o", "json")
    try:
        wait_for("the watch's first object", lambda: '"restart-all"' in watch.text, timeout=30)
        # The worker's first run exits 42 once told to: its RestartAllContainers rule matches.
        kube("exec", "restart-all", "-c", "worker", "--", "touch", "/data/go")

        def restarted() -> dict[str, Any] | None:
            p = pod(kube, "restart-all")
            worker = container(p, "worker")
            return p if worker["restartCount"] == 1 and "running" in worker["state"] else None

        wait_for("the worker running after the in-place restart", restarted, timeout=60)
        wait_for("2/2 Ready again", lambda: " 2/2 " in kube("get", "pods").stdout, timeout=30)
    finally:
        out = watch.stop()

    # The init container ran again, in the same emptyDir (two lines); every container counts a restart.
    runs = kube("exec", "restart-all", "-c", "worker", "--", "cat", "/data/runs").stdout
    assert runs.split() == ["setup", "setup"]
    after = pod(kube, "restart-all")
    init = {c["name"]: c for c in after["status"]["initContainerStatuses"]}
    assert init["setup"]["restartCount"] == 1 and init["helper"]["restartCount"] == 1
    worker = container(after, "worker")
    assert worker["lastState"]["terminated"]["exitCode"] == 42
    conditions = {c["type"]: c for c in after["status"]["conditions"]}
    assert conditions["AllContainersRestarting"]["status"] == "False"
    assert conditions["Ready"]["status"] == "True"
    seen = _watch_restarting(out)
    assert seen[-2:] == ["True", "False"], seen  # True while the containers went, as the watch saw it

    # The sandbox outlived every container: the same sandbox (attempt 0), the same pause, the same IP.
    (only,) = kube.inst.client.list_pod_sandbox(
        pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": after["metadata"]["uid"]})
    )
    assert (only.id, only.metadata.attempt, only.state) == (sandbox.id, 0, pb.SANDBOX_READY)
    assert kube.inst.pause_pid(after) == pause
    assert after["status"]["podIP"] == ip
    assert kube.inst.client.pod_sandbox_status(sandbox.id).status.network.ip == ip
    pods_out = kube("get", "pods", "-o", "wide").stdout
    assert "restart-all" in pods_out and ip in pods_out


GATED_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: gated}}
spec:
  terminationGracePeriodSeconds: 1
  readinessGates:
  - conditionType: example.com/lb-ready
  containers:
  - name: main
    image: {image}
    command: [sh, -c, 'while true; do sleep 0.1; done']
"""


def test_a_readiness_gate_holds_ready_until_its_condition_is_patched_true(kube: Kube) -> None:
    kube("apply", "-f", kube.write("gated.yaml", GATED_POD.format(image=BUSYBOX)))

    def ready_condition() -> dict[str, Any]:
        return {c["type"]: c for c in pod(kube, "gated")["status"]["conditions"]}.get("Ready", {})

    held = wait_for(
        "the gate holding Ready",
        lambda: (r := ready_condition()).get("reason") == "ReadinessGatesNotReady" and r,
    )
    assert held["status"] == "False"
    assert (
        held["message"]
        == 'corresponding condition of pod readiness gate "example.com/lb-ready" does not exist.'
    )
    wide = kube("get", "pods", "-o", "wide").stdout
    line = next(line for line in wide.splitlines() if line.startswith("gated "))
    assert line.split()[1] == "1/1" and line.split()[-1] == "0/1", wide  # READY, READINESS GATES

    # A controller says the load balancer is ready: the status subresource, as kubectl patches it.
    patch = '{"status":{"conditions":[{"type":"example.com/lb-ready","status":"True","reason":"LBReady"}]}}'
    kube("patch", "pod", "gated", "--subresource", "status", "-p", patch)
    wait_for("Ready", lambda: ready_condition().get("status") == "True", timeout=30)
    conditions = {c["type"]: c for c in pod(kube, "gated")["status"]["conditions"]}
    assert conditions["example.com/lb-ready"]["status"] == "True"
    assert conditions["example.com/lb-ready"]["reason"] == "LBReady"
    wide = kube("get", "pods", "-o", "wide").stdout
    line = next(line for line in wide.splitlines() if line.startswith("gated "))
    assert line.split()[-1] == "1/1", wide

    # And back: the gate False holds Ready again, in the kubelet's words.
    kube("patch", "pod", "gated", "--subresource", "status", "-p", patch.replace('"True"', '"False"'))
    held = wait_for(
        "Ready held again", lambda: (r := ready_condition()).get("status") == "False" and r, timeout=30
    )
    assert held["reason"] == "ReadinessGatesNotReady"
    assert (
        held["message"] == 'the status of pod readiness gate "example.com/lb-ready" is not "True", but False'
    )


RULES_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: rules}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: retried
    image: {image}
    restartPolicy: Never
    restartPolicyRules:
    - action: Restart
      exitCodes: {{operator: In, values: [3]}}
    command: [sh, -c, 'sleep 0.2; exit 3']
  - name: done
    image: {image}
    command: [sh, -c, 'exit 4']
  - name: always
    image: {image}
    restartPolicy: Always
    command: [sh, -c, 'sleep 0.2; exit 0']
"""


def test_container_restart_policies_and_rules_decide_each_exit(kube: Kube) -> None:
    """KEP-5307 in a Never pod: a rule restarts exit 3, the pod's Never keeps exit 4, a container's own
    Always restarts a clean exit."""
    kube("apply", "-f", kube.write("rules.yaml", RULES_POD.format(image=BUSYBOX)))

    def restarted_twice() -> dict[str, Any] | None:
        p = pod(kube, "rules")
        counts = [container(p, n)["restartCount"] for n in ("retried", "always")]
        return p if min(counts) >= 2 else None

    p = wait_for("the rule and the container policy restarting", restarted_twice, timeout=60)
    retried = container(p, "retried")
    assert retried["lastState"]["terminated"]["exitCode"] == 3
    done = container(p, "done")
    assert done["restartCount"] == 0 and done["state"]["terminated"]["exitCode"] == 4
    assert p["status"]["phase"] == "Running"  # containers still to restart: not Failed


JOB_POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: job-with-sidecar}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: logshipper
    image: {image}
    restartPolicy: Always
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
  containers:
  - name: job
    image: {image}
    command: [sh, -c, 'sleep 0.5; echo done']
"""


def test_a_job_pod_completes_though_its_sidecar_never_exits(kube: Kube) -> None:
    """The sidecar use the KEP was made for: once the app containers are done, the pod is Succeeded and
    its sidecar is stopped (and not restarted), its sandbox given back."""
    kube("apply", "-f", kube.write("job.yaml", JOB_POD.format(image=BUSYBOX)))
    p = wait_for(
        "Succeeded",
        lambda: (p := pod(kube, "job-with-sidecar"))["status"]["phase"] == "Succeeded" and p,
        timeout=30,
    )
    wait_for(
        "the sidecar stopped",
        lambda: (
            "terminated"
            in container(pod(kube, "job-with-sidecar"), "logshipper", "initContainerStatuses")["state"]
        ),
        timeout=30,
    )
    p = pod(kube, "job-with-sidecar")
    sidecar = container(p, "logshipper", "initContainerStatuses")
    assert sidecar["restartCount"] == 0 and sidecar["state"]["terminated"]["exitCode"] == 0
    assert container(p, "job")["state"]["terminated"]["reason"] == "Completed"
    line = next(
        line for line in kube("get", "pods").stdout.splitlines() if line.startswith("job-with-sidecar ")
    )
    assert line.split()[1:3] == ["0/2", "Completed"], line
    assert (
        kube.inst.client.list_pod_sandbox(
            pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
        )
        == []
    )
