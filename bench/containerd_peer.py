"""An isolated containerd 1.6 (with its CRI plugin) to compare podhost against, for benchmarks and interop.

What it owns: one containerd process started from Debian's binary with a config.toml of our own, and every
kernel object that instance makes: its root (config, content, snapshots, state, CNI conf, IPAM, logs), its
socket, the shims it starts, their sandboxes and containers, the CNI bridge, one iptables chain, the cgroup
dirs under its cgroup parent and the mounts under its root. `stop()` (and `cleanup_leftovers()` for a run
that crashed) puts every one of them back.

What it must never do: touch the system containerd (/run/containerd/containerd.sock, /var/lib/containerd,
its systemd unit), kill a process that does not name this peer's root in its command line or live in this
peer's cgroup parent, reap a child it cannot prove is the peer's, NAT anything, or send traffic anywhere.

Theory of operation.
- Isolation is by path: root/state/temp, the gRPC and ttrpc sockets, runc's state dir, the CNI conf dir and
  the IPAM dir all live under `root`; netns files go under the state dir (`netns_mounts_under_state_dir`),
  so every mount the peer makes is below `root`. The root belongs to the peer: start() empties it first.
  containerd itself runs in `<cgroup parent>/containerd` and the shims it spawns inherit that cgroup, so
  everything the peer runs is found under the cgroup parent. Two things containerd 1.6 cannot move: shim
  sockets (always /run/containerd/s/<sha256 of our socket/namespace/id>, so they cannot collide with
  anyone's) and libcni's result cache (/var/lib/cni/results/<network>-<id>-<ifname>, our network name).
  Both are removed by their owners on a clean exit, and by `cleanup_leftovers()` after a crash; those host
  dirs are removed again at stop() when this peer created them and they are empty.
- Pods must be given a cgroup parent below ours (`pod_cgroup_parent(uid)`): a sandbox with none would be
  put at the top of every hierarchy.
- Reaping. A shim daemonizes (its `start` parent exits), so it is re-parented to the nearest subreaper.
  PID 1 here never reaps, so the harness process makes itself a child subreaper and reaps zombies of its
  own children that are provably ours: comm `containerd-shim`, or a PID seen alive in our cgroup parent.
  It never reaps anything else (podhost's pause and conmon may be children of the same process).
- Network. The bridge plugin turns net.ipv4.ip_forward on; the peer records the value at start and puts it
  back at stop. While it runs, one chain of ours drops every packet routed into or out of the bridge, so a
  pod can talk to the host and to pods on the same bridge, never beyond. No NAT rule is ever written
  (`ipMasq` is false and no pod here asks for port mappings).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from podhost.cri import api_pb2, api_pb2_grpc
from podhost.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from podhost.runtime import mount
from podhost.runtime.image.build import test_image_archives
from podhost.runtime.procs import become_subreaper

log = logging.getLogger(__name__)

PAUSE_IMAGE = "localhost/podhost/pause:3.10"
BUSYBOX_IMAGE = "localhost/podhost/busybox:latest"
DEFAULT_CGROUP_PARENT = "/podhost-ctrd-test"
#: The containerd namespace the CRI plugin serves; images for pods must be imported into it.
K8S_NAMESPACE = "k8s.io"
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: containerd 1.6 puts every shim socket here, whatever its own state dir (runtime/v2/shim SocketAddress).
SHIM_SOCKET_DIR = Path("/run/containerd/s")
#: libcni's result cache; containerd 1.6 has no setting to move it. Files are named <network>-<id>-<ifname>.
CNI_CACHE_DIR = Path("/var/lib/cni/results")
#: containerd brings "lo" up through a network of this name (its own, not in our conflist).
LOOPBACK_NETWORK = "cni-loopback"
#: Host directories the peer's shims and CNI create when missing; removed again (when empty) if we made them.
HOST_DIRS = (Path("/run/containerd"), SHIM_SOCKET_DIR, Path("/var/lib/cni"), CNI_CACHE_DIR)

START_TIMEOUT = 20.0
TERM_TIMEOUT = 10.0
CRI_TIMEOUT = 30.0

#: Plugins the CRI plugin does not need here: other snapshotters, /opt/containerd (it would create that
#: directory on the host), the restart monitor and cgroup metrics. io.containerd.runtime.v1.linux stays:
#: tasks-service (and so CRI) fails to load without it.
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.monitor.v1.cgroups",
)

#: comm names (15 chars at most) of processes whose zombies the harness may reap without having seen them
#: alive: only the shim, whose name nothing else in podhost uses.
_REAPABLE_COMMS = frozenset({"containerd-shim"})


# ---------------------------------------------------------------------------------------------------------
# Pure builders: the config, the CNI conflist and every command line. No I/O.


def _toml_str(value: str | Path) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(str(value))


def render_config(root: Path, cgroup_parent: str) -> str:
    """containerd config version 2 for a peer rooted at `root` (keys as `containerd config default` of
    1.6.20 names them; the CRI ones are documented in docs/cri/config.md of release/1.6)."""
    disabled = ", ".join(_toml_str(p) for p in DISABLED_PLUGINS)
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""\
# Written by bench.containerd_peer: an isolated containerd for podhost's benchmarks and interop tests.
version = 2
root = {_toml_str(root / "root")}
state = {_toml_str(root / "state")}
temp = {_toml_str(root / "tmp")}
oom_score = 0
disabled_plugins = [{disabled}]

[grpc]
  address = {_toml_str(root / "containerd.sock")}
  tcp_address = ""

[ttrpc]
  address = {_toml_str(root / "containerd.sock.ttrpc")}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[cgroup]
  path = {_toml_str(cgroup_parent.rstrip("/") + "/containerd")}

[plugins]
  {cri}
    sandbox_image = {_toml_str(PAUSE_IMAGE)}
    # Lowering oom_score_adj below our own fails on this machine (DESIGN.md): clamp instead.
    restrict_oom_score_adj = true
    enable_unprivileged_ports = false
    enable_unprivileged_icmp = false
    disable_apparmor = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    systemd_cgroup = false
    # netns files under our state dir, not /var/run/netns: every mount of ours stays below the root.
    netns_mounts_under_state_dir = true

    {cri[:-1]}.cni]
      bin_dir = {_toml_str(CNI_BIN_DIR)}
      conf_dir = {_toml_str(root / "cni" / "net.d")}
      max_conf_num = 1

    {cri[:-1]}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      {cri[:-1]}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        {cri[:-1]}.containerd.runtimes.runc.options]
          SystemdCgroup = false
          # runc's state dir; the default /run/containerd/runc/<namespace> is shared with the system's.
          Root = {_toml_str(root / "runc")}
"""


def network_name(bridge: str) -> str:
    """The CNI network name; it names host-local's IPAM subdir and libcni's cache files, so it is ours."""
    return f"ph-{bridge}"


def cni_conflist(bridge: str, subnet: str, ipam_dir: Path) -> dict[str, Any]:
    """The same shape as podhost's built-in network (bridge + host-local + portmap, ipMasq false).
    containerd brings up "lo" itself, so no loopback plugin is listed."""
    return {
        "cniVersion": "1.0.0",
        "name": network_name(bridge),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_argv(config: Path) -> list[str]:
    return ["containerd", "--config", str(config)]


def ctr_import_argv(socket: Path, tar_path: Path) -> list[str]:
    return ["ctr", "--address", str(socket), "-n", K8S_NAMESPACE, "images", "import", str(tar_path)]


def forward_chain(bridge: str) -> str:
    """Our iptables chain (28 characters at most)."""
    return f"PH-FWD-{bridge}"[:28]


def iptables_argv(*args: str) -> list[str]:
    return ["iptables", "-w", "5", *args]


def forward_guard_argvs(bridge: str) -> list[list[str]]:
    """Commands that make the chain: traffic staying on the bridge returns (br_netfilter shows bridged
    frames to FORWARD as in=out=bridge), everything routed through the bridge is dropped."""
    chain = forward_chain(bridge)
    return [
        iptables_argv("-N", chain),
        iptables_argv("-A", chain, "-i", bridge, "-o", bridge, "-j", "RETURN"),
        iptables_argv("-A", chain, "-j", "DROP"),
        iptables_argv("-I", "FORWARD", "1", "-i", bridge, "-j", chain),
        iptables_argv("-I", "FORWARD", "1", "-o", bridge, "-j", chain),
    ]


def forward_jump_delete_argvs(bridge: str) -> list[list[str]]:
    """Commands that remove the jumps from FORWARD (each once; repeat until they fail)."""
    chain = forward_chain(bridge)
    return [
        iptables_argv("-D", "FORWARD", "-i", bridge, "-j", chain),
        iptables_argv("-D", "FORWARD", "-o", bridge, "-j", chain),
    ]


def forward_chain_delete_argvs(bridge: str) -> list[list[str]]:
    chain = forward_chain(bridge)
    return [iptables_argv("-F", chain), iptables_argv("-X", chain)]


def shim_socket_path(containerd_socket: Path, namespace: str, task_id: str) -> Path:
    """Where containerd 1.6 puts a shim's socket: /run/containerd/s/<sha256 of address/namespace/id>."""
    digest = hashlib.sha256(f"{containerd_socket}/{namespace}/{task_id}".encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


def cni_cache_files(listing: list[str], bridge: str, sandbox_ids: set[str]) -> list[str]:
    """Names in libcni's result cache that belong to this peer: every entry of our network, and the
    loopback entries of the sandboxes that those (or `sandbox_ids`) name."""
    ours = network_name(bridge) + "-"
    ids = set(sandbox_ids)
    for name in listing:
        if name.startswith(ours):
            ids.add(name[len(ours) :].rsplit("-", 1)[0])
    loopback = tuple(f"{LOOPBACK_NETWORK}-{i}-" for i in ids)
    return sorted(n for n in listing if n.startswith((ours, *loopback)))


def names_root(argv: list[str], root: Path) -> bool:
    """True when a command line passes a path inside `root` as one of its arguments."""
    prefix = str(root).rstrip("/") + "/"
    return any(a.startswith(prefix) for a in argv[1:])


def shim_task(argv: list[str]) -> tuple[str, str] | None:
    """(namespace, id) from a containerd-shim-runc-v2 command line, None for any other program."""
    if not argv or not os.path.basename(argv[0]).startswith("containerd-shim"):
        return None
    opts = dict(zip(argv[1::2], argv[2::2], strict=False))
    if "-id" not in opts:
        return None
    return opts.get("-namespace", ""), opts["-id"]


def _unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (three octal digits)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_below(mountinfo: str, root: Path) -> list[str]:
    """Mount points at or under `root`, in mount order (unmount them reversed)."""
    prefix = str(root).rstrip("/")
    points = [_unescape_mountinfo(line.split(" ")[4]) for line in mountinfo.splitlines() if line]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


# ---------------------------------------------------------------------------------------------------------
# Test images: the pause image and a busybox image, packed as OCI-layout tarballs.


def pause_binary() -> Path:
    return Path(__file__).resolve().parents[1] / "podhost" / "pause" / "bin" / "pause"


def build_test_images(workdir: Path) -> dict[str, Path]:
    """OCI-layout tarballs of podhost's own test images (pause, busybox, the demo look-alikes), byte for
    byte what podhost's store holds, so both runtimes run the same bits under the same image ids."""
    return test_image_archives(workdir, pause_binary())


# ---------------------------------------------------------------------------------------------------------
# Reading /proc and /sys.


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    comm = data[data.index(b"(") + 1 : data.rindex(b")")].decode(errors="replace")
    fields = data[data.rindex(b")") + 2 :].split()
    return comm, fields[0].decode(), int(fields[1])


def _settled(pid: int) -> bool:
    """Gone, or a zombie whose (live) parent is not us and will reap it."""
    st = _stat(pid)
    return st is None or (st[1] == "Z" and st[2] != os.getpid())


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _my_children() -> list[int]:
    kids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """The parent and every directory below it in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / cgroup_parent.strip("/")
        if base.is_dir():
            found.append(base)
            found += [p for p in base.rglob("*") if p.is_dir()]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids_in(cgroup_parent: str) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(cgroup_parent):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    return pids


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeFailure(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _umount(path: str) -> None:
    try:
        mount.umount(path, mount.MNT_DETACH)  # False (quietly) when it is no mount point or gone
    except mount.MountError as e:
        log.warning("%s", e)


# ---------------------------------------------------------------------------------------------------------


class ContainerdPeer:
    """One containerd with the CRI plugin, isolated by root, socket, bridge, subnet and cgroup parent."""

    def __init__(
        self, root: Path, bridge: str, subnet: str, cgroup_parent: str = DEFAULT_CGROUP_PARENT
    ) -> None:
        self.root = Path(root)
        if not self.root.is_absolute() or len(self.root.parts) < 3:
            # The root is emptied and everything naming it is killed: never "/", "/tmp" or a relative path.
            raise InvalidArgument(f"containerd peer root must be an absolute path two levels deep: {root}")
        if not cgroup_parent.strip("/"):
            raise InvalidArgument("containerd peer needs a cgroup parent of its own, not the root cgroup")
        self.bridge = bridge
        self.subnet = subnet
        self.cgroup_parent = "/" + cgroup_parent.strip("/")
        self.config_path = self.root / "config.toml"
        self.log_path = self.root / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._ip_forward_before: str | None = None
        self._known_pids: set[int] = set()
        self._host_dirs_made: list[Path] = []
        self._reaper_stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.start_seconds = 0.0  # how long the last start() waited for CRI to answer

    # -- addresses ----------------------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        """containerd's PID while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def pod_cgroup_parent(self, pod_uid: str) -> str:
        """The cgroup parent to give a pod (LinuxPodSandboxConfig.cgroup_parent) so it stays under ours."""
        return f"{self.cgroup_parent}/pod{pod_uid}"

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.endpoint)
        return self._channel

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self.channel)

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self.channel)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> ContainerdPeer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config and the CNI conflist, guard forwarding, start containerd and wait for CRI."""
        if self._proc is not None:
            raise FailedPrecondition(f"containerd peer at {self.root} is already running")
        self.cleanup_leftovers()
        try:
            self._prepare()
            self._launch()
        except BaseException:
            self.stop()
            raise
        log.info("containerd peer %s: CRI answered after %.3f s", self.root, self.start_seconds)

    def _prepare(self) -> None:
        """Everything containerd needs before it starts; each piece is one stop() removes."""
        become_subreaper()
        self._host_dirs_made = [d for d in HOST_DIRS if not d.exists()]
        self._ip_forward_before = IP_FORWARD.read_text().strip()
        self._start_reaper()
        for d in ("root", "state", "tmp", "cni/net.d", "ipam", "logs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.root, self.cgroup_parent))
        conflist = cni_conflist(self.bridge, self.subnet, self.root / "ipam")
        (self.root / "cni" / "net.d" / "10-podhost.conflist").write_text(json.dumps(conflist, indent=2))
        for argv in forward_guard_argvs(self.bridge):
            _run(argv)

    def _launch(self) -> None:
        started = time.monotonic()
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                containerd_argv(self.config_path),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("containerd peer %s: started pid %d", self.root, self._proc.pid)
        self._wait_ready(started)
        self.start_seconds = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        last = ""
        while time.monotonic() - started < START_TIMEOUT:
            if self._proc.poll() is not None:
                last = f"containerd exited with {self._proc.returncode}"
                break
            if self.socket.exists():
                try:
                    self.runtime.Version(api_pb2.VersionRequest(), timeout=1.0)
                    return
                except grpc.RpcError as e:
                    last = f"Version: {e.code()}"
            time.sleep(0.02)
        else:
            last = last or "socket never appeared"
        raise RuntimeFailure(
            f"containerd peer at {self.root} did not come up ({last}); log:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def import_image(self, tar_path: Path) -> None:
        """Import an OCI-layout (or docker-archive) tarball into the k8s.io namespace, where CRI sees it."""
        if self._proc is None:
            raise FailedPrecondition("containerd peer is not running")
        _run(ctr_import_argv(self.socket, Path(tar_path)))

    def stop(self) -> None:
        """Remove every pod through CRI, stop containerd, then tear down whatever is left. Idempotent."""
        if self._proc is not None and self._proc.poll() is None:
            self._remove_all_pods()
        elif self._proc is not None:
            log.warning(
                "containerd peer %s: containerd had exited (%s); log:\n%s",
                self.root,
                self._proc.returncode,
                self.log_tail(),
            )
        self._close_channel()
        if self._proc is not None:
            self._terminate(self._proc)
            self._proc = None
        self.cleanup_leftovers()
        if self._ip_forward_before is not None:
            IP_FORWARD.write_text(self._ip_forward_before)
            self._ip_forward_before = None
        for d in reversed(self._host_dirs_made):
            with contextlib.suppress(OSError):  # not empty: someone else uses it now
                d.rmdir()
        self._host_dirs_made = []
        self._stop_reaper()

    def _remove_all_pods(self) -> None:
        try:
            pods = self.runtime.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=CRI_TIMEOUT).items
        except grpc.RpcError as e:
            log.warning(
                "containerd peer %s: ListPodSandbox: %s; log:\n%s", self.root, e.code(), self.log_tail()
            )
            return
        for pod in pods:
            for verb, req in (
                ("StopPodSandbox", api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id)),
                ("RemovePodSandbox", api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id)),
            ):
                try:
                    getattr(self.runtime, verb)(req, timeout=CRI_TIMEOUT)
                except grpc.RpcError as e:
                    log.warning("containerd peer %s: %s %s: %s", self.root, verb, pod.id[:12], e.details())

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(TERM_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning(
                    "containerd peer %s: no exit %.0f s after SIGTERM, killing", self.root, TERM_TIMEOUT
                )
                proc.kill()
                proc.wait()

    def cleanup_leftovers(self) -> None:
        """Tear down everything a peer with this root, bridge and cgroup parent may have left, even from a
        run that crashed: processes, zombies, shim sockets, mounts, bridge, chain, cgroup dirs, the root."""
        self._kill_leftover_processes()
        mountinfo = Path("/proc/self/mountinfo").read_text()
        for point in reversed(mounts_below(mountinfo, self.root)):
            _umount(point)
        if Path("/sys/class/net", self.bridge).exists():
            _run(["ip", "link", "del", self.bridge], check=False)
        for argv in forward_jump_delete_argvs(self.bridge):
            for _ in range(10):  # a crashed run followed by a failed start may have inserted it twice
                if _run(argv, check=False).returncode != 0:
                    break
        for argv in forward_chain_delete_argvs(self.bridge):
            _run(argv, check=False)
        self._remove_cgroup_dirs()
        if self.root.exists():
            shutil.rmtree(self.root)

    def _kill_leftover_processes(self) -> None:
        """SIGKILL (by PID) every process naming our root and every process in our cgroups, reap the ones
        re-parented to us, and remove the sockets of the shims among them."""
        victims: set[int] = set(_pids_in(self.cgroup_parent))
        sandbox_ids: set[str] = set()
        for pid in _all_pids():
            argv = _cmdline(pid)
            if not argv or not names_root(argv, self.root):
                continue
            victims.add(pid)
            task = shim_task(argv)
            if task is not None:
                sandbox_ids.add(task[1])
                with contextlib.suppress(FileNotFoundError):
                    shim_socket_path(self.socket, *task).unlink()
        if CNI_CACHE_DIR.is_dir():
            for name in cni_cache_files(os.listdir(CNI_CACHE_DIR), self.bridge, sandbox_ids):
                with contextlib.suppress(FileNotFoundError):
                    (CNI_CACHE_DIR / name).unlink()
        victims.discard(os.getpid())
        self._known_pids |= victims
        for pid in victims:
            log.info("containerd peer %s: killing leftover pid %d %s", self.root, pid, _cmdline(pid)[:3])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while True:
            self.reap_zombies()
            # Settled: gone, or a zombie some other live parent will reap (a zombie of ours is reaped above
            # once all its threads are gone; until then it still counts).
            unsettled = [p for p in victims if not _settled(p)]
            strays = [p for p in _pids_in(self.cgroup_parent) if p not in victims]
            if not (unsettled or strays) or time.monotonic() > deadline:
                break
            victims.update(strays)
            self._known_pids.update(strays)
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        if unsettled or strays:
            log.warning("containerd peer %s: not gone after SIGKILL: %s", self.root, unsettled + strays)
        self._drain_zombies()

    def _remove_cgroup_dirs(self) -> None:
        """rmdir the cgroup parent and all below it, deepest first; a dir just emptied may be busy briefly."""
        deadline = time.monotonic() + 5.0
        while dirs := _cgroup_dirs(self.cgroup_parent):
            for d in dirs:
                with contextlib.suppress(FileNotFoundError, OSError):
                    d.rmdir()
            if time.monotonic() > deadline:
                log.warning("containerd peer %s: cgroup dirs left: %s", self.root, dirs[:3])
                return
            if _cgroup_dirs(self.cgroup_parent):
                time.sleep(0.02)

    # -- reaping ------------------------------------------------------------------------------------------

    def reap_zombies(self) -> list[int]:
        """Reap zombie children of this process that are provably the peer's; return their PIDs."""
        reaped = []
        for pid in self._our_zombies():
            with contextlib.suppress(ChildProcessError):
                # 0 while a multithreaded (Go) process's other threads are still exiting: try again later.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
                    self._known_pids.discard(pid)
        return reaped

    def _our_zombies(self) -> list[int]:
        me = os.getpid()
        found = []
        for pid in _my_children():
            st = _stat(pid)
            if st is None or st[1] != "Z" or st[2] != me:
                continue
            if st[0] in _REAPABLE_COMMS or pid in self._known_pids:
                found.append(pid)
        return found

    def _drain_zombies(self, timeout: float = 5.0) -> None:
        """Reap until no zombie of ours is left: a shim that exited just now may not be reapable yet."""
        deadline = time.monotonic() + timeout
        while True:
            self.reap_zombies()
            if not self._our_zombies():
                return
            if time.monotonic() > deadline:
                log.warning("containerd peer %s: zombies not reapable: %s", self.root, self._our_zombies())
                return
            time.sleep(0.01)

    def _start_reaper(self) -> None:
        """Shims exit (and become our zombies) whenever a pod is removed; reap them as we go."""
        if self._reaper is not None:
            return
        self._reaper_stop.clear()

        def loop() -> None:
            while not self._reaper_stop.wait(0.5):
                self.reap_zombies()

        self._reaper = threading.Thread(target=loop, name=f"ctrd-peer-reaper-{self.bridge}", daemon=True)
        self._reaper.start()

    def _stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper_stop.set()
            self._reaper.join(timeout=2)
            self._reaper = None
