"""What a podhost instance lists through CRI, held against what really runs and exists on the machine.

The promise checked (issue 9): every pod and container the daemon lists is real and in the state it says,
and nothing it made is real without being listed. `reality_problems(inst)` returns one line per mismatch,
[] when the two agree.

Listed => real
- a SANDBOX_READY pod: its pause (the pid its verbose status reports) is alive, is `pause`, carries the
  instance's mark for this pod, sits in the pod cgroup, and (unless hostNetwork) the network namespace path
  it reports is pause's network namespace, not the host's;
- a SANDBOX_NOTREADY pod: no pause of it is alive, and it holds no IP (stop and pause death release it);
- a container: its pod is listed; CONTAINER_RUNNING: its process is alive and `runc state` says running with
  that pid; CONTAINER_CREATED: runc says created; CONTAINER_EXITED: no process is left in its cgroup and runc
  runs nothing for it; CONTAINER_UNKNOWN is never a settled state.
Real => listed
- every process marked `PODHOST_OWNER=<instance>/<owner>` names a listed pod or container;
- every process in the instance's cgroup parent is in a listed pod's cgroup;
- every sandbox or container dir of the run dir, runc state dir (run/runc-root/<handler>/<id>), container
  state dir, exit file, attach socket, record, CNI result and host-local IPAM reservation names a listed pod
  or container.

Everything is read from outside: CRI for what is listed, /proc, the cgroup and mount tables, runc and the
instance's directories for what is real. Only the directory layout is podhost's own knowledge.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podhost.cri import api_pb2 as pb
from podhost.errors import NotFound
from podhost.runtime import procs
from podhost.runtime.procs import MARK_ENV
from tests.instance import Instance
from tests.leaks import await_exit, comm, processes_in
from tests.wait import wait_for

NO_PROCESS_STATES = ("", "Z", "X")  # procs.state of a process that is gone (or only a zombie)
RUNC_LIVE = ("running", "created", "paused", "creating")
MARKED_GRACE = 2.0  # seconds a marked process of an unlisted owner gets to finish exiting


def _short(some_id: str) -> str:
    return some_id[:13]


def _info(info_map: Any) -> dict[str, Any]:
    try:
        return dict(json.loads(info_map.get("info", "{}")))
    except ValueError:
        return {}


def _alive(pid: int) -> bool:
    return pid > 0 and procs.state(pid) not in NO_PROCESS_STATES


def mark_of(pid: int) -> str:
    """The PODHOST_OWNER mark in the environment of `pid` ("" when it has none or is gone)."""
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return ""
    key = MARK_ENV.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(key):
            return entry[len(key) :].decode(errors="replace")
    return ""


def cgroups_of(pid: int) -> list[str]:
    """The cgroup paths of `pid`, one per hierarchy, from /proc/<pid>/cgroup ([] when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]


def under(path: str, parent: str) -> bool:
    parent = parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def runc_state(inst: Instance, handler: str, container_id: str) -> dict[str, Any] | None:
    """`<runtime> --root <run dir>/runc-root/<handler> state <id>`, parsed; None when it knows no such id."""
    handler = handler or inst.config.default_runtime
    binary = inst.config.runtimes.get(handler, handler)
    root = inst.config.run_dir / "runc-root" / handler
    result = subprocess.run(
        [binary, "--root", str(root), "state", container_id], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        return None
    try:
        return dict(json.loads(result.stdout))
    except ValueError:
        return None


@dataclass
class Listing:
    """What the daemon lists, with the verbose status of each pod and container."""

    pods: dict[str, pb.PodSandboxStatusResponse] = field(default_factory=dict)
    pod_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, pb.ContainerStatusResponse] = field(default_factory=dict)
    container_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, inst: Instance) -> Listing:
        listing = cls()
        for pod in inst.client.list_pod_sandbox():
            try:
                status = inst.client.pod_sandbox_status(pod.id, verbose=True)
            except NotFound:
                listing.problems.append(f"pod {_short(pod.id)} is listed but its status is NotFound")
                continue
            listing.pods[pod.id] = status
            listing.pod_info[pod.id] = _info(status.info)
        for ctr in inst.client.list_containers():
            try:
                cstatus = inst.client.container_status(ctr.id, verbose=True)
            except NotFound:
                listing.problems.append(f"container {_short(ctr.id)} is listed but its status is NotFound")
                continue
            listing.containers[ctr.id] = cstatus
            listing.container_info[ctr.id] = _info(cstatus.info)
        return listing

    def pod_cgroup(self, pod_id: str) -> str:
        return str(self.pod_info.get(pod_id, {}).get("cgroup") or "")

    def container_cgroup(self, container_id: str) -> str:
        """The container's cgroup: "<pod cgroup>/<container id>" (podhost.runtime.cgroups.child)."""
        pod_cgroup = self.pod_cgroup(str(self.container_info[container_id].get("sandboxID") or ""))
        return f"{pod_cgroup.rstrip('/')}/{container_id}" if pod_cgroup else ""


def reality_problems(inst: Instance) -> list[str]:
    """One line per mismatch between what `inst`'s daemon lists and what really exists; [] if none."""
    listing = Listing.read(inst)
    instance_id = inst.config.instance_id
    marked = procs.marked(instance_id)
    listed = set(listing.pods) | set(listing.containers)
    if unlisted := [proc for owner, found in marked.items() if owner not in listed for proc in found]:
        await_exit(unlisted, MARKED_GRACE)  # a removed container's conmon may be on its way out
        marked = procs.marked(instance_id)
    in_parent = processes_in(inst.config.cgroup_parent)
    problems = list(listing.problems)
    problems += _pods_are_real(inst, listing, instance_id, marked)
    problems += _containers_are_real(inst, listing, in_parent)
    problems += _processes_are_listed(inst, listing, marked, in_parent)
    problems += _files_are_listed(inst, listing)
    return problems


def _pods_are_real(
    inst: Instance, listing: Listing, instance_id: str, marked: dict[str, list[procs.Proc]]
) -> list[str]:
    problems = []
    reservations = ipam_owners(inst)
    for pod_id, status in listing.pods.items():
        info = listing.pod_info[pod_id]
        name = f"pod {_short(pod_id)} ({status.status.metadata.name})"
        pid = int(info.get("pid") or 0)
        own_mark = f"{instance_id}/{pod_id}"
        if status.status.state == pb.SANDBOX_READY:
            if not _alive(pid):
                problems.append(f"{name} is SANDBOX_READY but its pause (pid {pid}) is not running")
                continue
            if comm(pid) != "pause":
                problems.append(f"{name} is SANDBOX_READY but its pid {pid} is {comm(pid)!r}, not pause")
                continue
            if mark_of(pid) != own_mark:
                problems.append(f"{name}: its pause (pid {pid}) is marked {mark_of(pid)!r}, not {own_mark!r}")
            cgroup = listing.pod_cgroup(pod_id)
            if not cgroup or any(path != cgroup for path in cgroups_of(pid)):
                problems.append(
                    f"{name}: its pause (pid {pid}) is in cgroups {sorted(set(cgroups_of(pid)))}, "
                    f"not only in the pod cgroup {cgroup!r}"
                )
            if status.status.linux.namespaces.options.network != pb.NODE:
                problems += _netns_problems(name, pid, str(info.get("netNamespacePath") or ""))
        else:
            pauses = {p.pid for p in marked.get(pod_id, []) if comm(p.pid) == "pause"}
            if _alive(pid) and comm(pid) == "pause" and mark_of(pid) == own_mark:
                pauses.add(pid)
            if pauses:
                problems.append(f"{name} is SANDBOX_NOTREADY but its pause still runs: pids {sorted(pauses)}")
            if held := sorted(ip for ip, owner in reservations.items() if owner == pod_id):
                problems.append(f"{name} is SANDBOX_NOTREADY but still holds IPs {held}")
    return problems


def _netns_problems(name: str, pid: int, path: str) -> list[str]:
    if not path:
        return [f"{name} is SANDBOX_READY but reports no network namespace path"]
    try:
        reported, pause, host = (os.stat(p) for p in (path, f"/proc/{pid}/ns/net", "/proc/self/ns/net"))
    except OSError as e:
        return [f"{name}: comparing its network namespace {path} with pause's: {e}"]
    if (reported.st_dev, reported.st_ino) != (pause.st_dev, pause.st_ino):
        return [f"{name}: its network namespace {path} is not the one its pause is in"]
    if (pause.st_dev, pause.st_ino) == (host.st_dev, host.st_ino):
        return [f"{name}: its pause is in the host's network namespace"]
    return []


def _containers_are_real(inst: Instance, listing: Listing, in_parent: list[int]) -> list[str]:
    problems = []
    for cid, cstatus in listing.containers.items():
        info = listing.container_info[cid]
        status = cstatus.status
        name = f"container {_short(cid)} ({status.metadata.name})"
        state = status.state
        pod_id = str(info.get("sandboxID") or "")
        if pod_id not in listing.pods:
            problems.append(f"{name} belongs to pod {_short(pod_id)}, which is not listed")
        runc = runc_state(inst, str(info.get("runtimeHandler") or ""), cid)
        runc_status = runc.get("status", "") if runc else "(no state)"
        pid = int(info.get("pid") or 0)
        if state == pb.CONTAINER_RUNNING:
            if not _alive(pid):
                problems.append(f"{name} is CONTAINER_RUNNING but its process (pid {pid}) is gone")
            if runc_status != "running":
                problems.append(f"{name} is CONTAINER_RUNNING but runc says {runc_status}")
            elif runc is not None and int(runc.get("pid") or 0) != pid:
                problems.append(
                    f"{name} is CONTAINER_RUNNING with pid {pid} but runc runs pid {runc.get('pid')}"
                )
        elif state == pb.CONTAINER_CREATED:
            if runc_status != "created":
                problems.append(f"{name} is CONTAINER_CREATED but runc says {runc_status}")
        elif state == pb.CONTAINER_EXITED:
            if runc_status in RUNC_LIVE:
                problems.append(f"{name} is CONTAINER_EXITED but runc says {runc_status}")
            cgroup = listing.container_cgroup(cid)
            left = [p for p in in_parent if cgroup and any(under(path, cgroup) for path in cgroups_of(p))]
            if left:
                problems.append(
                    f"{name} is CONTAINER_EXITED but processes remain in its cgroup: {_procs(left)}"
                )
        else:
            problems.append(f"{name} is listed as {pb.ContainerState.Name(state)} (runc says {runc_status})")
    return problems


def _procs(pids: list[int]) -> str:
    return ", ".join(f"{pid} ({comm(pid)})" for pid in pids)


def _processes_are_listed(
    inst: Instance, listing: Listing, marked: dict[str, list[procs.Proc]], in_parent: list[int]
) -> list[str]:
    problems = []
    listed = set(listing.pods) | set(listing.containers)
    for owner, found in sorted(marked.items()):
        if owner not in listed:
            pids = [p.pid for p in found]
            problems.append(f"processes marked for {_short(owner)}, which is not listed: {_procs(pids)}")
    pod_cgroups = [c for c in (listing.pod_cgroup(p) for p in listing.pods) if c]
    parent = inst.config.cgroup_parent
    for pid in in_parent:
        paths = [p for p in cgroups_of(pid) if under(p, parent)]
        if paths and not any(under(path, pod) for path in paths for pod in pod_cgroups):
            problems.append(f"process {pid} ({comm(pid)}) in cgroup {paths[0]} belongs to no listed pod")
    return problems


def ipam_owners(inst: Instance) -> dict[str, str]:
    """host-local's reservations under the instance's IPAM dir: {"<network>/<ip>": container id}."""
    ipam = inst.config.cni_state_dir / "ipam"
    owners = {}
    if ipam.is_dir():
        for path in ipam.rglob("*"):
            if path.is_file() and not path.name.startswith(("last_reserved_ip", "lock")):
                try:
                    owner = path.read_text().splitlines()[0].strip()
                except (OSError, IndexError):
                    owner = ""
                owners[str(path.relative_to(ipam))] = owner
    return owners


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def _files_are_listed(inst: Instance, listing: Listing) -> list[str]:
    config = inst.config
    pods, ctrs = set(listing.pods), set(listing.containers)
    problems = []

    def unlisted(what: str, names: list[str], allowed: set[str], strip: str = "") -> None:
        extra = [n for n in names if n.removesuffix(strip) not in allowed]
        if extra:
            problems.append(f"{what} not listed: {[_short(n) if len(n) > 40 else n for n in extra]}")

    unlisted("run-dir sandbox dirs", _entries(config.run_dir / "sandboxes"), pods)
    unlisted("run-dir container dirs", _entries(config.run_dir / "containers"), ctrs)
    unlisted("container state dirs", _entries(config.state_dir / "containers"), ctrs)
    unlisted("exit files", _entries(config.run_dir / "exits"), ctrs)
    unlisted("attach sockets", _entries(config.run_dir / "attach"), ctrs)
    for handler_dir in _entries(config.run_dir / "runc-root"):
        unlisted(
            f"runc states ({handler_dir})", _entries(config.run_dir / "runc-root" / handler_dir), ctrs | pods
        )
    unlisted("sandbox records", _entries(config.state_dir / "records" / "sandboxes"), pods, ".json")
    unlisted("container records", _entries(config.state_dir / "records" / "containers"), ctrs, ".json")
    unlisted("CNI results", _entries(config.cni_state_dir / "results"), pods, ".json")
    for ip, owner in sorted(ipam_owners(inst).items()):
        if owner not in pods:
            problems.append(f"IPAM reservation {ip} (for {_short(owner) or '?'}) belongs to no listed pod")
    return problems


def settled_reality_problems(inst: Instance, timeout: float = 3.0) -> list[str]:
    """`reality_problems`, awaited: what the daemon learns by events (an exit, a pause death) may reach its
    listing a moment after the fact. [] as soon as the two agree; else the mismatches after `timeout` s."""
    with contextlib.suppress(AssertionError):
        wait_for("listed and real to agree", lambda: not reality_problems(inst), timeout, interval=0.1)
    return reality_problems(inst)
