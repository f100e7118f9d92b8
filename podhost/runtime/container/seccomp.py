"""Seccomp profiles for OCI `linux.seccomp`: podhost's RuntimeDefault, Unconfined and Localhost files.

Owns the choice of profile per CRI `SecurityProfile` and podhost's own default profile. The default is a
denylist (defaultAction SCMP_ACT_ALLOW, listed syscalls fail with EPERM): the syscalls Docker's default
profile keeps from containers that lack the matching capability - kernel modules, kexec, mount and
namespace creation without CAP_SYS_ADMIN, bpf, perf_event_open, ptrace, keyrings, clock setting, swap,
reboot, raw I/O ports. A denylist never breaks an ordinary program (busybox sh/httpd/ps/nc, libc
start-up), and it lifts the rules whose capability the container was granted, as Docker's does.

CRI semantics (as in containerd): "RuntimeDefault" -> this profile; "" and "Unconfined" -> no filter;
"Localhost" -> the JSON file at localhost_ref, used as written. Never decides capabilities.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from podhost.errors import InvalidArgument

EPERM = 1
ENOSYS = 38

#: syscall -> the capability that lifts its block (None: always blocked).
_GUARDED: dict[str, str | None] = {
    **dict.fromkeys(
        ("init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"),
        "CAP_SYS_MODULE",
    ),
    **dict.fromkeys(("kexec_load", "kexec_file_load", "reboot"), "CAP_SYS_BOOT"),
    **dict.fromkeys(
        (
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "bpf",
            "fanotify_init",
            "perf_event_open",
            "swapon",
            "swapoff",
            "name_to_handle_at",
        ),
        "CAP_SYS_ADMIN",
    ),
    **dict.fromkeys(("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"), "CAP_SYS_PTRACE"),
    **dict.fromkeys(("settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"), "CAP_SYS_TIME"),
    **dict.fromkeys(("iopl", "ioperm"), "CAP_SYS_RAWIO"),
    **dict.fromkeys(("mbind", "set_mempolicy", "move_pages"), "CAP_SYS_NICE"),
    "open_by_handle_at": "CAP_DAC_READ_SEARCH",
    "acct": "CAP_SYS_PACCT",
    "syslog": "CAP_SYSLOG",
    **dict.fromkeys(
        (
            "add_key",
            "request_key",
            "keyctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
        ),
        None,
    ),
}

#: clone(2) flags that found namespaces; clone with any of them needs CAP_SYS_ADMIN (x86_64, aarch64:
#: flags are argument 0).
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def default_profile(capabilities: set[str], machine: str | None = None) -> dict[str, Any]:
    """podhost's RuntimeDefault profile for a container holding `capabilities` (bounding set)."""
    machine = machine or platform.machine()
    blocked = sorted(name for name, cap in _GUARDED.items() if cap is None or cap not in capabilities)
    syscalls: list[dict[str, Any]] = [{"names": blocked, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}]
    if "CAP_SYS_ADMIN" not in capabilities:
        # Namespaces via clone: one rule per flag, since seccomp can compare a masked argument only for
        # equality. clone3 passes flags in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
        for flag in _CLONE_NS_FLAGS:
            syscalls.append(
                {
                    "names": ["clone"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": EPERM,
                    "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
                }
            )
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": _ARCHES.get(machine, []),
        "syscalls": syscalls,
    }


def profile_for(profile_type: str, localhost_ref: str, capabilities: set[str]) -> dict[str, Any] | None:
    """The OCI seccomp object for a CRI SecurityProfile, or None for no filter. Reads Localhost files."""
    if profile_type in ("", "Unconfined", "unconfined"):
        return None
    if profile_type in ("RuntimeDefault", "runtime/default", "docker/default"):
        return default_profile(capabilities)
    if profile_type == "Localhost":
        path = localhost_ref.removeprefix("localhost/")
        try:
            with open(path) as f:
                profile = json.load(f)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"seccomp profile {localhost_ref!r}: {e}") from e
        if not isinstance(profile, dict) or "defaultAction" not in profile:
            raise InvalidArgument(f"seccomp profile {localhost_ref!r}: not an OCI seccomp object")
        return profile
    raise InvalidArgument(f"unknown seccomp profile type {profile_type!r}")
