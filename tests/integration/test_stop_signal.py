"""CRI ContainerConfig.stop_signal (KEP-4960, CRI 1.33): StopContainer sends the signal the config names,
before the image's StopSignal and SIGTERM, and ContainerStatus reports the one the container stops with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from podhost.cri import api_pb2 as pb
from tests.instance import Instance, leak_checked
from tests.wait import wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def ph(podhost: Instance) -> Iterator[Instance]:
    yield from leak_checked(podhost)


def test_stop_uses_the_configs_stop_signal(ph: Instance) -> None:
    pod = ph.pod_config("stop-signal")
    pod_id = ph.client.run_pod_sandbox(pod)
    script = "trap 'echo got USR1; exit 7' USR1; trap '' TERM; echo ready; while true; do sleep 0.1; done"
    config = ph.container_config("usr1", ["sh", "-c", script])
    config.stop_signal = pb.SIGNAL_SIGUSR1
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)
    log = ph.root / "logs" / "stop-signal" / "usr1.log"
    wait_for("the trap set", lambda: log.exists() and "ready" in log.read_text(), 10)
    assert ph.client.container_status(cid).status.stop_signal == pb.SIGNAL_SIGUSR1
    ph.client.stop_container(cid, 30)  # SIGTERM is ignored: only USR1 ends it before the 30 s
    status = ph.client.container_status(cid).status
    assert status.exit_code == 7 and "got USR1" in log.read_text()
    plain = ph.client.create_container(pod_id, ph.container_config("plain", ["sleep", "3600"]), pod)
    assert ph.client.container_status(plain).status.stop_signal == pb.SIGNAL_SIGTERM
