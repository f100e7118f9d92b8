"""The pod bridge of the built-in network, removed when a daemon stops with no pods left.

The CNI bridge plugin creates the bridge at the first ADD and never removes it: DEL leaves it for the
next pod (containerd and CRI-O leave it too, but they run once per node; podhost instances come and go
with their roots, and each one's bridge would stay behind with its gateway address and route).

Ours means: the built-in conflist names it (`Config.bridge`; a conflist from the config dir is the
operator's, and so is its bridge), it is a bridge, it has no ports (a veth still on it belongs to a pod
or an attachment kept for a DEL retry), and it carries an address inside `Config.subnet`, the gateway
the bridge plugin gave it. A same-named bridge someone else made has no such address and is kept.

Must never: remove a bridge with ports, or one without an address in the instance's subnet.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYS_NET = Path("/sys/class/net")
_TIMEOUT = 30.0


def addresses_from_ip_json(text: str) -> list[str]:
    """The addresses (no prefix) in `ip -j addr show dev X` output."""
    try:
        links: Any = json.loads(text or "[]")
    except ValueError:
        return []
    found = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if isinstance(info, dict) and isinstance(info.get("local"), str):
                found.append(info["local"])
    return found


def is_ours(addresses: list[str], subnet: str) -> bool:
    """True when one of the bridge's addresses lies in the instance's pod subnet (its gateway)."""
    network = ipaddress.ip_network(subnet, strict=False)
    for address in addresses:
        try:
            if ipaddress.ip_address(address.split("%")[0]) in network:
                return True
        except ValueError:
            continue
    return False


def delete_argv(bridge: str) -> list[str]:
    return ["ip", "link", "del", "dev", bridge, "type", "bridge"]


def remove_if_unused(bridge: str, subnet: str, sys_net: Path = SYS_NET) -> bool:
    """Delete `bridge` if it is ours and has no ports (module docstring); True if it was deleted."""
    device = sys_net / bridge
    if not (device / "bridge").is_dir():
        return False  # gone already, never made (no pod ever ran), or not a bridge
    ports = sorted(p.name for p in (device / "brif").iterdir()) if (device / "brif").is_dir() else []
    if ports:
        log.info("bridge %s kept: ports %s are still on it", bridge, ", ".join(ports))
        return False
    try:
        shown = subprocess.run(
            ["ip", "-j", "addr", "show", "dev", bridge], capture_output=True, text=True, timeout=_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("bridge %s kept: cannot read its addresses: %s", bridge, e)
        return False
    if not is_ours(addresses_from_ip_json(shown.stdout), subnet):
        log.info("bridge %s kept: it has no address in %s, so this instance did not make it", bridge, subnet)
        return False
    try:
        proc = subprocess.run(delete_argv(bridge), capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("bridge %s: cannot delete it: %s", bridge, e)
        return False
    if proc.returncode != 0:
        log.warning("bridge %s: cannot delete it: %s", bridge, proc.stderr.strip())
        return False
    log.info("bridge %s removed (no pods left)", bridge)
    return True
