"""What a podhost instance can leave behind, looked for in the kernel and on disk.

Used by the integration fixtures after every test, and by the benchmarks. Each finding is a line that says
what leaked and where, so a failing test names the leak.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

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
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def bridge_ports(bridge: str) -> list[str]:
    brif = Path("/sys/class/net") / bridge / "brif"
    return sorted(os.listdir(brif)) if brif.is_dir() else []


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


def find_leaks(root: Path, bridge: str, cgroup_parent: str) -> list[str]:
    """Everything a podhost instance rooted at `root` holds that should be gone once it has no pods."""
    leaks = []
    if pids := processes_in(cgroup_parent):
        leaks.append(f"processes in cgroup {cgroup_parent}: {pids}")
    if dirs := cgroup_dirs(cgroup_parent):
        leaks.append(f"cgroup dirs: {[str(d) for d in dirs[:5]]}")
    if mounts := mounts_under(root):
        leaks.append(f"mounts: {mounts[:5]}")
    if ports := bridge_ports(bridge):
        leaks.append(f"veths on {bridge}: {ports}")
    if ips := ipam_reservations(root / "state"):
        leaks.append(f"IPAM reservations: {ips}")
    for sub in ("run/sandboxes", "run/containers", "state/records", "state/containers", "state/cni/results"):
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
