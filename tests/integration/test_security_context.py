"""Security-context features on real pods, as critest (cri-tools v1.36 `security_context_linux.go`) and a
Kubernetes user see them.

SupplementalGroupsPolicy (KEP-3619): an image whose /etc/group puts its user (default-user, 1000) in
group-defined-in-image (50000). Under Merge the container's process has that group too; under Strict only
its primary gid and the spec's supplemental_groups. ContainerStatus.user reports the same ids.

Recursive read-only mounts (`Mount.recursive_read_only`): a host directory with a tmpfs mounted inside,
bound read-only. Plainly read-only, the tmpfs stays writable in the container; recursively, writing there
fails with EROFS. Bad combinations are refused with the field named, and nothing stays mounted.
"""

from __future__ import annotations

import re
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime import mount
from podhost.runtime.image.build import Entry, _add_layer_image, busybox_entries, tar_entries
from podhost.runtime.image.store import ImageStore
from tests.instance import Instance, OrphanReaper, leak_checked
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phsec0", "10.231.14.128/26"
PREDEFINED_GROUP_IMAGE = "localhost/podhost/test-predefined-group:latest"
UID, IMAGE_GID, SUPPLEMENTAL = 1000, 50000, 1234
PASSWD = "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/tmp:/bin/sh\n"
GROUP = "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"


def add_predefined_group_image(store: ImageStore) -> None:
    """busybox with critest's testImagePreDefinedGroup /etc/passwd and /etc/group, user 1000."""
    etc = {"etc/passwd": PASSWD, "etc/group": GROUP}
    entries = [e for e in busybox_entries() if e.path not in etc]
    entries += [Entry(path, tarfile.REGTYPE, 0o644, data=text.encode()) for path, text in etc.items()]
    _add_layer_image(store, tar_entries(entries), PREDEFINED_GROUP_IMAGE, cmd=["sh"], user=str(UID))


def with_predefined_group_image(inst: Instance) -> None:
    """Put the image in `inst`'s store; before its daemon starts (the daemon owns the store then)."""
    store = ImageStore(inst.config.image_dir)
    try:
        add_predefined_group_image(store)
    finally:
        store.close()


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    # Its own bridge and subnet: the session's shared instance runs beside it.
    inst = Instance(Path(f"/tmp/ph-sec-{secrets.token_hex(4)}"), BRIDGE, SUBNET)
    try:
        with_predefined_group_image(inst)
        inst.start()
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def ph(instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(instance)


def run_id_container(ph: Instance, name: str, policy: int) -> tuple[str, str]:
    """A pod whose container prints `id -G` then sleeps; its id and its log file."""
    pod = ph.pod_config(name)
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config(name, ["sh", "-c", "id -G; sleep 3600"], image=PREDEFINED_GROUP_IMAGE)
    sc = config.linux.security_context
    sc.run_as_user.value = UID
    sc.supplemental_groups.append(SUPPLEMENTAL)
    sc.supplemental_groups_policy = policy  # type: ignore[assignment]
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)
    return cid, str(ph.root / "logs" / name / f"{name}.log")


def logged(path: str) -> str:
    try:
        with open(path) as f:
            return "".join(line.split(" ", 3)[3] for line in f if line.count(" ") >= 3)
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize(
    ("policy", "groups"),
    [
        (pb.Merge, [UID, SUPPLEMENTAL, IMAGE_GID]),  # the image's /etc/group adds 50000
        (pb.Strict, [UID, SUPPLEMENTAL]),  # only the primary gid and the spec's groups
    ],
    ids=["Merge", "Strict"],
)
def test_supplemental_groups_policy(ph: Instance, policy: int, groups: list[int]) -> None:
    name = f"sgp-{pb.SupplementalGroupsPolicy.Name(policy).lower()}"  # type: ignore[arg-type]
    cid, log = run_id_container(ph, name, policy)
    expected = " ".join(str(g) for g in groups) + "\n"
    assert wait_for("the container's output", lambda: logged(log), 10) == expected  # its first process
    code, out, err = ph.exec(cid, "id", "-G")  # an exec'd process gets the same ids
    assert (code, out) == (0, expected), err
    user = ph.client.container_status(cid).status.user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (UID, UID, sorted(groups))


def test_runtime_advertises_supplemental_groups_policy(ph: Instance) -> None:
    assert ph.client.status().features.supplemental_groups_policy


# --- recursive read-only mounts ------------------------------------------------------------------------


@pytest.fixture
def host_tree(tmp_path: Path) -> Iterator[Path]:
    """critest's createHostPathForRROMount: a directory with a tmpfs mounted at `tmpfs` inside it."""
    (tmp_path / "tmpfs").mkdir()
    mount.mount("tmpfs", str(tmp_path / "tmpfs"), "tmpfs", 0, "size=1m")
    try:
        yield tmp_path
    finally:
        if (tmp_path / "tmpfs").exists():
            mount.umount(str(tmp_path / "tmpfs"), mount.MNT_DETACH)


def mount_container(ph: Instance, name: str, mounts: list[pb.Mount]) -> str:
    pod = ph.pod_config(name)
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config(name, ["sleep", "3600"])
    config.mounts.extend(mounts)
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)
    return cid


@pytest.mark.parametrize("rro", [False, True], ids=["readonly", "recursive_read_only"])
def test_recursive_read_only_mount(ph: Instance, host_tree: Path, rro: bool) -> None:
    m = pb.Mount(container_path="/mnt", host_path=str(host_tree), readonly=True, recursive_read_only=rro)
    cid = mount_container(ph, f"rro-{int(rro)}", [m])
    code, _, err = ph.exec(cid, "touch", "/mnt/file")
    assert code != 0 and "Read-only file system" in err  # the top is read-only either way
    code, _, err = ph.exec(cid, "touch", "/mnt/tmpfs/foo")
    if rro:
        assert code != 0 and "Read-only file system" in err
        assert not (host_tree / "tmpfs" / "foo").exists()
    else:
        assert code == 0, err  # a plain read-only bind leaves the submount writable
        assert (host_tree / "tmpfs" / "foo").exists()
    assert ph.client.container_status(cid).status.mounts[0].recursive_read_only == rro
    assert ph.client.container_status(cid).status.mounts[0].host_path == str(host_tree)
    (host_tree / "tmpfs" / "host-side").write_text("x")  # the host's own tree stays writable
    # As critest does while the container still runs: the host unmounts its tmpfs and removes the
    # directory. No copy podhost made may keep it busy (EBUSY) in the host's mount namespace.
    mount.umount(str(host_tree / "tmpfs"), mount.MNT_DETACH)
    (host_tree / "tmpfs").rmdir()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"readonly": False}, "mounts[0].recursive_read_only: needs ContainerConfig.mounts[0].readonly"),
        ({"propagation": pb.PROPAGATION_HOST_TO_CONTAINER}, "not PROPAGATION_HOST_TO_CONTAINER"),
        ({"propagation": pb.PROPAGATION_BIDIRECTIONAL}, "not PROPAGATION_BIDIRECTIONAL"),
    ],
    ids=["not-readonly", "host-to-container", "bidirectional"],
)
def test_recursive_read_only_mount_refused(ph: Instance, host_tree: Path, edit: dict, field: str) -> None:  # type: ignore[type-arg]
    fields = {"readonly": True, "recursive_read_only": True} | edit
    m = pb.Mount(container_path="/mnt", host_path=str(host_tree), **fields)
    with pytest.raises(InvalidArgument, match=re.escape(field)):
        mount_container(ph, "rro-bad", [m])


def test_recursive_read_only_mount_failure_leaves_nothing(ph: Instance, host_tree: Path) -> None:
    """The second mount's source is missing: the first one's staged copy is undone (leak_checked)."""
    good = pb.Mount(container_path="/a", host_path=str(host_tree), readonly=True, recursive_read_only=True)
    gone = pb.Mount(
        container_path="/b", host_path=str(host_tree / "gone"), readonly=True, recursive_read_only=True
    )
    with pytest.raises(RuntimeFailure, match="recursive read-only mounts"):
        mount_container(ph, "rro-fail", [good, gone])
    assert not ph.client.list_containers()


def test_runtime_advertises_recursive_read_only_mounts(ph: Instance) -> None:
    handlers = ph.client.status().runtime_handlers
    assert handlers and all(h.features.recursive_read_only_mounts for h in handlers)
    # The default handler is listed by the empty name too, as the CRI names it (critest looks it up so).
    assert [h.name for h in handlers] == ["", *ph.config.runtimes]


@pytest.mark.parametrize("ambient", [True, False], ids=["ambient", "none"])
def test_ambient_capability_lets_a_non_root_process_bind_port_80(ph: Instance, ambient: bool) -> None:
    """CRI add_ambient_capabilities (KEP-2763): uid 1000 with NET_BIND_SERVICE ambient binds port 80 in
    the pod; without it the bind is refused. The kernel's own view: CapAmb of the container's process."""
    name = f"ambient-{'yes' if ambient else 'no'}"
    pod = ph.pod_config(name)
    pod_id = ph.client.run_pod_sandbox(pod)
    config = ph.container_config(name, ["sh", "-c", "httpd -f -p 80 -h /tmp; sleep 3600"])
    sc = config.linux.security_context
    sc.run_as_user.value = UID
    if ambient:
        sc.capabilities.add_ambient_capabilities.append("NET_BIND_SERVICE")
    cid = ph.client.create_container(pod_id, config, pod)
    ph.client.start_container(cid)
    cap_amb = ph.exec(cid, "sh", "-c", "grep CapAmb /proc/self/status")[1].split()[1]
    assert int(cap_amb, 16) == (1 << 10 if ambient else 0)  # CAP_NET_BIND_SERVICE is capability 10
    listening = lambda: ":0050 " in ph.exec(cid, "cat", "/proc/net/tcp", "/proc/net/tcp6")[1]  # noqa: E731
    if ambient:
        assert wait_for("httpd listening on port 80", listening, 10)
    else:
        assert wait_for("httpd gone (bind refused)", lambda: "httpd" not in ph.exec(cid, "ps")[1], 10)
        assert not listening()
