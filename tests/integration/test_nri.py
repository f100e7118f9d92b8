"""NRI on real pods: a plugin connected to the daemon's NRI socket sees the lifecycle and adjusts the
containers being created, as with containerd 2 and CRI-O.

The plugin (tests/nri_plugin.py) adds an environment variable and an annotation to every new container;
the container's process has the variable and ContainerStatus shows the annotation. Around it: the order
of events, a self-exited container's StopContainer, a plugin's refusal failing the verb with nothing left
behind, a hung plugin costing one timeout, an adjustment podhost cannot apply refused by name, two
plugins in conflict, synchronization with what already runs, and a plugin's resource update.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.config import Config
from podhost.errors import FailedPrecondition, PodhostError
from podhost.runtime.nri import api_pb2 as nri
from tests.instance import Instance, OrphanReaper, leak_checked
from tests.nri_plugin import TestPlugin
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phnri0", "10.231.22.0/26"
REQUEST_TIMEOUT = 1.5
REGISTRATION_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    inst = Instance(Path(f"/tmp/ph-nri-{secrets.token_hex(4)}"), BRIDGE, SUBNET)
    with inst.config_file.open("a") as f:
        f.write(f'nri_socket = "{inst.root}/nri/nri.sock"\nnri_request_timeout = {REQUEST_TIMEOUT}\n')
        f.write(f"nri_registration_timeout = {REGISTRATION_TIMEOUT}\n")
    inst.config = Config.load(root=inst.root, config_file=inst.config_file, bridge=BRIDGE, subnet=SUBNET)
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def ph(instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(instance)


@pytest.fixture
def plugins(ph: Instance) -> Iterator[list[TestPlugin]]:
    """Plugins a test connects; all disconnected afterwards."""
    made: list[TestPlugin] = []
    yield made
    for plugin in made:
        plugin.close()


def connect(ph: Instance, made: list[TestPlugin], name: str, **kw: object) -> TestPlugin:
    assert ph.config.nri_socket is not None
    plugin = TestPlugin(ph.config.nri_socket, name, **kw)  # type: ignore[arg-type]
    made.append(plugin)
    return plugin.connect()


def add_env_and_annotation(pod: nri.PodSandbox, container: nri.Container) -> nri.ContainerAdjustment:
    adjust = nri.ContainerAdjustment()
    adjust.env.add(key="NRI_INJECTED", value=f"hello-{container.name}")
    adjust.annotations["example.com/nri-injected"] = pod.name
    return adjust


def pod_with_container(ph: Instance, name: str, command: list[str]) -> tuple[str, str]:
    pod = ph.pod_config(name)
    pod_id = ph.client.run_pod_sandbox(pod)
    container_id = ph.client.create_container(pod_id, ph.container_config(name, command), pod)
    return pod_id, container_id


def test_socket_is_private(ph: Instance) -> None:
    assert ph.config.nri_socket is not None
    assert ph.config.nri_socket.stat().st_mode & 0o777 == 0o600
    assert ph.config.nri_socket.parent.stat().st_mode & 0o777 == 0o700


def test_plugin_adds_env_and_annotation_to_every_new_container(
    ph: Instance, plugins: list[TestPlugin]
) -> None:
    plugin = connect(ph, plugins, "injector", adjust=add_env_and_annotation)
    assert plugin.configured is not None and plugin.configured.runtime_name == "podhost"
    pod_id, first = pod_with_container(ph, "nri-adjust", ["sleep", "3600"])
    ph.client.start_container(first)
    pod = ph.pod_config("nri-adjust")
    second = ph.client.create_container(pod_id, ph.container_config("second", ["sleep", "3600"]), pod)
    ph.client.start_container(second)
    for container_id, name in ((first, "nri-adjust"), (second, "second")):
        code, out, _ = ph.exec(container_id, "sh", "-c", "echo $NRI_INJECTED")
        assert (code, out.strip()) == (0, f"hello-{name}")
        status = ph.client.container_status(container_id, verbose=True)
        assert status.status.annotations["example.com/nri-injected"] == "nri-adjust"
        spec = json.loads((ph.config.container_run_dir(container_id) / "config.json").read_text())
        assert spec["annotations"]["example.com/nri-injected"] == "nri-adjust"
    # A plugin that is gone adjusts nothing: the next container is made as asked.
    plugin.close()
    wait_for("the daemon to see the plugin go", lambda: daemon_saw_disconnect(ph, plugin), 5)
    third = ph.client.create_container(pod_id, ph.container_config("third", ["sleep", "3600"]), pod)
    ph.client.start_container(third)
    assert ph.exec(third, "sh", "-c", "echo ${NRI_INJECTED:-unset}")[1].strip() == "unset"


def daemon_saw_disconnect(ph: Instance, plugin: TestPlugin) -> bool:
    return f"NRI: plugin {plugin.index}-{plugin.name} disconnected" in (ph.root / "daemon.log").read_text()


def test_events_arrive_in_lifecycle_order(ph: Instance, plugins: list[TestPlugin]) -> None:
    plugin = connect(ph, plugins, "recorder")
    pod_id, stopped = pod_with_container(ph, "nri-order", ["sleep", "3600"])
    ph.client.start_container(stopped)
    ph.client.stop_container(stopped, 0)
    ph.client.remove_container(stopped)
    pod = ph.pod_config("nri-order")
    exited = ph.client.create_container(pod_id, ph.container_config("exits", ["sh", "-c", "exit 3"]), pod)
    ph.client.start_container(exited)
    # No CRI call stops it: it ends by itself, and the plugin hears StopContainer all the same.
    wait_for("StopContainer for the exited container", lambda: "StopContainer" in plugin.kinds(exited), 10)
    ph.client.stop_pod_sandbox(pod_id)
    ph.client.stop_pod_sandbox(pod_id)  # a second stop: no second event
    ph.client.remove_pod_sandbox(pod_id)
    lifecycle = [
        "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer",
        "StopContainer", "RemoveContainer",
    ]  # fmt: skip
    assert plugin.kinds(stopped) == lifecycle
    wait_for("the exited container's whole lifecycle", lambda: plugin.kinds(exited) == lifecycle, 5)
    assert plugin.kinds(pod_id=pod_id) == ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]


def test_refusal_fails_the_verb_and_leaves_nothing(ph: Instance, plugins: list[TestPlugin]) -> None:
    refuser = connect(ph, plugins, "refuser", fail={"CreateContainer": "no containers today"})
    pod = ph.pod_config("nri-refused")
    pod_id = ph.client.run_pod_sandbox(pod)
    with pytest.raises(PodhostError) as err:
        ph.client.create_container(pod_id, ph.container_config("refused", ["sleep", "3600"]), pod)
    assert "refuser" in str(err.value) and "no containers today" in str(err.value)
    assert ph.client.list_containers() == []
    assert not any(ph.config.run_dir.joinpath("containers").iterdir())
    refuser.close()
    wait_for("the daemon to see the refuser go", lambda: daemon_saw_disconnect(ph, refuser), 5)
    container_id = ph.client.create_container(pod_id, ph.container_config("retried", ["sleep", "3600"]), pod)
    ph.client.start_container(container_id)

    connect(ph, plugins, "pod-refuser", fail={"RunPodSandbox": "no pods either"})
    with pytest.raises(PodhostError) as err:
        ph.client.run_pod_sandbox(ph.pod_config("nri-refused-pod"))
    assert "no pods either" in str(err.value)
    assert [p.metadata.name for p in ph.client.list_pod_sandbox()] == ["nri-refused"]


def test_hung_plugin_costs_one_timeout_and_is_dropped(ph: Instance, plugins: list[TestPlugin]) -> None:
    never = threading.Event()
    hung = connect(ph, plugins, "hung", block={"CreateContainer": never})
    pod_id, container_id = pod_with_container(ph, "nri-hung", ["sleep", "3600"])  # after one timeout
    ph.client.start_container(container_id)
    assert hung.disconnected.wait(5), "the hung plugin was not disconnected"
    assert "NRI: plugin 50-hung failed CreateContainer" in (ph.root / "daemon.log").read_text()


def test_unsupported_adjustment_is_refused_by_name(ph: Instance, plugins: list[TestPlugin]) -> None:
    def net_device(pod: nri.PodSandbox, container: nri.Container) -> nri.ContainerAdjustment:
        adjust = nri.ContainerAdjustment()
        adjust.linux.net_devices["eth9"].name = "net9"
        return adjust

    connect(ph, plugins, "netdev", adjust=net_device)
    pod = ph.pod_config("nri-unsupported")
    pod_id = ph.client.run_pod_sandbox(pod)
    with pytest.raises(PodhostError) as err:
        ph.client.create_container(pod_id, ph.container_config("c", ["sleep", "3600"]), pod)
    assert isinstance(err.value, FailedPrecondition)
    assert "adjust.linux.net_devices is not supported" in str(err.value)
    assert ph.client.list_containers() == []


def test_two_plugins_setting_one_variable_conflict(ph: Instance, plugins: list[TestPlugin]) -> None:
    def set_mode(value: str):  # type: ignore[no-untyped-def]
        def adjust(pod: nri.PodSandbox, container: nri.Container) -> nri.ContainerAdjustment:
            a = nri.ContainerAdjustment()
            a.env.add(key="MODE", value=value)
            return a

        return adjust

    connect(ph, plugins, "first", index="10", adjust=set_mode("a"))
    connect(ph, plugins, "second", index="20", adjust=set_mode("b"))
    pod = ph.pod_config("nri-conflict")
    pod_id = ph.client.run_pod_sandbox(pod)
    with pytest.raises(PodhostError) as err:
        ph.client.create_container(pod_id, ph.container_config("c", ["sleep", "3600"]), pod)
    assert "10-first and 20-second both adjust env MODE" in str(err.value)


def test_late_plugin_is_synchronized_with_what_runs(ph: Instance, plugins: list[TestPlugin]) -> None:
    pod_id, container_id = pod_with_container(ph, "nri-sync", ["sleep", "3600"])
    ph.client.start_container(container_id)
    plugin = connect(ph, plugins, "late")
    assert pod_id in plugin.synced_pods and container_id in plugin.synced_containers


def test_plugin_updates_a_running_container(ph: Instance, plugins: list[TestPlugin]) -> None:
    plugin = connect(ph, plugins, "updater")
    pod_id, container_id = pod_with_container(ph, "nri-update", ["sleep", "3600"])
    ph.client.start_container(container_id)
    update = nri.ContainerUpdate(container_id=container_id)
    update.linux.resources.memory.limit.value = 96 << 20
    assert list(plugin.update_containers([update]).failed) == []
    status = ph.client.container_status(container_id)
    assert status.status.resources.linux.memory_limit_in_bytes == 96 << 20
    gone = nri.ContainerUpdate(container_id="0" * 64)
    gone.linux.resources.memory.limit.value = 96 << 20
    assert [u.container_id for u in plugin.update_containers([gone]).failed] == ["0" * 64]


def test_after_a_daemon_crash_plugins_reconnect_and_see_what_runs(
    ph: Instance, plugins: list[TestPlugin]
) -> None:
    before = connect(ph, plugins, "before-crash")
    pod_id, container_id = pod_with_container(ph, "nri-crash", ["sleep", "3600"])
    ph.client.start_container(container_id)
    ph.kill()  # SIGKILL: the socket file stays behind, stale
    assert before.disconnected.wait(5)
    ph.start()
    after = connect(ph, plugins, "after-crash")
    assert pod_id in after.synced_pods and container_id in after.synced_containers


def test_garbage_and_silent_connections_are_dropped_and_the_socket_keeps_serving(
    ph: Instance, plugins: list[TestPlugin]
) -> None:
    """A peer that sends a frame larger than ttrpc allows, one that sends bytes that are no protocol at
    all, and one that connects and never registers: each is disconnected, and a real plugin still gets in."""
    import socket
    import struct

    assert ph.config.nri_socket is not None
    oversized = socket.socket(socket.AF_UNIX)
    oversized.connect(str(ph.config.nri_socket))
    oversized.sendall(struct.pack(">II", 2, 64 << 20))  # a 64 MiB mux frame: refused at the header
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(ph.config.nri_socket))
    garbage.sendall(struct.pack(">II", 2, 12) + b"\xff" * 12)  # a ttrpc frame cut short, then silence
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(ph.config.nri_socket))
    for peer in (oversized, silent):
        peer.settimeout(REGISTRATION_TIMEOUT + 5)
        assert peer.recv(1) == b"", "the daemon kept a connection that broke the protocol or never registered"
    garbage.close()
    plugin = connect(ph, plugins, "after-garbage")
    pod_id, _ = pod_with_container(ph, "nri-after-garbage", ["sleep", "3600"])
    wait_for("CreateContainer at the plugin", lambda: "CreateContainer" in [e.kind for e in plugin.events], 5)
    assert "protocol error" in (ph.root / "daemon.log").read_text()
