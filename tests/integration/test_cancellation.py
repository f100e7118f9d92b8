"""A cancelled call is undone like a failed one: the caller's deadline passes while CNI ADD is slow, the
daemon stops at the next stage, runs the same undo as for an error, and nothing is left or listed.

The slow part is real: the pod's conflist runs a wrapper that sleeps before exec'ing Debian's bridge
plugin, so the ADD really allocates an address and a veth that the undo must release.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import PodhostError
from podhost.runtime.network import conflist, plugin
from tests.instance import Instance, OrphanReaper, leak_checked
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE = "phcan0"
SUBNET = "10.231.8.0/26"
ADD_DELAY_S = 1.5

SLOW_BRIDGE = """#!/bin/sh
# A bridge plugin whose ADD takes {delay} s longer: long enough for a caller's deadline to pass.
[ "$CNI_COMMAND" = ADD ] && sleep {delay}
exec {bridge} "$@"
"""


@pytest.fixture(scope="module")
def slow_instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    inst = Instance(Path(f"/tmp/ph-can-{secrets.token_hex(4)}"), BRIDGE, SUBNET)
    bindir = inst.root / "cni-bin"
    bindir.mkdir()
    wrapper = bindir / "ph-slow-bridge"
    wrapper.write_text(
        SLOW_BRIDGE.format(delay=ADD_DELAY_S, bridge=plugin.find_plugin("bridge", inst.config.cni_bin_dirs))
    )
    wrapper.chmod(0o755)
    net = conflist.default_conflist(inst.config)
    for p in net["plugins"]:
        if p["type"] == "bridge":
            p["type"] = "ph-slow-bridge"
    inst.config.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (inst.config.cni_conf_dir / "10-slow.conflist").write_text(json.dumps(net))
    bin_dirs = [str(bindir), *(str(d) for d in inst.config.cni_bin_dirs)]
    with open(inst.config_file, "a") as f:
        f.write(f"cni_bin_dirs = {json.dumps(bin_dirs)}\n")
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def slow(slow_instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(slow_instance)


def test_a_caller_gone_mid_add_leaves_nothing(slow: Instance) -> None:
    pod = slow.pod_config("cancelled")
    short = type(slow.client)("unix://" + str(slow.config.socket), timeout=0.5)
    try:
        with pytest.raises(PodhostError) as info:
            short.run_pod_sandbox(pod)
        assert info.value.grpc_code == "DEADLINE_EXCEEDED"
    finally:
        short.close()
    # The daemon notices at the stage after the slow ADD and unwinds; wait until it has.
    log = slow.root / "daemon.log"
    wait_for("the daemon to unwind", lambda: "the caller went away" in log.read_text(), ADD_DELAY_S + 10)
    assert slow.client.list_pod_sandbox() == []
    problems = find_leaks(slow.root, slow.bridge, slow.config.cgroup_parent, slow.config.instance_id)
    assert problems == [], problems
    # The name was released with the undo: the kubelet's retry makes the pod.
    pod_id = slow.client.run_pod_sandbox(pod)
    assert slow.client.pod_sandbox_status(pod_id).status.state == pb.SANDBOX_READY
