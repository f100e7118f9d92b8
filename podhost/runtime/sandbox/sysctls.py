"""Namespaced sysctls for a pod (CRI linux.sysctls), validated before pause applies them.

Only sysctls that belong to a namespace the pod owns are accepted, as the kubelet does: net.* (network
namespace; refused for hostNetwork pods), kernel.shm*/msg*/sem and fs.mqueue.* (IPC namespace). Anything
else would change the whole node and is an InvalidArgument naming it.
"""

from __future__ import annotations

import re

from podhost.errors import InvalidArgument

_IPC = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
_NAME = re.compile(r"^[a-z0-9_][a-z0-9_./-]*$")


#: What a pod whose network gives it IPv4 only gets, unless its own sysctls say otherwise: interfaces
#: made in its network namespace after pause (eth0) have no IPv6. `lo`, made with the namespace, keeps ::1.
NO_IPV6_ON_NEW_INTERFACES = {"net.ipv6.conf.default.disable_ipv6": "1"}


def for_ipv4_only_network(sysctls: dict[str, str]) -> dict[str, str]:
    """The pod's sysctls plus NO_IPV6_ON_NEW_INTERFACES, unless it sets a disable_ipv6 itself. Otherwise
    eth0 gets an IPv6 link-local address nobody uses, and its duplicate address detection, router
    solicitations and MLD reports are flooded by the bridge to every other pod: softirq work in each
    pod's namespace for every pod started (at 1,000 pods, ~15 ms of each start). Docker leaves IPv6 off
    on networks without IPv6 in the same way."""
    if any(name.replace("/", ".").endswith(".disable_ipv6") for name in sysctls):
        return sysctls
    return {**sysctls, **NO_IPV6_ON_NEW_INTERFACES}


def sysctl_path(name: str) -> str:
    """`net.ipv4.ip_forward` -> `/proc/sys/net/ipv4/ip_forward` (a '/' form is accepted as is)."""
    return "/proc/sys/" + (name if "/" in name else name.replace(".", "/"))


def pause_sysctls(sysctls: dict[str, str], host_network: bool, host_ipc: bool) -> str:
    """Validate and encode for pause's PODHOST_PAUSE_SYSCTLS ("/proc/sys/a/b=value;...")."""
    items = []
    for name, value in sorted(sysctls.items()):
        if not _NAME.match(name) or ".." in name:
            raise InvalidArgument(f"linux.sysctls: invalid sysctl name {name!r}")
        if any(c in value for c in ";\n\0"):
            raise InvalidArgument(f"linux.sysctls: invalid value for {name}")
        dotted = name.replace("/", ".")
        if dotted.startswith("net."):
            if host_network:
                raise InvalidArgument(f"linux.sysctls: {name} cannot be set on a hostNetwork pod")
        elif dotted.startswith(_IPC):
            if host_ipc:
                raise InvalidArgument(f"linux.sysctls: {name} cannot be set on a hostIPC pod")
        else:
            raise InvalidArgument(f"linux.sysctls: {name} is not a namespaced sysctl")
        items.append(f"{sysctl_path(name)}={value}")
    return ";".join(items)
