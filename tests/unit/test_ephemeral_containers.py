"""Ephemeral containers without a node: the manifest's rules, the subresource's update rule, which ones the
worker starts (once, never again), their CRI config (pid TARGET) and their status."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podhost.apiserver.patch import ephemeral_containers_update, strategic_merge
from podhost.cri import api_pb2 as pb
from podhost.errors import InvalidArgument
from podhost.kubeapi import schema as sch
from podhost.kubelet import status as st
from podhost.kubelet.backoff import retry_backoff
from podhost.kubelet.ephemeral import ephemeral_containers_to_start
from podhost.kubelet.manifest import ManifestError, parse_pod
from podhost.kubelet.observation import Observation
from podhost.kubelet.podspec import container_config
from podhost.runtime.container.spec import namespaces
from podhost.runtime.model import (
    ContainerConfig,
    ContainerMetadata,
    ContainerSecurityContext,
    NamespaceMode,
    NamespaceOption,
    PodSandbox,
    PodSandboxConfig,
)
from podhost.runtime.validation import validate_container_config

NOW = 1000.0
#: What kubectl 1.32's `debug -i POD --image=busybox:1.28 --target=nginx -- ps ax` sends (the integration
#: test reads it from kubectl's own request log).
SENT = {
    "command": ["ps", "ax"],
    "image": "busybox:1.28",
    "name": "debugger-kxpf9",
    "resources": {},
    "stdin": True,
    "targetContainerName": "nginx",
    "terminationMessagePolicy": "File",
}


def demo(*ephemeral: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "shareProcessNamespace": True,
        "containers": [{"name": "nginx", "image": "nginx"}, {"name": "shell", "image": "busybox:1.28"}],
    }
    if ephemeral:
        spec["ephemeralContainers"] = list(ephemeral)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo", "uid": "u1"}, "spec": spec}


def test_kubectls_debug_container_is_accepted_with_its_target() -> None:
    pod = parse_pod(demo(SENT))
    (ec,) = pod.ephemeral_containers
    assert (ec.name, ec.image, ec.command, ec.stdin, ec.target_container_name) == (
        "debugger-kxpf9",
        "busybox:1.28",
        ["ps", "ax"],
        True,
        "nginx",
    )
    assert [c.name for c in pod.containers] == ["nginx", "shell"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ports", [{"containerPort": 80}]),
        ("resources", {"limits": {"cpu": "1"}}),
        ("readinessProbe", {"exec": {"command": ["true"]}}),
        ("lifecycle", {"preStop": {"exec": {"command": ["true"]}}}),
        ("resizePolicy", [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]),
    ],
)
def test_fields_the_api_forbids_are_refused_in_its_words(field: str, value: Any) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_pod(demo({**SENT, field: value}))
    assert str(refused.value) == (
        f"spec.ephemeralContainers[0].{field}: Forbidden: cannot be set for an Ephemeral Container"
    )


def test_target_and_name_are_checked() -> None:
    with pytest.raises(ManifestError, match=r'targetContainerName: Not found: "web"'):
        parse_pod(demo({**SENT, "targetContainerName": "web"}))
    with pytest.raises(
        ManifestError, match=r"ephemeralContainers\[0\]\.name: duplicate container name 'shell'"
    ):
        parse_pod(demo({**SENT, "name": "shell"}))
    with pytest.raises(ManifestError, match="subPath: Forbidden: cannot be set for an Ephemeral Container"):
        mount = {"name": "v", "mountPath": "/v", "subPath": "x"}
        parse_pod(demo({**SENT, "volumeMounts": [mount]}))


def test_the_subresource_takes_only_ephemeral_containers_and_never_removes_or_changes_one() -> None:
    stored = demo()["spec"]
    patched = strategic_merge(
        demo(), {"spec": {"ephemeralContainers": [SENT]}}, sch.definition(sch.CORE + "Pod")
    )
    patched["spec"]["containers"][0]["image"] = "evil"  # ignored, as by dropNonEphemeralContainerUpdates
    spec, refusal = ephemeral_containers_update(stored, patched["spec"])
    assert (
        refusal == "" and spec["ephemeralContainers"] == [SENT] and spec["containers"] == stored["containers"]
    )
    second = {**SENT, "name": "debugger-2"}
    grown = strategic_merge(
        {"spec": spec},
        {"spec": {"$setElementOrder/ephemeralContainers": [{"name": SENT["name"]}, {"name": "debugger-2"}],
                  "ephemeralContainers": [second]}},
        sch.definition(sch.CORE + "Pod"),
    )  # fmt: skip
    spec2, refusal = ephemeral_containers_update(spec, grown["spec"])
    assert refusal == "" and [c["name"] for c in spec2["ephemeralContainers"]] == [SENT["name"], "debugger-2"]
    _, removed = ephemeral_containers_update(spec2, {"ephemeralContainers": [second]})
    assert removed == (
        f'spec.ephemeralContainers: Forbidden: existing ephemeral containers "{SENT["name"]}" may not be removed'
    )
    changed = copy.deepcopy(spec2["ephemeralContainers"])
    changed[1]["image"] = "other"
    _, refusal = ephemeral_containers_update(spec2, {"ephemeralContainers": changed})
    assert refusal.startswith(
        'spec.ephemeralContainers: Forbidden: existing ephemeral containers "debugger-2" may not be changed'
    )


def container(
    name: str, cid: str, state: int, sandbox: str = "sb", attempt: int = 0
) -> tuple[pb.Container, pb.ContainerStatus]:
    meta = pb.ContainerMetadata(name=name, attempt=attempt)
    return (
        pb.Container(id=cid, pod_sandbox_id=sandbox, metadata=meta, state=state),
        pb.ContainerStatus(id=cid, metadata=meta, state=state, exit_code=0),
    )


def observe(*containers: tuple[pb.Container, pb.ContainerStatus], ready: bool = True) -> Observation:
    sandbox = pb.PodSandbox(id="sb", state=pb.SANDBOX_READY if ready else pb.SANDBOX_NOTREADY)
    return Observation([sandbox], [c for c, _ in containers], {c.id: s for c, s in containers})


def test_started_once_with_the_targets_id_and_never_again() -> None:
    pod = parse_pod(demo(SENT))
    nginx = container("nginx", "c-nginx", pb.CONTAINER_RUNNING)
    history: dict[str, st.ContainerHistory] = {}
    (start,) = ephemeral_containers_to_start(pod, observe(nginx), history, retry_backoff(), NOW).starts
    assert (start.spec.name, start.target_id, start.container_id) == (SENT["name"], "c-nginx", "")
    # made but not started (a daemon restart between): that one is started
    made = container(SENT["name"], "c-dbg", pb.CONTAINER_CREATED)
    history[SENT["name"]] = st.ContainerHistory(attempt=0)
    (again,) = ephemeral_containers_to_start(pod, observe(nginx, made), history, retry_backoff(), NOW).starts
    assert again.container_id == "c-dbg"
    # exited (whatever its code), or gone with an old sandbox: never made again
    exited = container(SENT["name"], "c-dbg", pb.CONTAINER_EXITED)
    assert (
        ephemeral_containers_to_start(pod, observe(nginx, exited), history, retry_backoff(), NOW).starts == []
    )
    assert ephemeral_containers_to_start(pod, observe(nginx), history, retry_backoff(), NOW).starts == []


def test_held_by_a_missing_target_a_retry_or_no_sandbox() -> None:
    pod = parse_pod(demo(SENT))
    assert ephemeral_containers_to_start(pod, observe(), {}, retry_backoff(), NOW).starts == []
    nginx = container("nginx", "c-nginx", pb.CONTAINER_RUNNING)
    assert (
        ephemeral_containers_to_start(pod, observe(nginx, ready=False), {}, retry_backoff(), NOW).starts == []
    )
    retry = retry_backoff()
    retry.step(SENT["name"], NOW)
    held = ephemeral_containers_to_start(pod, observe(nginx), {}, retry, NOW)
    assert held.starts == [] and held.wake_at == [retry.until(SENT["name"])]


def test_its_cri_config_joins_the_targets_pid_namespace() -> None:
    pod = parse_pod(demo(SENT))
    config = container_config(pod, pod.ephemeral_containers[0], 0, target_id="c-nginx")
    ns = config.linux.security_context.namespace_options
    assert (ns.pid, ns.target_id, ns.network, ns.ipc) == (pb.TARGET, "c-nginx", pb.POD, pb.POD)
    plain = container_config(pod, pod.containers[1], 0).linux.security_context.namespace_options
    assert (plain.pid, plain.target_id) == (pb.POD, "")  # shareProcessNamespace


def test_the_runtime_joins_the_target_by_its_pid_and_wants_a_target_id() -> None:
    options = NamespaceOption(pid=NamespaceMode.TARGET, target_id="c-nginx")
    config = ContainerConfig(security_context=ContainerSecurityContext(namespace_options=options))
    sandbox = PodSandbox(id="sb", config=PodSandboxConfig(), ns_paths={"net": "/run/n", "ipc": "/run/i"})
    found = namespaces(config, sandbox, "/proc/42/ns/pid")
    assert {"type": "pid", "path": "/proc/42/ns/pid"} in found
    assert {"type": "network", "path": "/run/n"} in found and {"type": "ipc", "path": "/run/i"} in found
    no_target = ContainerConfig(
        metadata=ContainerMetadata(name="dbg"),
        image="busybox",
        security_context=ContainerSecurityContext(
            namespace_options=NamespaceOption(pid=NamespaceMode.TARGET)
        ),
    )
    with pytest.raises(InvalidArgument, match="target_id: required when pid is TARGET"):
        validate_container_config(no_target, PodSandboxConfig())


def test_status_an_exited_debug_container_is_terminated_never_waiting_and_never_ready() -> None:
    pod = parse_pod(demo({**SENT, "command": ["sh", "-c", "exit 3"]}))
    nginx, shell = (container(n, f"c-{n}", pb.CONTAINER_RUNNING) for n in ("nginx", "shell"))
    dbg = container(SENT["name"], "c-dbg", pb.CONTAINER_EXITED)
    dbg[1].exit_code = 3
    history = {SENT["name"]: st.ContainerHistory(attempt=0, waiting_reason="CrashLoopBackOff")}
    status = st.build_pod_status(pod, observe(nginx, shell, dbg), st.PodStatus(), history, {}, "/logs", NOW)
    (ec,) = status.ephemeral_container_statuses
    assert (ec.state, ec.terminated.exit_code if ec.terminated else None, ec.restart_count) == (
        "terminated",
        3,
        0,
    )
    rendered = status.to_dict()["ephemeralContainerStatuses"][0]
    assert (
        rendered["ready"] is False and "started" not in rendered and rendered["containerID"] == "cri://c-dbg"
    )
    assert status.ready and status.phase == st.RUNNING  # the pod is as it was
    running = container(SENT["name"], "c-dbg", pb.CONTAINER_RUNNING)
    status = st.build_pod_status(pod, observe(nginx, shell, running), status, history, {}, "/logs", NOW)
    assert status.ephemeral_container_statuses[0].state == "running"
    assert status.ephemeral_container_statuses[0].ready is False and status.ready
