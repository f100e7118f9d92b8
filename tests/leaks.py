"""What a podhost instance can leave behind, looked for in the kernel and on disk.

Used by the integration fixtures after every test, and by the benchmarks. Each finding is a line that says
what leaked and where, so a failing test names the leak.

Processes are looked for twice: in the instance's cgroup parent, and by their mark (`PODHOST_OWNER=<instance
id>/<owner>` in the environment, podhost.runtime.procs). The second finds what the first cannot: a pause
killed with its daemon before it joined the pod cgroup, a conmon or OCI runtime (they run outside the pod
cgroups).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from pathlib import Path

from podhost.config import Config
from podhost.runtime import procs
from tests.wait import wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dirs(cgroup_parent: str) -> list[Path]:
    """Every directory below `cgroup_parent` in every mounted hierarchy (the parent itself excluded)."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / cgroup_parent.lstrip("/")
        if base.is_dir():
            found += [p for p in base.rglob("*") if p.is_dir()]
    return found


def processes_in(cgroup_parent: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / cgroup_parent.lstrip("/")
        if not base.is_dir():
            continue
        for procs_file in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in procs_file.read_text().split())
    return sorted(pids)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def bridge_ports(bridge: str) -> list[str]:
    brif = Path("/sys/class/net") / bridge / "brif"
    return sorted(os.listdir(brif)) if brif.is_dir() else []


def settled_bridge_ports(bridge: str, grace: float = 2.0) -> list[str]:
    """`bridge_ports`, given `grace` s to empty: the host end of a veth whose pod netns died without a CNI
    DEL inside it goes when the kernel's namespace cleanup (a workqueue) gets to it, not at once."""
    with contextlib.suppress(AssertionError):
        wait_for(f"{bridge}'s ports gone", lambda: not bridge_ports(bridge), grace)
    return bridge_ports(bridge)


def ipam_reservations(state_dir: Path) -> list[str]:
    """host-local's reservation files (one per allocated IP) under podhost's IPAM dir."""
    ipam = state_dir / "cni" / "ipam"
    if not ipam.is_dir():
        return []
    return sorted(
        str(p.relative_to(ipam))
        for p in ipam.rglob("*")
        if p.is_file() and not p.name.startswith(("last_reserved_ip", "lock"))
    )


def files_under(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


def instance_id_of(root: Path) -> str:
    """The instance id (`Config.instance_id`) of an instance made with `--root root` and no other paths."""
    config = Config()
    config.apply_root(root)
    return config.instance_id


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def await_exit(found: list[procs.Proc], timeout: float) -> None:
    """Wait (on pidfds, no polling loop) until every process in `found` has exited, at most `timeout` s."""
    poller = select.poll()
    pidfds = []
    for proc in found:
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            continue  # already gone
        pidfds.append(pidfd)
        poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        pending = set(pidfds)
        while pending and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                pending.discard(fd)
                poller.unregister(fd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


def marked_processes(instance_id: str, grace: float = 2.0) -> list[str]:
    """The live processes marked for `instance_id`, as "pid (comm) for owner" lines. A conmon may still be
    on its way out for a moment after its container's removal: those found get `grace` s to exit first."""
    if found := [proc for procs_of in procs.marked(instance_id).values() for proc in procs_of]:
        await_exit(found, grace)
    return [
        f"{proc.pid} ({comm(proc.pid)}) for {owner[:13]}"
        for owner, found in sorted(procs.marked(instance_id).items())
        for proc in found
    ]


#: Directories (relative to the instance root) that hold per-pod or per-container files only.
INSTANCE_FILE_DIRS = (
    "run/sandboxes",
    "run/containers",
    "run/runc-root",
    "run/exits",
    "run/attach",
    "run/records",
    "state/records",
    "state/containers",
    "state/cni/results",
)


def find_leaks(root: Path, bridge: str, cgroup_parent: str, instance_id: str | None = None) -> list[str]:
    """Everything a podhost instance rooted at `root` holds that should be gone once it has no pods.
    `instance_id` names its processes' marks; by default it is derived from `root` as Config does."""
    leaks = []
    if pids := processes_in(cgroup_parent):
        leaks.append(f"processes in cgroup {cgroup_parent}: {pids}")
    if marked := marked_processes(instance_id or instance_id_of(root)):
        leaks.append(f"marked processes: {marked[:10]}")
    if dirs := cgroup_dirs(cgroup_parent):
        leaks.append(f"cgroup dirs: {[str(d) for d in dirs[:5]]}")
    # The run dir's own tmpfs (the runtime mounts one where the run dir is on a disk) is the daemon's
    # while it runs and goes when it stops with no pod left; what is mounted below it counts.
    if mounts := [m for m in mounts_under(root) if m != str(root / "run")]:
        leaks.append(f"mounts: {mounts[:5]}")
    if ports := settled_bridge_ports(bridge):
        leaks.append(f"veths on {bridge}: {ports}")
    if ips := ipam_reservations(root / "state"):
        leaks.append(f"IPAM reservations: {ips}")
    for sub in INSTANCE_FILE_DIRS:
        if left := files_under(root / sub):
            leaks.append(f"files under {sub}: {left[:5]}")
    return leaks


PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")
PORTMAP_JUMPS = (
    ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
    [
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ],
)


def remove_idle_portmap_chains() -> bool:
    """portmap keeps its shared nat chains after the last DEL; drop them when no port mapping uses them
    (an empty CNI-HOSTPORT-DNAT), so a test run leaves the nat table as it found it. True if removed."""
    nat = ["iptables", "-w", "-t", "nat"]
    listing = subprocess.run([*nat, "-S", "CNI-HOSTPORT-DNAT"], capture_output=True, text=True)
    if listing.returncode != 0 or any(line.startswith("-A ") for line in listing.stdout.splitlines()):
        return False
    for jump in PORTMAP_JUMPS:
        while subprocess.run([*nat, "-D", *jump], capture_output=True).returncode == 0:
            pass
    for chain in PORTMAP_CHAINS:
        subprocess.run([*nat, "-F", chain], capture_output=True)
    for chain in PORTMAP_CHAINS:
        subprocess.run([*nat, "-X", chain], capture_output=True)
    return True
