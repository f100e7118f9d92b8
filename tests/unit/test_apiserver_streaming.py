"""pods/exec, attach, portforward of the Kubernetes API without root: options from the query, the pod
resolved to the CRI request the runtime gets, and the upgrade request replayed to the streaming URL."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, MultiDict

from podhost.apiserver import streaming
from podhost.apiserver.status import BadRequest
from podhost.cri import api_pb2 as pb


def pod(phase: str = "Running", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "default", "uid": "u-1", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "nginx"}, {"name": "shell"}]},
        "status": {"phase": phase},
    }


class FakeCRI:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def exec(self, request: pb.ExecRequest) -> str:
        self.calls.append(request)
        return "http://127.0.0.1:1/exec/tok"

    def attach(self, request: pb.AttachRequest) -> str:
        self.calls.append(request)
        return "http://127.0.0.1:1/attach/tok"

    def list_pod_sandbox(self, filter: pb.PodSandboxFilter) -> list[pb.PodSandbox]:
        self.calls.append(filter)
        return [pb.PodSandbox(id="old", created_at=1), pb.PodSandbox(id="new", created_at=2)]

    def port_forward(self, pod_sandbox_id: str, ports: list[int]) -> str:
        self.calls.append((pod_sandbox_id, ports))
        return "http://127.0.0.1:1/portforward/tok"


class FakeManager:
    def __init__(self, running: bool = True) -> None:
        self.cri = FakeCRI()
        self.running = running

    def locate(self, namespace: str, name: str, container: str) -> dict[str, Any]:
        return {"container_id": f"cid-{container}", "running": self.running, "container": container}


def test_exec_resolves_the_container_and_asks_cri_for_the_streams_kubectl_wants() -> None:
    manager = FakeManager()
    q = MultiDict(
        [("command", "sh"), ("command", "-c"), ("command", "exit 3"), ("container", "shell")]
        + [("stdin", "true"), ("stdout", "true"), ("tty", "true")]
    )
    assert streaming.stream_url(manager, pod(), "exec", q) == "http://127.0.0.1:1/exec/tok"  # type: ignore[arg-type]
    (request,) = manager.cri.calls
    assert request == pb.ExecRequest(
        container_id="cid-shell", cmd=["sh", "-c", "exit 3"], tty=True, stdin=True, stdout=True, stderr=False
    )


def test_attach_takes_the_annotated_default_container() -> None:
    manager = FakeManager()
    annotated = pod(annotations={"kubectl.kubernetes.io/default-container": "shell"})
    streaming.stream_url(manager, annotated, "attach", MultiDict(stdout="true"))  # type: ignore[arg-type]
    assert manager.cri.calls == [pb.AttachRequest(container_id="cid-shell", stdout=True)]
    with pytest.raises(BadRequest, match="a container name must be specified"):
        streaming.stream_url(manager, pod(), "attach", MultiDict(stdout="true"))  # type: ignore[arg-type]


def test_port_forward_uses_the_newest_ready_sandbox_and_the_ports_asked() -> None:
    manager = FakeManager()
    streaming.stream_url(manager, pod(), "portforward", MultiDict(ports="80,8080"))  # type: ignore[arg-type]
    selector, forward = manager.cri.calls
    assert selector.label_selector["io.kubernetes.pod.uid"] == "u-1"
    assert selector.state.state == pb.SANDBOX_READY
    assert forward == ("new", [80, 8080])
    with pytest.raises(BadRequest, match="invalid port"):
        streaming.ports_from_query(MultiDict(ports="http"))
    with pytest.raises(BadRequest, match="range"):
        streaming.ports_from_query(MultiDict(ports="70000"))


@pytest.mark.parametrize(
    ("verb", "q", "phase", "running", "message"),
    [
        ("exec", MultiDict(container="shell", stdout="true"), "Running", True, "at least 1 command"),
        ("exec", MultiDict(command="ls", container="shell"), "Running", True, "at least one of stdin"),
        (
            "exec",
            MultiDict(command="ls", container="shell", stdout="true"),
            "Succeeded",
            True,
            "completed pod",
        ),
        ("attach", MultiDict(container="shell", stdout="true"), "Failed", True, "attach to a container"),
        ("exec", MultiDict(command="ls", container="shell", stdout="true"), "Running", False, "not running"),
        ("exec", MultiDict(command="ls", container="nope", stdout="true"), "Running", True, "not valid"),
    ],
)
def test_refusals_before_any_stream(verb: str, q: Any, phase: str, running: bool, message: str) -> None:
    manager = FakeManager(running)
    with pytest.raises(BadRequest, match=message):
        streaming.stream_url(manager, pod(phase), verb, q)  # type: ignore[arg-type]
    assert [c for c in manager.cri.calls if not isinstance(c, pb.PodSandboxFilter)] == []


def test_the_upgrade_request_is_replayed_to_the_streaming_url() -> None:
    headers = CIMultiDict(
        [
            ("Host", "127.0.0.1:6443"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io"),
            ("Sec-WebSocket-Key", "abc=="),
            ("Authorization", "Bearer secret"),
            ("Content-Length", "0"),
        ]
    )
    request = make_mocked_request(
        "GET", "/api/v1/namespaces/default/pods/demo/exec?command=ls&stdout=true", headers=headers
    )
    head = streaming.replayed_head(request, "http://127.0.0.1:4242/exec/tok").decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /exec/tok HTTP/1.1"
    assert "Host: 127.0.0.1:4242" in lines
    assert "Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io" in lines
    assert "Upgrade: websocket" in lines and "Connection: Upgrade" in lines
    assert not any(line.startswith("Authorization") for line in lines)
    assert head.endswith("Content-Length: 0\r\n\r\n")
