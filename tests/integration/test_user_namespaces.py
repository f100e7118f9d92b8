"""User namespaces (CRI `userns_options` mode POD) on real pods, as critest (cri-tools v1.36
`security_context_linux.go`, "UserNamespaces") and a Kubernetes user (`hostUsers: false`) see them.

A mode POD pod maps container ids 0..65535 to host ids 165536..: its container's /proc/self/uid_map shows
the mapping, `id -u` is 0 inside and 165536 on the host, and a file the image gives to root (/bin/busybox)
shows owner 0 inside, through the idmapped layers of the rootfs. The modes and mappings podhost refuses
get INVALID_ARGUMENT with nothing left behind (leak_checked).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import InvalidArgument
from tests.instance import Instance

pytestmark = pytest.mark.root

HOST_ID, LENGTH = 165536, 65536
FIELD = "PodSandboxConfig.linux.security_context.namespace_options.userns_options"


@pytest.fixture
def ph(podhost: Instance) -> Instance:
    """The shared instance (leak-checked after each test)."""
    return podhost


def userns(
    mode: int = pb.POD, uids: list[pb.IDMapping] | None = None, gids: list[pb.IDMapping] | None = None
):  # type: ignore[no-untyped-def]
    one = [pb.IDMapping(container_id=0, host_id=HOST_ID, length=LENGTH)]
    return pb.UserNamespace(mode=mode, uids=one if uids is None else uids, gids=one if gids is None else gids)  # type: ignore[arg-type]


def userns_pod(ph: Instance, name: str, options: pb.UserNamespace) -> pb.PodSandboxConfig:
    pod = ph.pod_config(name)
    pod.linux.security_context.namespace_options.userns_options.CopyFrom(options)
    return pod


def test_runtime_advertises_user_namespaces(ph: Instance) -> None:
    handlers = ph.client.status().runtime_handlers
    assert handlers and handlers[0].name == "" and all(h.features.user_namespaces for h in handlers)


def test_pod_user_namespace(ph: Instance) -> None:
    pod = userns_pod(ph, "userns-pod", userns())
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config("userns-pod", ["sleep", "3600"])
    config.linux.security_context.namespace_options.userns_options.CopyFrom(userns())
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)

    code, out, err = ph.exec(cid, "cat", "/proc/self/uid_map")
    assert code == 0, err
    assert re.match(rf"\s+0\s+{HOST_ID}\s+{LENGTH}\s*$", out), out
    code, out, err = ph.exec(cid, "cat", "/proc/self/gid_map")
    assert code == 0 and re.match(rf"\s+0\s+{HOST_ID}\s+{LENGTH}\s*$", out), (out, err)
    assert ph.exec(cid, "id", "-u")[1].strip() == "0"
    # A file the image gives to root is root's inside (the idmapped layers), and so is a new one.
    assert ph.exec(cid, "stat", "-c", "%u:%g", "/bin/busybox")[1].strip() == "0:0"
    code, out, err = ph.exec(cid, "sh", "-c", "touch /new && stat -c %u:%g /new /")
    assert (code, out.split()) == (0, ["0:0", "0:0"]), err
    # On the host, the container's process is the mapped uid.
    pid = int(json.loads(ph.client.container_status(cid, verbose=True).info["info"])["pid"])
    uids = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    assert uids.split()[1:] == [str(HOST_ID)] * 4
    # The pod's pause is in the same user namespace, as the mapped 65535.
    status = ph.client.pod_sandbox_status(pod_id, verbose=True)
    assert status.status.state == pb.SANDBOX_READY


def test_a_volume_is_seen_through_the_pods_user_namespace(ph: Instance, tmp_path: Path) -> None:
    """A host directory the host's root owns: root's inside the pod (an idmapped mount), and what the
    pod's root writes there lands as the host's root, not as the mapped id; nothing stays mounted."""
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "mine").write_text("x")
    pod = userns_pod(ph, "userns-vol", userns())
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config("userns-vol", ["sleep", "3600"])
    config.linux.security_context.namespace_options.userns_options.CopyFrom(userns())
    config.mounts.append(pb.Mount(container_path="/vol", host_path=str(volume)))
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)
    code, out, err = ph.exec(cid, "sh", "-c", "stat -c %u:%g /vol /vol/mine && echo y > /vol/new")
    assert (code, out.split()) == (0, ["0:0", "0:0"]), err
    st = (volume / "new").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert ph.client.container_status(cid).status.mounts[0].host_path == str(volume)
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if str(ph.root) in line and "/rro/" in line]  # the host's copy went


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (userns(mode=pb.CONTAINER), "mode: CONTAINER is not supported"),
        (userns(mode=pb.TARGET), "mode: TARGET is not supported"),
        (
            userns(
                uids=[
                    pb.IDMapping(container_id=0, host_id=HOST_ID, length=1000),
                    pb.IDMapping(container_id=1000, host_id=HOST_ID + 1000, length=1000),
                ]
            ),
            "uids: exactly one mapping",
        ),
        (userns(gids=[pb.IDMapping(container_id=1, host_id=HOST_ID, length=LENGTH)]), "gids: container id 0"),
        (userns(uids=[pb.IDMapping(container_id=0, host_id=HOST_ID, length=0)]), "uids: length"),
        (userns(mode=pb.NODE), "mappings are only allowed in mode POD"),
    ],
    ids=["container", "target", "two-mappings", "root-unmapped", "zero-length", "node-with-mappings"],
)
def test_refused(ph: Instance, options: pb.UserNamespace, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as e:
        ph.client.run_pod_sandbox(userns_pod(ph, "userns-bad", options))
    assert FIELD in str(e.value)
    assert not ph.client.list_pod_sandbox()


def test_node_mode_keeps_host_ids(ph: Instance) -> None:
    pod = userns_pod(ph, "userns-node", pb.UserNamespace(mode=pb.NODE))
    pod_id = ph.client.run_pod_sandbox(pod)
    cid = ph.run_container(pod_id, pod, "userns-node", ["sleep", "3600"])
    assert ph.exec(cid, "cat", "/proc/self/uid_map")[1] == Path("/proc/self/uid_map").read_text()
