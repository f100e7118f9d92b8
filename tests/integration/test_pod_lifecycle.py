"""Container lifecycle with real pods and the real kubectl (issue 14): postStart and preStop hooks (exec,
httpGet, sleep), the grace period of a deletion (preStop, then SIGTERM, then SIGKILL when it is over),
startup probes, and grpc probes against a health server in the pod's network namespace.

One daemon (root /tmp/ph-life-*, bridge phb0, subnet 10.242.0.0/24, CrashLoopBackOff base 1 s) serves the
module. What a container writes that must outlive it (the order of preStop and SIGTERM) goes to a
hostPath directory under the instance's root. httpGet hooks name host 127.0.0.1 and reach a recording
server of the test on loopback; the grpc health server is the test's own Python process, entered into the
pod's network namespace with nsenter by pause's PID and ended by its PID. After each test the pods are
deleted through the API and the instance is checked for leaks.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kube_api import Kube, kube_checked, kubectl_instance
from tests.integration.test_kubelet_pods import (
    BUSYBOX,
    KubeletInstance,
    container,
    is_ready,
)
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phb0", "10.242.0.0/24"
_REPO = str(Path(__file__).resolve().parents[2])
#: A main process that leaves at SIGTERM (sh runs the trap once the `sleep 1` in hand ends).
POLITE = 'trap "echo TERM >> /shared/$NAME; exit 0" TERM; echo started >> /shared/$NAME; while true; do sleep 1; done'
#: One that ignores it: only SIGKILL ends it.
STUBBORN = 'trap "" TERM; echo started >> /shared/$NAME; while true; do sleep 1; done'


@pytest.fixture(scope="module")
def life(orphan_reaper: OrphanReaper) -> Iterator[KubeletInstance]:
    yield from kubectl_instance("ph-life", BRIDGE, SUBNET)


@pytest.fixture
def kube(life: KubeletInstance) -> Iterator[Kube]:
    yield from kube_checked(life, Kube(life))


def shared_dir(life: KubeletInstance) -> Path:
    """A host directory for pods to write into (hostPath), under the instance's root."""
    path = life.root / f"shared-{secrets.token_hex(3)}"
    path.mkdir()
    return path


def pod_yaml(
    name: str,
    script: str,
    shared: Path,
    grace: int = 10,
    lifecycle: str = "",
    probes: str = "",
    policy: str = "Always",
) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: {grace}
  volumes: [{{name: shared, hostPath: {{path: {shared}, type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sh", "-c", {script!r}]
    env: [{{name: NAME, value: {name}}}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
{lifecycle}{probes}"""


def apply(kube: Kube, text: str) -> None:
    kube("apply", "-f", kube.write(f"pod-{secrets.token_hex(3)}.yaml", text))


def pod_names(life: KubeletInstance) -> set[str]:
    return {p["metadata"]["name"] for p in life.pods.get("pods")}


def events(kube: Kube, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the events about pod `name`, as `kubectl get events` lists them."""
    out = kube("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json").stdout
    return [(e["reason"], e["message"]) for e in json.loads(out)["items"]]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def json_stream(text: str) -> list[dict[str, Any]]:
    """The objects `kubectl get -w -o json` printed one after another."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return objects
        try:
            obj, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return objects  # a last object still being printed
        objects.append(obj)


def last_exit_code(watched: list[dict[str, Any]], name: str) -> int | None:
    """The exit code of the last terminated state pod `name`'s container showed in a watch."""
    code = None
    for obj in watched:
        if obj["metadata"]["name"] != name:
            continue
        for cs in obj.get("status", {}).get("containerStatuses") or []:
            terminated = cs.get("state", {}).get("terminated")
            if terminated is not None:
                code = terminated["exitCode"]
    return code


# --- preStop and the grace period -------------------------------------------------------------------------


def test_pre_stop_runs_before_sigterm_and_a_container_ignoring_it_dies_at_the_grace_period(
    kube: Kube, life: KubeletInstance
) -> None:
    shared = shared_dir(life)
    pre_stop = '    lifecycle:\n      preStop:\n        exec: {command: ["sh", "-c", "echo preStop >> /shared/$NAME"]}\n'
    apply(kube, pod_yaml("polite", POLITE, shared, grace=10, lifecycle=pre_stop))
    apply(kube, pod_yaml("stubborn", STUBBORN, shared, grace=4, lifecycle=pre_stop))
    for name in ("polite", "stubborn"):
        wait_for(f"{name} Ready", lambda n=name: is_ready(life.pod(n)), timeout=60)  # type: ignore[misc]
        wait_for(f"{name} started", lambda n=name: lines(shared / n) == ["started"])  # type: ignore[misc]
    watch = life.kubectl_watch("get", "pods", "-w", "-o", "json")
    try:
        wait_for("the watch's first list", lambda: len(json_stream(watch.text)) >= 2, timeout=30)
        deleted = time.monotonic()
        kube("delete", "pod", "polite", "stubborn", "--wait=false")
        wait_for("polite gone", lambda: "polite" not in pod_names(life), timeout=30)
        polite_gone = time.monotonic() - deleted
        assert "stubborn" in pod_names(life), "the container that ignores SIGTERM outlived the polite one"
        stubborn = life.pod("stubborn")
        assert stubborn["metadata"]["deletionGracePeriodSeconds"] == 4
        assert kube("get", "pod", "stubborn", "--no-headers").stdout.split()[2] == "Terminating"
        wait_for("stubborn gone", lambda: "stubborn" not in pod_names(life), timeout=60)
        stubborn_gone = time.monotonic() - deleted
    finally:
        watched = json_stream(watch.stop())
    # the preStop hook ran before the stop signal; the trap saw SIGTERM after it
    assert lines(shared / "polite") == ["started", "preStop", "TERM"]
    assert lines(shared / "stubborn") == ["started", "preStop"]
    # the stubborn one was killed when its grace period ran out, not before; the polite one left by itself
    assert stubborn_gone >= 4 and stubborn_gone > polite_gone, (polite_gone, stubborn_gone)
    assert last_exit_code(watched, "stubborn") == 137, watched[-3:]
    assert last_exit_code(watched, "polite") == 0, watched[-3:]
    assert ("Killing", "Stopping container main (the pod is being deleted)") in events(kube, "stubborn")


def test_kubectl_delete_grace_period_overrides_the_pods(kube: Kube, life: KubeletInstance) -> None:
    """`kubectl delete --grace-period=3` (DeleteOptions.gracePeriodSeconds) replaces the pod's 60 s: the
    container that ignores SIGTERM is killed after 3 s, not 60."""
    shared = shared_dir(life)
    apply(kube, pod_yaml("patient", STUBBORN, shared, grace=60))
    wait_for("patient Ready", lambda: is_ready(life.pod("patient")), timeout=60)
    deleted = time.monotonic()
    kube("delete", "pod", "patient", "--grace-period=3", "--wait=false")
    pod = life.pod("patient")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 3
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    wait_for("patient gone", lambda: "patient" not in pod_names(life), timeout=45)
    assert time.monotonic() - deleted >= 3
    assert lines(shared / "patient") == ["started"]


def test_a_sleep_pre_stop_holds_sigterm_and_http_hooks_reach_their_host(
    kube: Kube, life: KubeletInstance
) -> None:
    seen: list[tuple[str, str]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            seen.append((self.path, self.headers.get("User-Agent", "")))
            self.send_response(500)  # any response will do for a hook (a probe would fail on this)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    shared = shared_dir(life)
    try:
        http_hooks = (
            "    lifecycle:\n"
            f"      postStart: {{httpGet: {{host: 127.0.0.1, port: {port}, path: /post-start}}}}\n"
            f"      preStop: {{httpGet: {{host: 127.0.0.1, port: {port}, path: /pre-stop}}}}\n"
        )
        apply(kube, pod_yaml("http-hooks", POLITE, shared, lifecycle=http_hooks))
        pod = wait_for("http-hooks Ready", lambda: is_ready(p := life.pod("http-hooks")) and p, timeout=60)
        assert container(pod, "main")["restartCount"] == 0
        assert seen == [("/post-start", "kube-lifecycle/1.36")]
        assert not [e for e in events(kube, "http-hooks") if e[0] == "FailedPostStartHook"]
        kube("delete", "pod", "http-hooks")
        assert seen[-1] == ("/pre-stop", "kube-lifecycle/1.36")
        assert lines(shared / "http-hooks") == ["started", "TERM"]

        sleepy = "    lifecycle:\n      preStop: {sleep: {seconds: 3}}\n"
        apply(kube, pod_yaml("sleepy", POLITE, shared, grace=20, lifecycle=sleepy))
        wait_for("sleepy Ready", lambda: is_ready(life.pod("sleepy")), timeout=60)
        wait_for("sleepy started", lambda: lines(shared / "sleepy") == ["started"])
        deleted = time.monotonic()
        kube("delete", "pod", "sleepy")  # waits until the pod is gone
        assert time.monotonic() - deleted >= 3  # SIGTERM came after the sleep (the trap leaves at once)
        assert lines(shared / "sleepy") == ["started", "TERM"]
    finally:
        server.shutdown()
        server.server_close()


# --- postStart ---------------------------------------------------------------------------------------------


def test_post_start_runs_before_the_container_counts_as_running_and_its_failure_restarts_it(
    kube: Kube, life: KubeletInstance
) -> None:
    shared = shared_dir(life)
    hook = (
        "    lifecycle:\n      postStart:\n"
        '        exec: {command: ["sh", "-c", "sleep 2; echo postStart-$NAME >> /shared/hook"]}\n'
    )
    apply(kube, pod_yaml("hooked", POLITE, shared, grace=2, lifecycle=hook))
    during, early = list[dict[str, Any]](), list[dict[str, Any]]()

    def ready() -> bool:
        # First the status, then the file: the hook writes it before it returns, so a status that says
        # running (published after the hook returned) must find the file there.
        statuses = life.pod("hooked")["status"].get("containerStatuses") or []
        if not (shared / "hook").exists():
            during.append(statuses[0] if statuses else {})
            if statuses and "running" in statuses[0]["state"]:
                early.append(statuses[0])
        return bool(statuses and statuses[0]["ready"])

    wait_for("hooked Ready", ready, timeout=60)
    assert during, "the pod was never seen while its postStart hook ran"
    assert not early, f"running before postStart returned: {early}"
    assert lines(shared / "hook") == ["postStart-hooked"]
    # the hook ran in the container: its environment, its view of the volume
    assert kube("exec", "hooked", "--", "cat", "/shared/hook").stdout.split() == ["postStart-hooked"]
    assert container(life.pod("hooked"), "main")["restartCount"] == 0

    failing = (
        "    lifecycle:\n      postStart:\n"
        '        exec: {command: ["sh", "-c", "echo attempt >> /shared/bad; exit 3"]}\n'
    )
    apply(kube, pod_yaml("bad-hook", STUBBORN, shared, grace=2, lifecycle=failing))
    pod = wait_for(
        "a restart after the failed hook",
        lambda: "terminated" in container(p := life.pod("bad-hook"), "main")["lastState"] and p,
        timeout=60,
    )
    assert container(pod, "main")["lastState"]["terminated"]["exitCode"] == 137  # killed (ignores TERM)
    wait_for("the hook ran again", lambda: lines(shared / "bad").count("attempt") >= 2, timeout=30)
    told = events(kube, "bad-hook")
    assert ("FailedPostStartHook", "PostStartHook failed") in told, told  # no hook output in events
    assert ("Killing", "FailedPostStartHook") in told, told
    assert not is_ready(life.pod("bad-hook"))


# --- startup probes ---------------------------------------------------------------------------------------


def test_a_startup_probe_holds_liveness_and_its_failure_kills_with_the_probe_s_grace(
    kube: Kube, life: KubeletInstance
) -> None:
    shared = shared_dir(life)
    slow = "sleep 3; touch /tmp/started; " + POLITE
    probes = (
        "    startupProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 30}\n"
        "    livenessProbe: {exec: {command: [test, -f, /tmp/started]}, periodSeconds: 1, failureThreshold: 1}\n"
    )
    apply(kube, pod_yaml("slow-start", slow, shared, grace=2, probes=probes))
    seen_started = []

    def ready() -> bool:
        cs = container(life.pod("slow-start"), "main")
        seen_started.append(cs["started"])
        return bool(cs["ready"])

    wait_for("slow-start Ready", ready, timeout=60)
    pod = life.pod("slow-start")
    # a liveness probe run before the start would have failed (failureThreshold 1) and restarted it
    assert container(pod, "main")["restartCount"] == 0 and container(pod, "main")["started"] is True
    assert False in seen_started
    assert not [m for r, m in events(kube, "slow-start") if "Liveness" in m], events(kube, "slow-start")

    never = (
        "    startupProbe: {exec: {command: ['false']}, periodSeconds: 1, failureThreshold: 2,"
        " terminationGracePeriodSeconds: 2}\n"
    )
    # SIGTERM is ignored, and the pod's grace is 60 s: the restart comes at the probe's 2 s
    apply(kube, pod_yaml("never-starts", STUBBORN, shared, grace=60, probes=never))
    pod = wait_for(
        "a restart after the startup probe gave up",
        lambda: "terminated" in container(p := life.pod("never-starts"), "main")["lastState"] and p,
        timeout=45,
    )
    cs = container(pod, "main")
    assert cs["lastState"]["terminated"]["exitCode"] == 137 and cs["started"] is False
    told = events(kube, "never-starts")
    assert ("Killing", "Container main failed startup probe, will be restarted") in told, told
    assert any(r == "Unhealthy" and m.startswith("Startup probe failed:") for r, m in told), told


# --- grpc probes -------------------------------------------------------------------------------------------

#: grpc.health.v1 on a port given as argv[1]: SERVING for "", NOT_SERVING for "down", NOT_FOUND otherwise.
HEALTH_SERVER = """
import sys
from concurrent import futures
import grpc
from podhost.kubelet import health_pb2
Response = health_pb2.HealthCheckResponse
statuses = {"": Response.SERVING, "down": Response.NOT_SERVING}
def check(request, context):
    if request.service not in statuses:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return Response(status=statuses[request.service])
handler = grpc.unary_unary_rpc_method_handler(
    check,
    request_deserializer=health_pb2.HealthCheckRequest.FromString,
    response_serializer=Response.SerializeToString,
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),))
server.add_insecure_port("0.0.0.0:" + sys.argv[1])
server.start()
print("serving", flush=True)
server.wait_for_termination()
"""


def test_grpc_probes_against_a_health_server_in_the_pods_network_namespace(
    kube: Kube, life: KubeletInstance
) -> None:
    shared = shared_dir(life)
    probes = "    readinessProbe: {grpc: {port: 50051}, periodSeconds: 1}\n"
    apply(kube, pod_yaml("grpc-ready", POLITE, shared, grace=2, probes=probes))
    sick = "    livenessProbe: {grpc: {port: 50051, service: down}, periodSeconds: 1, failureThreshold: 1}\n"
    apply(kube, pod_yaml("grpc-sick", POLITE, shared, grace=2, probes=sick))
    pod = wait_for(
        "grpc-ready running, not ready",
        lambda: "running" in container(p := life.pod("grpc-ready"), "main")["state"] and p,
        timeout=60,
    )
    wait_for(
        "a readiness failure while nothing listens",
        lambda: any(
            m.startswith("Readiness probe failed: timeout: failed to connect service")
            for _, m in events(kube, "grpc-ready")
        ),
        timeout=30,
    )
    assert not is_ready(life.pod("grpc-ready"))
    env = {**os.environ, "PYTHONPATH": _REPO}
    servers = []
    try:
        for name in ("grpc-ready", "grpc-sick"):
            netns = f"/proc/{life.pause_pid(life.pod(name))}/ns/net"
            argv = ["nsenter", f"--net={netns}", "--", sys.executable, "-c", HEALTH_SERVER, "50051"]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=_REPO
            )
            servers.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        pod = wait_for("grpc-ready Ready", lambda: is_ready(p := life.pod("grpc-ready")) and p, timeout=30)
        assert container(pod, "main")["restartCount"] == 0
        wait_for(
            "the NOT_SERVING answer in an event",
            lambda: (
                ("Unhealthy", 'Liveness probe failed: service unhealthy (responded with "NOT_SERVING")')
                in events(kube, "grpc-sick")
            ),
            timeout=30,
        )
        wait_for(
            "grpc-sick restarted",
            lambda: container(life.pod("grpc-sick"), "main")["restartCount"] >= 1,
            timeout=30,
        )
        told = events(kube, "grpc-sick")
        assert ("Killing", "Container main failed liveness probe, will be restarted") in told, told
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
