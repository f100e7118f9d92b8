"""Lifecycle hooks, grace periods and grpc probes without root: the manifest's view of them, the
kubelet's arithmetic (lifecycle.py), the hook runner and the grpc health check against servers on
loopback, and PodRuntime's kill and start with a recording CRI client."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import NotFound
from podhost.kubelet import health_pb2, lifecycle
from podhost.kubelet.kuberuntime import POST_START_HOOK_ERROR, PodRuntime
from podhost.kubelet.manifest import ContainerSpec, LifecycleHandler, ManifestError, Pod, Probe, parse_pod
from podhost.kubelet.pod_actions import compute_pod_actions
from podhost.kubelet.probes import LIVENESS, READINESS, STARTUP, grpc_check, run_probe

# --- the manifest ----------------------------------------------------------------------------------------


def pod_doc(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    c = {"name": "main", "image": "busybox", **container}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [c], **spec}}


def test_hooks_and_grpc_probes_are_parsed() -> None:
    pod = parse_pod(
        pod_doc(
            {
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
                    "preStop": {"httpGet": {"path": "/bye", "port": "web", "host": "127.0.0.1"}},
                },
                "ports": [{"name": "web", "containerPort": 8080}],
                "livenessProbe": {
                    "grpc": {"port": 9000, "service": "db"},
                    "terminationGracePeriodSeconds": 4,
                },
                "startupProbe": {"grpc": {"port": 9000}, "failureThreshold": 30},
            },
            terminationGracePeriodSeconds=12,
        )
    )
    (c,) = pod.containers
    assert c.post_start == LifecycleHandler(handler="exec", command=["sh", "-c", "echo hi"])
    assert c.pre_stop is not None
    assert (c.pre_stop.handler, c.pre_stop.path, c.pre_stop.port, c.pre_stop.host) == (
        "httpGet",
        "/bye",
        "web",
        "127.0.0.1",
    )
    assert c.liveness_probe is not None and c.startup_probe is not None
    assert (c.liveness_probe.handler, c.liveness_probe.port, c.liveness_probe.service) == ("grpc", 9000, "db")
    assert c.liveness_probe.termination_grace_period_seconds == 4
    assert c.startup_probe.termination_grace_period_seconds is None and c.startup_probe.service == ""
    sleepy = parse_pod(pod_doc({"lifecycle": {"preStop": {"sleep": {"seconds": 0}}}}))
    assert sleepy.containers[0].pre_stop == LifecycleHandler(handler="sleep", seconds=0)


@pytest.mark.parametrize(
    ("container", "spec", "message"),
    [
        (
            {"lifecycle": {"preStop": {"tcpSocket": {"port": 80}}}},
            {},
            r"^spec.containers\[0\].lifecycle.preStop.tcpSocket: not supported on this node$",
        ),
        (
            {"lifecycle": {"stopSignal": "SIGUSR1"}},
            {},
            r"^spec.containers\[0\].lifecycle.stopSignal: not supported on this node$",
        ),
        (
            {"lifecycle": {"postStart": {}}},
            {},
            r"^spec.containers\[0\].lifecycle.postStart: Required value: must specify a handler type$",
        ),
        (
            {"lifecycle": {"postStart": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}}},
            {},
            r"lifecycle.postStart.sleep: Forbidden: may not specify more than 1 handler type$",
        ),
        (
            {"lifecycle": {"preStop": {"sleep": {"seconds": 31}}}},
            {},
            r"^spec.containers\[0\].lifecycle.preStop.sleep: Invalid value: 31: must be non-negative and "
            r"less than terminationGracePeriodSeconds \(30\)$",
        ),
        (
            {"lifecycle": {"preStop": {"sleep": {"seconds": 5}}}},
            {"terminationGracePeriodSeconds": 3},
            r"preStop.sleep: Invalid value: 5: .*\(3\)$",
        ),
        (
            {"readinessProbe": {"grpc": {"port": 9000}, "terminationGracePeriodSeconds": 3}},
            {},
            r"^spec.containers\[0\].readinessProbe.terminationGracePeriodSeconds: Invalid value: 3: must not "
            r"be set for readinessProbes$",
        ),
        (
            {"livenessProbe": {"exec": {"command": ["x"]}, "terminationGracePeriodSeconds": 0}},
            {},
            r"livenessProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0$",
        ),
        (
            {"livenessProbe": {"grpc": {"port": 0}}},
            {},
            r"livenessProbe.grpc.port: must be between 1 and 65535",
        ),
        (
            {"livenessProbe": {"grpc": {"port": 1}, "exec": {"command": ["x"]}}},
            {},
            r"livenessProbe: exactly one of exec, httpGet, tcpSocket, grpc is required",
        ),
        (
            {"lifecycle": {"postStart": {"httpGet": {"port": 80, "scheme": "FTP"}}}},
            {},
            r'postStart.httpGet.scheme: Unsupported value: "FTP": supported values: "HTTP", "HTTPS"',
        ),
    ],
)
def test_refusals_name_the_field(container: dict[str, Any], spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_pod(pod_doc(container, **spec))


def test_a_grpc_port_is_a_number_by_the_schema() -> None:
    with pytest.raises(ManifestError, match=r"livenessProbe.grpc.port"):
        parse_pod(pod_doc({"livenessProbe": {"grpc": {"port": "web"}}}))


# --- the grace period of a kill ----------------------------------------------------------------------------


def spec_with(liveness_grace: int | None = None, startup_grace: int | None = None) -> ContainerSpec:
    return ContainerSpec(
        name="main",
        image="i",
        liveness_probe=Probe(handler="exec", command=["x"], termination_grace_period_seconds=liveness_grace),
        startup_probe=Probe(handler="exec", command=["x"], termination_grace_period_seconds=startup_grace),
        readiness_probe=Probe(handler="exec", command=["x"]),
    )


@pytest.mark.parametrize(
    ("liveness", "startup", "probe", "expected"),
    [
        (None, None, "", 30),  # the pod's
        (5, 7, "", 30),  # a kill no probe asked for: the pod's
        (5, 7, LIVENESS, 5),
        (5, 7, STARTUP, 7),
        (None, 7, LIVENESS, 30),  # the liveness probe has none of its own
        (5, 7, READINESS, 30),  # readiness never kills
    ],
)
def test_kill_grace_follows_set_termination_grace_period(
    liveness: int | None, startup: int | None, probe: str, expected: int
) -> None:
    pod = Pod(name="p", termination_grace_period_seconds=30)
    assert lifecycle.kill_grace(pod, spec_with(liveness, startup), probe) == expected
    assert lifecycle.kill_grace(pod, None, probe) == 30  # a container the spec no longer has


@pytest.mark.parametrize(
    ("grace", "hook_seconds", "timeout"),
    [
        (30, 0.0, 30),
        (30, 5.9, 25),  # the hook's time in whole seconds, as the kubelet truncates it
        (10, 9.5, 2),  # what is left is under the minimum: 2
        (3, 3.0, 2),
        (1, 0.0, 2),  # every graceful stop gets at least 2 s (minimumGracePeriodInSeconds)
        (5, 12.0, 2),
        (0, 0.0, 0),  # an immediate kill (a dead sandbox, a forced deletion) stays immediate
    ],
)
def test_stop_timeout(grace: int, hook_seconds: float, timeout: int) -> None:
    assert lifecycle.stop_timeout(grace, hook_seconds) == timeout


def test_pre_stop_runs_only_with_a_hook_and_time_for_it() -> None:
    spec = ContainerSpec(name="a", image="i", pre_stop=LifecycleHandler(handler="sleep", seconds=1))
    assert lifecycle.runs_pre_stop(spec, 1)
    assert not lifecycle.runs_pre_stop(spec, 0)
    assert not lifecycle.runs_pre_stop(ContainerSpec(name="a", image="i"), 30)
    assert not lifecycle.runs_pre_stop(None, 30)


def test_failure_messages_are_the_kubelets() -> None:
    pod = Pod(name="web", namespace="prod", uid="u-1")
    exec_hook = LifecycleHandler(handler="exec", command=["sh", "-c", "exit 3"])
    assert lifecycle.failure_message(exec_hook, "main", pod, "boom") == (
        'Exec lifecycle hook ([sh -c exit 3]) for Container "main" in Pod "web_prod(u-1)" failed - error: boom'
    )
    http_hook = LifecycleHandler(handler="httpGet", path="/stop", port=80)
    assert lifecycle.failure_message(http_hook, "main", pod, "refused").startswith(
        'HTTP lifecycle hook (/stop) for Container "main" in Pod "web_prod(u-1)" failed'
    )
    sleep_hook = LifecycleHandler(handler="sleep", seconds=4)
    assert lifecycle.failure_message(sleep_hook, "c", pod, "x").startswith("Sleep lifecycle hook (4) for")


# --- running hooks --------------------------------------------------------------------------------------


class RecordingCRI:
    """A CRI client that records calls: exec_sync answers from `exec_results` (or sleeps), stop and the
    rest are noted in `calls`."""

    def __init__(self, exec_exit: int = 0, exec_output: bytes = b"", exec_delay: float = 0.0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.exec_exit, self.exec_output, self.exec_delay = exec_exit, exec_output, exec_delay
        self.lock = threading.Lock()

    def note(self, *call: Any) -> None:
        with self.lock:
            self.calls.append((time.monotonic(), *call))

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> pb.ExecSyncResponse:
        self.note("exec_sync", container_id, cmd, timeout)
        time.sleep(self.exec_delay)
        return pb.ExecSyncResponse(exit_code=self.exec_exit, stdout=self.exec_output)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        self.note("stop_container", container_id, timeout)

    def start_container(self, container_id: str) -> None:
        self.note("start_container", container_id)

    def remove_container(self, container_id: str) -> None:
        self.note("remove_container", container_id)

    def list_containers(self, flt: pb.ContainerFilter) -> list[pb.Container]:
        raise NotFound("no such container")

    def names(self) -> list[str]:
        return [c[1] for c in self.calls]


def runtime_for(pod: Pod, cri: RecordingCRI, tmp: Any) -> tuple[PodRuntime, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    rt = PodRuntime(cri, pod, lambda t, r, m, c="": events.append((r, m, c)), str(tmp), tmp)  # type: ignore[arg-type]
    return rt, events


def test_pre_stop_runs_before_the_stop_and_its_time_comes_off_the_grace(tmp_path: Any) -> None:
    hook = LifecycleHandler(handler="exec", command=["/bin/drain"])
    pod = Pod(
        name="p",
        uid="u",
        termination_grace_period_seconds=5,
        containers=[ContainerSpec("main", "i", pre_stop=hook)],
    )
    cri = RecordingCRI(exec_delay=1.2)
    rt, events = runtime_for(pod, cri, tmp_path)
    rt.kill_containers(
        [pb.Container(id="c1", metadata=pb.ContainerMetadata(name="main"))], "the pod is being deleted"
    )
    assert cri.names() == ["exec_sync", "stop_container"]
    (_, _, cid, cmd, exec_timeout), (_, _, stopped, timeout) = cri.calls
    assert (cid, cmd, exec_timeout) == ("c1", ["/bin/drain"], 5)  # the hook may use the whole grace
    assert (stopped, timeout) == ("c1", 4)  # 5 s less the 1 (whole) second the hook took
    assert events == [("Killing", "Stopping container main (the pod is being deleted)", "main")]


def test_a_failed_pre_stop_is_an_event_and_the_stop_goes_on(tmp_path: Any) -> None:
    hook = LifecycleHandler(handler="exec", command=["false"])
    pod = Pod(
        name="p", termination_grace_period_seconds=30, containers=[ContainerSpec("main", "i", pre_stop=hook)]
    )
    cri = RecordingCRI(exec_exit=1)
    rt, events = runtime_for(pod, cri, tmp_path)
    rt.kill_container("c1", "main", "Container main failed liveness probe, will be restarted", LIVENESS)
    assert cri.names() == ["exec_sync", "stop_container"]
    assert cri.calls[-1][-1] == 30
    assert [e[0] for e in events] == ["Killing", lifecycle.FAILED_PRE_STOP_HOOK]
    assert events[1][1] == "PreStopHook failed"  # no hook output in events: it may hold secrets


def test_no_pre_stop_at_grace_zero_and_a_probe_s_own_grace(tmp_path: Any) -> None:
    hook = LifecycleHandler(handler="exec", command=["/bin/drain"])
    spec = ContainerSpec(
        "main",
        "i",
        pre_stop=hook,
        liveness_probe=Probe(handler="exec", command=["x"], termination_grace_period_seconds=3),
    )
    pod = Pod(name="p", termination_grace_period_seconds=60, containers=[spec])
    cri = RecordingCRI()
    rt, _ = runtime_for(pod, cri, tmp_path)
    rt.kill_containers(
        [pb.Container(id="c1", metadata=pb.ContainerMetadata(name="main"))], "sandbox died", grace=0
    )
    assert cri.names() == ["stop_container"] and cri.calls[0][-1] == 0
    cri.calls.clear()
    rt.kill_container("c1", "main", "liveness", LIVENESS)
    assert cri.names() == ["exec_sync", "stop_container"]
    assert cri.calls[0][-1] == 3 and cri.calls[1][-1] == 3  # the probe's grace, not the pod's 60


def test_post_start_failure_kills_the_container_and_says_post_start_hook_error(tmp_path: Any) -> None:
    hook = LifecycleHandler(handler="exec", command=["sh", "-c", "exit 7"])
    pod = Pod(name="p", uid="u", namespace="ns", termination_grace_period_seconds=9)
    pod.containers = [ContainerSpec("main", "i", post_start=hook)]
    cri = RecordingCRI(exec_exit=7, exec_output=b"no config")
    rt, events = runtime_for(pod, cri, tmp_path)
    reason, message = rt.start_container(pod.containers[0], "c1")
    assert reason == POST_START_HOOK_ERROR
    assert message.startswith(
        'Exec lifecycle hook ([sh -c exit 7]) for Container "main" in Pod "p_ns(u)" failed'
    )
    assert "no config" in message
    assert cri.names() == ["start_container", "exec_sync", "stop_container"]
    assert cri.calls[1][-1] == 0  # a postStart exec has no timeout of its own
    assert cri.calls[2][-1] == 9
    assert [(r, m) for r, m, _ in events] == [
        ("Started", "Started container main"),
        (lifecycle.FAILED_POST_START_HOOK, "PostStartHook failed"),
        ("Killing", "FailedPostStartHook"),
    ]


def test_post_start_success_and_a_deletion_that_stops_the_wait(tmp_path: Any) -> None:
    pod = Pod(
        name="p", containers=[ContainerSpec("main", "i", post_start=LifecycleHandler("sleep", seconds=30))]
    )
    cri = RecordingCRI()
    rt, _ = runtime_for(pod, cri, tmp_path)
    threading.Timer(0.3, rt.terminating.set).start()
    started = time.monotonic()
    assert rt.start_container(pod.containers[0], "c1") == ("", "")
    assert time.monotonic() - started < 10  # the 30 s hook was not waited for
    ok = Pod(
        name="p", containers=[ContainerSpec("main", "i", post_start=LifecycleHandler("sleep", seconds=0))]
    )
    rt, _ = runtime_for(ok, RecordingCRI(), tmp_path)
    assert rt.start_container(ok.containers[0], "c2") == ("", "")


def test_call_hook_stops_waiting_at_its_deadline() -> None:
    pod = Pod(name="p")
    spec = ContainerSpec("main", "i")
    never = threading.Event()
    result = lifecycle.call_hook(
        pod, LifecycleHandler("sleep", seconds=5), RecordingCRI(), "c", spec, 0.3, never
    )  # type: ignore[arg-type]
    assert not result.finished and 0.3 <= result.seconds < 5
    stop = threading.Event()
    stop.set()
    assert lifecycle.run_hook(LifecycleHandler("sleep", seconds=5), RecordingCRI(), "c", spec, 0, stop) == (  # type: ignore[arg-type]
        "container terminated before sleep hook finished"
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.seen.append((self.path, self.headers.get("User-Agent", "")))
        self.send_response(500 if self.path == "/broken" else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_http_hook_takes_any_response_unlike_a_probe(http_server: int) -> None:
    _Handler.seen.clear()
    spec = ContainerSpec("main", "i")
    hook = LifecycleHandler("httpGet", path="/broken", port=http_server, host="127.0.0.1")
    never = threading.Event()
    assert lifecycle.run_hook(hook, RecordingCRI(), "c", spec, 0, never) == ""  # type: ignore[arg-type]
    assert _Handler.seen == [("/broken", "kube-lifecycle/1.36")]
    probe = Probe("httpGet", path="/broken", port=http_server, host="127.0.0.1")
    ok, message = run_probe(probe, RecordingCRI(), "c", spec, "")  # type: ignore[arg-type]
    assert not ok and message.startswith("HTTP probe failed with statuscode: 500")
    assert _Handler.seen[-1] == ("/broken", "kube-probe/1.36")
    refused = LifecycleHandler("httpGet", path="/x", port=free_port(), host="127.0.0.1")
    assert "Connection refused" in lifecycle.run_hook(refused, RecordingCRI(), "c", spec, 0, never)  # type: ignore[arg-type]


def test_an_https_probe_does_not_verify_the_certificate(tmp_path: Path) -> None:
    """As the kubelet's prober: HTTPS with a certificate no one vouches for still answers the probe."""
    import ssl

    from podhost.apiserver.certs import ensure_credentials

    creds = ensure_credentials(tmp_path)  # a CA of its own: unknown to any client
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(creds.server_cert, creds.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port, spec = server.server_address[1], ContainerSpec("main", "i")
        probe = Probe("httpGet", path="/ok", port=port, host="127.0.0.1", scheme="HTTPS")
        assert run_probe(probe, RecordingCRI(), "c", spec, "") == (True, "")  # type: ignore[arg-type]
        plain = Probe("httpGet", path="/ok", port=port, host="127.0.0.1")
        ok, message = run_probe(plain, RecordingCRI(), "c", spec, "")  # type: ignore[arg-type]
        assert not ok, "HTTP against a TLS server gets no HTTP answer"
    finally:
        server.shutdown()
        server.server_close()


# --- grpc probes against a health server on loopback -------------------------------------------------------


def health_server(statuses: dict[str, int], with_health: bool = True) -> tuple[grpc.Server, int]:
    def check(request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Any:
        if request.service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=statuses[request.service])  # type: ignore[arg-type]

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    if with_health:
        handler = grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
        )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_grpc_check_success_and_each_failure_in_the_kubelets_words() -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    server, port = health_server({"": serving, "db": not_serving})
    try:
        assert grpc_check("127.0.0.1", port, "", 2) == (True, "")
        assert grpc_check("127.0.0.1", port, "db", 2) == (
            False,
            'service unhealthy (responded with "NOT_SERVING")',
        )
        ok, message = grpc_check("127.0.0.1", port, "cache", 2)
        assert not ok and message.startswith("error: health rpc probe failed: NOT_FOUND")
        probe = Probe("grpc", port=port, service="", timeout_seconds=2)
        assert run_probe(probe, RecordingCRI(), "c", ContainerSpec("m", "i"), "127.0.0.1") == (True, "")  # type: ignore[arg-type]
    finally:
        server.stop(None)
    bare, bare_port = health_server({}, with_health=False)
    try:
        ok, message = grpc_check("127.0.0.1", bare_port, "", 2)
        assert not ok and message.startswith("this server does not implement the grpc health protocol")
    finally:
        bare.stop(None)
    ok, message = grpc_check("127.0.0.1", free_port(), "", 0.5)
    assert not ok and message.startswith("timeout: failed to connect service '127.0.0.1:")


def test_probe_kills_name_their_probe() -> None:
    from podhost.kubelet.backoff import CrashLoopBackOff, retry_backoff
    from podhost.kubelet.observation import Observation

    pod = Pod(name="p", uid="u", containers=[ContainerSpec("main", "i")])
    sandbox = pb.PodSandbox(id="s", state=pb.SANDBOX_READY, metadata=pb.PodSandboxMetadata(attempt=0))
    c = pb.Container(id="c1", pod_sandbox_id="s", metadata=pb.ContainerMetadata(name="main"))
    status = pb.ContainerStatus(id="c1", state=pb.CONTAINER_RUNNING)
    obs = Observation([sandbox], [c], {"c1": status})
    actions = compute_pod_actions(pod, obs, 0.0, CrashLoopBackOff(), retry_backoff(), {"c1": STARTUP})
    (kill,) = actions.containers_to_kill
    assert (kill.container_id, kill.probe) == ("c1", STARTUP)
    assert kill.message == "Container main failed startup probe, will be restarted"
