"""The containerd peer harness: it comes up, runs a real pod through CRI, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path

import pytest

# bench/ and tests/ are not installed packages: import them from the checkout (a no-op once the pytest
# config puts the repository root on sys.path).
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench.containerd_peer import (  # noqa: E402
    BUSYBOX_IMAGE,
    CNI_CACHE_DIR,
    DEFAULT_CGROUP_PARENT,
    PAUSE_IMAGE,
    SHIM_SOCKET_DIR,
    ContainerdPeer,
    build_test_images,
    forward_chain,
    mounts_below,
    render_config,
)
from podhost.cri import api_pb2  # noqa: E402
from tests.leaks import cgroup_dirs, processes_in  # noqa: E402
from tests.wait import wait_for  # noqa: E402

# alone: checks machine-wide state that any other test run at the same time changes (/run/netns, containerd's shim sockets and CNI cache, ip_forward, the /podhost-ctrd-test cgroup (test_interop's containerd uses it too)),
# so test.sh runs it after the parallel part, by itself.
pytestmark = [pytest.mark.root, pytest.mark.alone]

BRIDGE = "phctrd0"
SUBNET = "10.235.0.0/16"


def _listing(path: Path) -> set[str]:
    return set(os.listdir(path)) if path.is_dir() else set()


def _pids_naming(root: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if str(root).encode() in raw:
            found.append(int(name))
    return found


def _zombie_children() -> list[str]:
    zombies = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] == "Z":
                zombies.append(stat[: stat.rindex(")") + 1])
    return zombies


def test_config_is_valid_toml_and_isolated() -> None:
    root = Path("/tmp/ph-ctrd-x")
    cfg = tomllib.loads(render_config(root, DEFAULT_CGROUP_PARENT))
    assert cfg["version"] == 2
    assert cfg["grpc"]["address"] == "/tmp/ph-ctrd-x/containerd.sock"
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE_IMAGE
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == "/tmp/ph-ctrd-x/cni/net.d"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    for key in ("root", "state", "temp"):
        assert cfg[key].startswith("/tmp/ph-ctrd-x/")


class _HostBefore:
    """What the host looked like before the peer started, for the after-stop comparison."""

    def __init__(self) -> None:
        self.shim_sockets = _listing(SHIM_SOCKET_DIR)
        self.cni_cache = _listing(CNI_CACHE_DIR)
        self.netns = _listing(Path("/run/netns"))
        self.ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
        # Only containerd makes these, and only the system containerd may own them.
        self.containerd_dirs = {
            d: d.exists() for d in (Path("/opt/containerd"), Path("/run/containerd/runc"))
        }


def _assert_nothing_left(root: Path, before: _HostBefore, veths: list[str]) -> None:
    assert not _pids_naming(root)
    assert not processes_in(DEFAULT_CGROUP_PARENT)
    assert not cgroup_dirs(DEFAULT_CGROUP_PARENT)
    assert not any(
        Path(h, DEFAULT_CGROUP_PARENT.strip("/")).exists() for h in Path("/sys/fs/cgroup").iterdir()
    )
    assert not mounts_below(Path("/proc/self/mountinfo").read_text(), root)
    assert not root.exists()
    assert not Path(f"/sys/class/net/{BRIDGE}").exists()
    assert not [v for v in veths if Path(f"/sys/class/net/{v}").exists()]
    assert _listing(Path("/run/netns")) == before.netns
    assert _listing(SHIM_SOCKET_DIR) <= before.shim_sockets
    assert _listing(CNI_CACHE_DIR) <= before.cni_cache
    rules = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True, text=True, check=True).stdout
    assert forward_chain(BRIDGE) not in rules
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before.ip_forward
    assert {d: d.exists() for d in before.containerd_dirs} == before.containerd_dirs
    assert not _zombie_children()


def _sandbox_config(peer: ContainerdPeer, root: Path, name: str) -> api_pb2.PodSandboxConfig:
    uid = uuid.uuid4().hex
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name,
        log_directory=str(root / "logs" / uid),
        dns_config=api_pb2.DNSConfig(servers=["127.0.0.1"]),
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=peer.pod_cgroup_parent(uid),
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(
                    network=api_pb2.POD, pid=api_pb2.CONTAINER, ipc=api_pb2.POD
                )
            ),
        ),
    )


def _start_sleeper(peer: ContainerdPeer, pod_id: str, sandbox_config: api_pb2.PodSandboxConfig) -> str:
    container_config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="sleeper"),
        image=api_pb2.ImageSpec(image=BUSYBOX_IMAGE),
        command=["sleep", "1000"],
        log_path="sleeper.log",
        linux=api_pb2.LinuxContainerConfig(
            security_context=api_pb2.LinuxContainerSecurityContext(
                namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)
            )
        ),
    )
    ctr_id: str = peer.runtime.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=container_config, sandbox_config=sandbox_config
        ),
        timeout=30,
    ).container_id
    peer.runtime.StartContainer(api_pb2.StartContainerRequest(container_id=ctr_id), timeout=30)
    return ctr_id


def test_pod_through_cri_and_nothing_left() -> None:
    before = _HostBefore()
    root = Path(tempfile.mkdtemp(prefix="ph-ctrd-", dir="/tmp"))  # from here on, stop() removes it
    scenario_start = time.monotonic()

    with ContainerdPeer(root, BRIDGE, SUBNET) as peer:
        print(f"\ncontainerd start (until CRI Version answers): {peer.start_seconds:.3f} s")
        version = peer.runtime.Version(api_pb2.VersionRequest(), timeout=5)
        assert version.runtime_name == "containerd"
        for tar in build_test_images(root / "images").values():
            peer.import_image(tar)

        sandbox_config = _sandbox_config(peer, root, "peer-pod")
        t0 = time.monotonic()
        pod_id = peer.runtime.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=sandbox_config), timeout=30
        ).pod_sandbox_id
        print(f"RunPodSandbox: {time.monotonic() - t0:.3f} s")
        ctr_id = _start_sleeper(peer, pod_id, sandbox_config)

        hostname = peer.runtime.ExecSync(
            api_pb2.ExecSyncRequest(container_id=ctr_id, cmd=["hostname"], timeout=10), timeout=15
        )
        assert hostname.exit_code == 0, hostname.stderr
        assert hostname.stdout.decode().strip() == "peer-pod"
        addr = peer.runtime.ExecSync(
            api_pb2.ExecSyncRequest(container_id=ctr_id, cmd=["ip", "addr"], timeout=10), timeout=15
        )
        assert addr.exit_code == 0, addr.stderr
        assert "inet 10.235." in addr.stdout.decode()

        veths = os.listdir(f"/sys/class/net/{BRIDGE}/brif")
        assert veths, "the pod's veth is not on the bridge"
        assert processes_in(DEFAULT_CGROUP_PARENT), "pause and the container run under our cgroup parent"
        assert mounts_below(Path("/proc/self/mountinfo").read_text(), root), "rootfs and netns mounts"

        peer.runtime.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        peer.runtime.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=30)
        assert not peer.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=5).items
    print(f"whole scenario (start, images, pod, stop, cleanup): {time.monotonic() - scenario_start:.3f} s")
    _assert_nothing_left(root, before, veths)


def test_stop_cleans_up_after_containerd_was_killed_with_pods_running() -> None:
    """A crashed peer: containerd gone, shims, pause and containers still running, nothing removed."""
    before = _HostBefore()
    root = Path(tempfile.mkdtemp(prefix="ph-ctrd-", dir="/tmp"))  # from here on, stop() removes it
    peer = ContainerdPeer(root, BRIDGE, SUBNET)
    try:
        peer.start()
        for tar in build_test_images(root / "images").values():
            peer.import_image(tar)
        sandbox_config = _sandbox_config(peer, root, "crash-pod")
        pod_id = peer.runtime.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=sandbox_config), timeout=30
        ).pod_sandbox_id
        _start_sleeper(peer, pod_id, sandbox_config)
        veths = os.listdir(f"/sys/class/net/{BRIDGE}/brif")
        containerd = peer.pid
        assert containerd is not None
        os.kill(containerd, signal.SIGKILL)
        # A Go process is reapable only once all its threads are gone.
        wait_for("containerd reaped", lambda: peer.pid is None, 10, interval=0.01)
        assert processes_in(DEFAULT_CGROUP_PARENT)
    finally:
        peer.stop()
    _assert_nothing_left(root, before, veths)
