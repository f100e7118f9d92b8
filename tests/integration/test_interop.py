"""One CRI client, one scenario, two runtimes: podhost and Debian's containerd.

Both must pass, which pins podhost's wire format from both sides: the same generated messages that
containerd's CRI plugin accepts drive podhost, and podhost's answers decode the way containerd's do.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.containerd_peer import BUSYBOX_IMAGE, ContainerdPeer, build_test_images
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import NotFound
from tests.instance import Instance
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root


@dataclass
class Target:
    name: str
    client: CRIClient
    root: Path
    cgroup_parent: Callable[[str], str]  # pod uid -> LinuxPodSandboxConfig.cgroup_parent ("" lets it choose)


@pytest.fixture(params=["podhost", "containerd"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    root = Path(f"/tmp/ph-interop-{secrets.token_hex(3)}")
    if request.param == "podhost":
        inst = Instance(root, "phiop0", "10.231.50.0/24")
        try:
            inst.start()
            yield Target("podhost", inst.client, root, lambda uid: "")
            assert find_leaks(root, inst.bridge, inst.config.cgroup_parent) == []
        finally:
            inst.cleanup()
    else:
        peer = ContainerdPeer(root, "phiopc0", "10.231.51.0/24")
        with peer:
            for tar in build_test_images(root / "images").values():
                peer.import_image(tar)
            client = CRIClient(peer.endpoint, timeout=60)
            try:
                yield Target("containerd", client, root, peer.pod_cgroup_parent)
            finally:
                client.close()


def test_sandbox_container_exec_logs_stop_remove(target: Target) -> None:
    c = target.client
    version = c.version()
    assert version.runtime_api_version == "v1" and version.runtime_name == target.name
    uid = secrets.token_hex(8)
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="interop", namespace="default", uid=uid),
        hostname="interop",
        log_directory=str(target.root / "logs"),
        dns_config=pb.DNSConfig(servers=["127.0.0.1"]),
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=target.cgroup_parent(uid),
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )
    pod_id = c.run_pod_sandbox(pod)
    status = c.pod_sandbox_status(pod_id).status
    assert status.state == pb.SANDBOX_READY and status.metadata.name == "interop" and status.network.ip

    ctr = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"),
        image=pb.ImageSpec(image=BUSYBOX_IMAGE),
        command=["sh", "-c", "echo hello from $(hostname); echo oops >&2; exec sleep 3600"],
        log_path="app.log",
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
            )
        ),
    )
    cid = c.create_container(pod_id, ctr, pod)
    assert c.container_status(cid).status.state == pb.CONTAINER_CREATED
    c.start_container(cid)
    assert c.container_status(cid).status.state == pb.CONTAINER_RUNNING
    (listed,) = c.list_containers(pb.ContainerFilter(pod_sandbox_id=pod_id))
    assert listed.id == cid and listed.pod_sandbox_id == pod_id

    r = c.exec_sync(cid, ["sh", "-c", "cat /etc/hostname; exit 7"], 10)
    assert (r.exit_code, r.stdout) == (7, b"interop\n")

    log_path = Path(c.container_status(cid).status.log_path)
    wait_for("both log lines", lambda: log_path.read_bytes().count(b"\n") >= 2, 5)
    lines = log_path.read_text().splitlines()
    assert any(" stdout F hello from interop" in line for line in lines), lines
    assert any(" stderr F oops" in line for line in lines), lines

    c.stop_container(cid, 2)
    done = c.container_status(cid).status
    assert done.state == pb.CONTAINER_EXITED and done.finished_at >= done.started_at > 0
    c.remove_container(cid)
    with pytest.raises(NotFound):
        c.container_status(cid)
    c.stop_pod_sandbox(pod_id)
    assert c.pod_sandbox_status(pod_id).status.state == pb.SANDBOX_NOTREADY
    c.remove_pod_sandbox(pod_id)
    assert c.list_pod_sandbox() == []
