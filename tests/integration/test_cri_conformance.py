"""CRI behaviours that cri-tools' critest checks and podhost once missed, shown through the CRI socket.

Each test names the critest spec it stands for. The instance is this module's own (bridge `phcrit1`,
subnet 10.244.18.0/24), and every test is followed by the same leak check as the shared fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.errors import InvalidArgument
from tests.instance import Instance, OrphanReaper, isolated_instance, leak_checked
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE = "phcrit1"
SUBNET = "10.244.18.0/24"


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    yield from isolated_instance("ph-crit-it", BRIDGE, SUBNET)


@pytest.fixture
def podhost(instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(instance)


def test_reopen_container_log_returns_once_the_new_file_exists(podhost: Instance) -> None:
    """critest: "runtime should support reopening container log" checks the file right after the call."""
    pod = podhost.pod_config("reopen")
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(
        pod_id, pod, "logger", ["sh", "-c", "while true; do echo tick; sleep 0.1; done"]
    )
    log = Path(pod.log_directory) / "logger.log"
    wait_for("the first tick", lambda: log.stat().st_size, 5)
    for round_ in range(5):  # conmon's reopen is asynchronous: one lucky round would prove nothing
        log.rename(log.with_name(f"logger.log.{round_}"))
        podhost.client.reopen_container_log(cid)
        assert log.exists(), f"round {round_}: ReopenContainerLog returned before the new log existed"
    wait_for("a tick in the reopened log", lambda: b"stdout F tick" in log.read_bytes(), 5)


def test_run_as_group_without_user_is_rejected(podhost: Instance) -> None:
    """critest: "runtime should return error if RunAsGroup is set without RunAsUser"."""
    pod = podhost.pod_config("group-only")
    pod_id = podhost.client.run_pod_sandbox(pod)
    cfg = podhost.container_config("group-only", ["id"])
    cfg.linux.security_context.run_as_group.value = 1002
    with pytest.raises(InvalidArgument, match="run_as_group"):
        podhost.client.create_container(pod_id, cfg, pod)
    cfg.linux.security_context.run_as_username = "root"  # with a user the same group is fine
    assert podhost.client.create_container(pod_id, cfg, pod)
