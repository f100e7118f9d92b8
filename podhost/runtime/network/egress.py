"""The node-only egress guard: pod traffic may reach this node, never be routed off it or into it.

Owns one iptables chain per pod bridge, `PODHOST-FWD-<bridge>` in the filter table, jumped to from the
top of FORWARD. It DROPs packets forwarded from the bridge to any other interface and from any other
interface into the bridge. Pod-to-pod traffic on the bridge (in == out == bridge) and pod-to-node
traffic (INPUT/OUTPUT, not FORWARD) are untouched. The second half of the policy,
net.ipv4.ip_forward back to 0 after the bridge plugin turned it on, is also here.

Installed once at daemon start (one `iptables-restore --noflush` for the chain plus a check/insert of the
jump), so the pod hot path never runs iptables. Argument lists and the restore text are pure functions.

Must never: add NAT or masquerade rules, touch chains it does not own, or flush FORWARD.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from podhost.errors import InvalidArgument, RuntimeFailure

log = logging.getLogger(__name__)

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_CHAIN_PREFIX = "PODHOST-FWD-"
_MAX_CHAIN = 28  # iptables chain names are at most 28 characters
_TIMEOUT = 30.0


def chain_name(bridge: str) -> str:
    name = _CHAIN_PREFIX + bridge
    if not bridge or len(name) > _MAX_CHAIN or any(c.isspace() for c in bridge):
        raise InvalidArgument(f"bridge name {bridge!r} cannot name an iptables chain ({name})")
    return name


def restore_input(bridge: str) -> str:
    """iptables-restore text that (re)creates the guard chain. Declaring a user chain in a --noflush
    restore empties it first, so running this twice leaves exactly the two rules."""
    chain = chain_name(bridge)
    return "\n".join(
        [
            "*filter",
            f":{chain} - [0:0]",
            f"-A {chain} -i {bridge} ! -o {bridge} -m comment --comment podhost-node-only -j DROP",
            f"-A {chain} ! -i {bridge} -o {bridge} -m comment --comment podhost-node-only -j DROP",
            "COMMIT",
            "",
        ]
    )


def restore_argv(iptables_restore: str) -> list[str]:
    return [iptables_restore, "-w", "--noflush"]


def jump_argv(iptables: str, action: str, bridge: str) -> list[str]:
    """`-C` (exists?), `-I` (insert at the top) or `-D` (delete) the FORWARD jump to the guard chain."""
    if action not in ("-C", "-I", "-D"):
        raise ValueError(action)
    position = ["1"] if action == "-I" else []
    return [iptables, "-w", action, "FORWARD", *position, "-j", chain_name(bridge)]


def chain_argv(iptables: str, action: str, bridge: str) -> list[str]:
    """`-F` (flush) or `-X` (delete) the guard chain."""
    if action not in ("-F", "-X"):
        raise ValueError(action)
    return [iptables, "-w", action, chain_name(bridge)]


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeFailure(f"egress guard: {name} not found")
    return found


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv,
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeFailure(f"egress guard: {argv[0]}: {e}") from e


def ensure(bridge: str) -> None:
    """Install (or repair) the guard for `bridge`. Idempotent."""
    iptables = _binary("iptables")
    proc = _run(restore_argv(_binary("iptables-restore")), restore_input(bridge))
    if proc.returncode != 0:
        raise RuntimeFailure(f"egress guard: iptables-restore failed: {proc.stderr.decode().strip()}")
    if _run(jump_argv(iptables, "-C", bridge)).returncode != 0:
        proc = _run(jump_argv(iptables, "-I", bridge))
        if proc.returncode != 0:
            raise RuntimeFailure(f"egress guard: cannot jump to the chain: {proc.stderr.decode().strip()}")
    log.info("egress guard for bridge %s installed (chain %s)", bridge, chain_name(bridge))


def remove(bridge: str) -> None:
    """Remove the guard for `bridge`: every FORWARD jump to the chain, then the chain. Idempotent."""
    iptables = _binary("iptables")
    for _ in range(16):  # more than one jump only if someone inserted duplicates by hand
        if _run(jump_argv(iptables, "-D", bridge)).returncode != 0:
            break
    _run(chain_argv(iptables, "-F", bridge))
    proc = _run(chain_argv(iptables, "-X", bridge))
    if proc.returncode != 0 and b"No chain" not in proc.stderr and b"does not exist" not in proc.stderr:
        raise RuntimeFailure(f"egress guard: cannot delete chain: {proc.stderr.decode().strip()}")
    log.info("egress guard for bridge %s removed", bridge)


def disable_ip_forward(log_id: str) -> None:
    """Put net.ipv4.ip_forward back to 0: node-local pod traffic is bridged or delivered locally and
    never needs routing; the bridge plugin (isGateway) sets it to 1 on every ADD."""
    try:
        if IP_FORWARD.read_bytes().strip() != b"0":
            IP_FORWARD.write_bytes(b"0\n")
            log.debug("%s: net.ipv4.ip_forward set back to 0 (pod_egress=node-only)", log_id)
    except OSError as e:
        log.warning("%s: cannot reset net.ipv4.ip_forward: %s", log_id, e)
