"""Reading a CNI result: which addresses the pod got.

Owns the interpretation of result formats 1.0.0 and 0.3.x/0.4.0 (`interfaces` + `ips`, each IP naming its
interface by index; 0.3/0.4 add a `version` key per IP) and the legacy 0.1/0.2 form (`ip4`/`ip6`).
Must never: execute anything or change a result; the raw result is stored as the plugins returned it.

Only addresses on interfaces inside the sandbox count (an interface with a `sandbox` key): the bridge
plugin also lists the host-side bridge and veth, which are not the pod's.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def pod_ips(result: dict[str, Any] | None) -> list[str]:
    """The pod's addresses without prefix length, IPv4 first (CRI's PodIP is the first one)."""
    if not result:
        return []
    found: list[str] = []
    interfaces = result.get("interfaces") or []
    for entry in result.get("ips") or []:
        address = entry.get("address", "") if isinstance(entry, dict) else ""
        if not address:
            continue
        index = entry.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index]
            if isinstance(iface, dict) and not iface.get("sandbox"):
                continue
        found.append(address.split("/")[0])
    for legacy in ("ip4", "ip6"):  # spec 0.1.0/0.2.0
        section = result.get(legacy)
        if isinstance(section, dict) and section.get("ip"):
            found.append(str(section["ip"]).split("/")[0])
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda a: 0 if _is_v4(a) else 1)


def _is_v4(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def summarize(result: dict[str, Any] | None) -> dict[str, Any]:
    """What `PodNetwork.setup` returns: primary IPv4 (else the first IP), all IPs, interfaces, raw."""
    ips = pod_ips(result)
    primary = next((a for a in ips if _is_v4(a)), ips[0] if ips else "")
    return {
        "ip": primary,
        "ips": ips,
        "interfaces": list((result or {}).get("interfaces") or []),
        "result": result or {},
    }


def host_interfaces(result: dict[str, Any] | None) -> list[str]:
    """Names of the host-side interfaces a result lists (no `sandbox` key), e.g. the bridge and veth."""
    names = []
    for iface in (result or {}).get("interfaces") or []:
        if isinstance(iface, dict) and iface.get("name") and not iface.get("sandbox"):
            names.append(str(iface["name"]))
    return names
