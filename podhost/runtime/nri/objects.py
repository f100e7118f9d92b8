"""What a plugin sees of podhost's pods and containers, and what its adjustments do to an OCI spec.

Pure functions over records and config.json dicts: no I/O, no plugin calls (adaptation.py does those).

Adjustments follow NRI's rules (github.com/containerd/nri, pkg/api/adjustment.go): a key or destination
with a leading "-" removes; args whose first element is "" replace the command without claiming it;
two plugins may not set the same thing (a conflict fails the create, naming both). An adjustment of a
field podhost does not apply is refused by name, never dropped: a plugin must not believe it pinned a
CPU or added a CDI device that the container does not have.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from podhost.runtime.model import Container, ContainerStage, LinuxContainerResources, PodSandbox
from podhost.runtime.nri import api_pb2 as nri

_STATES = {
    ContainerStage.CREATING: nri.CONTAINER_UNKNOWN,
    ContainerStage.CREATED: nri.CONTAINER_CREATED,
    ContainerStage.RUNNING: nri.CONTAINER_RUNNING,
    ContainerStage.EXITED: nri.CONTAINER_STOPPED,
}


class AdjustmentRefused(Exception):
    """A plugin's adjustment cannot be applied: unsupported, conflicting or malformed."""


# --- records → NRI objects ------------------------------------------------------------------------


def pod_sandbox(sandbox: PodSandbox, cgroup_parent: str) -> nri.PodSandbox:
    config = sandbox.config
    pod = nri.PodSandbox(
        id=sandbox.id,
        name=config.metadata.name,
        uid=config.metadata.uid,
        namespace=config.metadata.namespace,
        runtime_handler=sandbox.runtime_handler,
        pid=sandbox.pid,
        ips=[ip for ip in [sandbox.ip, *sandbox.additional_ips] if ip],
    )
    pod.labels.update(config.labels)
    pod.annotations.update(config.annotations)
    pod.linux.cgroup_parent = config.cgroup_parent or cgroup_parent
    pod.linux.cgroups_path = sandbox.cgroup
    for kind, path in sorted(sandbox.ns_paths.items()):
        pod.linux.namespaces.add(type="network" if kind == "net" else kind, path=path)
    return pod


def read_spec(bundle: Path) -> dict[str, Any] | None:
    """A container's config.json, or None when its bundle is gone or unreadable."""
    try:
        spec = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def container(record: Container, spec: dict[str, Any] | None) -> nri.Container:
    """The NRI view of a container: identity and status from the record, the rest from its OCI spec
    (the truth of what runs, adjustments included) when there is one."""
    config = record.config
    out = nri.Container(
        id=record.id,
        pod_sandbox_id=record.sandbox_id,
        name=config.metadata.name,
        state=_STATES[record.stage],
        pid=record.pid,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.exit_code,
        status_reason=record.reason,
        status_message=record.message,
    )
    out.labels.update(config.labels)
    out.annotations.update(config.annotations)
    if spec is None:
        out.args.extend([*config.command, *config.args])
        out.env.extend(f"{k}={v}" for k, v in config.envs)
        return out
    process = spec.get("process", {})
    out.args.extend(process.get("args", []))
    out.env.extend(process.get("env", []))
    out.annotations.update(spec.get("annotations", {}))
    for m in spec.get("mounts", []):
        out.mounts.add(
            destination=m.get("destination", ""),
            type=m.get("type", ""),
            source=m.get("source", ""),
            options=m.get("options", []),
        )
    for r in process.get("rlimits", []):
        out.rlimits.add(type=r["type"], hard=r["hard"], soft=r["soft"])
    user = process.get("user", {})
    out.user.uid, out.user.gid = user.get("uid", 0), user.get("gid", 0)
    out.user.additional_gids.extend(user.get("additionalGids", []))
    linux = spec.get("linux", {})
    for ns in linux.get("namespaces", []):
        out.linux.namespaces.add(type=ns.get("type", ""), path=ns.get("path", ""))
    for d in linux.get("devices", []):
        out.linux.devices.add(
            path=d["path"], type=d.get("type", ""), major=d.get("major", 0), minor=d.get("minor", 0)
        )
    out.linux.resources.CopyFrom(resources_from_oci(linux.get("resources", {})))
    if "oomScoreAdj" in process:
        out.linux.oom_score_adj.value = process["oomScoreAdj"]
    out.linux.cgroups_path = linux.get("cgroupsPath", "")
    out.linux.sysctl.update(linux.get("sysctl", {}))
    return out


def refreshed(known: nri.Container, record: Container) -> nri.Container:
    """`known` (built from the spec at create) with the record's status and resources now: what a later
    event needs, without reading config.json again."""
    out = nri.Container()
    out.CopyFrom(known)
    out.state, out.pid = _STATES[record.stage], record.pid
    out.started_at, out.finished_at, out.exit_code = record.started_at, record.finished_at, record.exit_code
    out.status_reason, out.status_message = record.reason, record.message
    if record.config.resources is not None:
        out.linux.resources.CopyFrom(resources_from_cri(record.config.resources))
    return out


def resources_from_oci(resources: dict[str, Any]) -> nri.LinuxResources:
    out = nri.LinuxResources()
    memory, cpu = resources.get("memory", {}), resources.get("cpu", {})
    if "limit" in memory:
        out.memory.limit.value = memory["limit"]
    if "swap" in memory:
        out.memory.swap.value = memory["swap"]
    if "shares" in cpu:
        out.cpu.shares.value = cpu["shares"]
    if "quota" in cpu:
        out.cpu.quota.value = cpu["quota"]
    if "period" in cpu:
        out.cpu.period.value = cpu["period"]
    out.cpu.cpus, out.cpu.mems = cpu.get("cpus", ""), cpu.get("mems", "")
    if "limit" in resources.get("pids", {}):
        out.pids.limit = resources["pids"]["limit"]
    out.unified.update(resources.get("unified", {}))
    return out


def resources_from_cri(resources: LinuxContainerResources) -> nri.LinuxResources:
    out = nri.LinuxResources()
    if resources.memory_limit_in_bytes:
        out.memory.limit.value = resources.memory_limit_in_bytes
    if resources.memory_swap_limit_in_bytes:
        out.memory.swap.value = resources.memory_swap_limit_in_bytes
    if resources.cpu_shares:
        out.cpu.shares.value = resources.cpu_shares
    if resources.cpu_quota:
        out.cpu.quota.value = resources.cpu_quota
    if resources.cpu_period:
        out.cpu.period.value = resources.cpu_period
    out.cpu.cpus, out.cpu.mems = resources.cpuset_cpus, resources.cpuset_mems
    out.unified.update(resources.unified)
    return out


def resources_to_cri(update: nri.LinuxResources, current: LinuxContainerResources) -> LinuxContainerResources:
    """`current` with what an NRI update sets (memory limit and swap, CPU shares, quota, period and
    sets, unified); anything else in the update is refused by name."""
    _refuse_unsupported_resources(update, "update.linux.resources")
    out = dataclasses.replace(current, unified=dict(current.unified))
    if update.memory.HasField("limit"):
        out.memory_limit_in_bytes = update.memory.limit.value
    if update.memory.HasField("swap"):
        out.memory_swap_limit_in_bytes = update.memory.swap.value
    if update.cpu.HasField("shares"):
        out.cpu_shares = update.cpu.shares.value
    if update.cpu.HasField("quota"):
        out.cpu_quota = update.cpu.quota.value
    if update.cpu.HasField("period"):
        out.cpu_period = update.cpu.period.value
    out.cpuset_cpus = update.cpu.cpus or out.cpuset_cpus
    out.cpuset_mems = update.cpu.mems or out.cpuset_mems
    out.unified.update(update.unified)
    return out


# --- adjustments ---------------------------------------------------------------------------------


def _removal(key: str) -> tuple[bool, str]:
    return (True, key[1:]) if key.startswith("-") else (False, key)


def _present(message: Any, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if message.HasField(n)]


def _refuse_unsupported_resources(resources: nri.LinuxResources, where: str) -> None:
    unsupported = [
        *(f"memory.{n}" for n in _present(resources.memory, (
            "reservation", "kernel", "kernel_tcp", "swappiness", "disable_oom_killer", "use_hierarchy"))),
        *(f"cpu.{n}" for n in _present(resources.cpu, ("realtime_runtime", "realtime_period"))),
        *_present(resources, ("blockio_class", "rdt_class")),
        *(["hugepage_limits"] if resources.hugepage_limits else []),
        *(["devices"] if resources.devices else []),
    ]  # fmt: skip
    if unsupported:
        raise AdjustmentRefused(f"{where}.{unsupported[0]} is not supported by podhost")


class Adjuster:
    """Applies the adjustments of each plugin in turn to one container's OCI spec and CRI annotations,
    remembering who set what so a second plugin touching the same thing is a conflict."""

    def __init__(self, spec: dict[str, Any], annotations: dict[str, str]) -> None:
        self.spec = spec
        self.annotations = annotations
        self.owners: dict[tuple[str, str], str] = {}
        self.merged = nri.ContainerAdjustment()

    def _claim(self, field: str, key: str, plugin: str) -> None:
        owner = self.owners.get((field, key))
        if owner is not None and owner != plugin:
            what = f"{field} {key}" if key else field
            raise AdjustmentRefused(f"plugins {owner} and {plugin} both adjust {what}")
        self.owners[(field, key)] = plugin

    def apply(self, adjust: nri.ContainerAdjustment, plugin: str) -> None:
        self._refuse_unsupported(adjust)
        process = self.spec.setdefault("process", {})
        linux = self.spec.setdefault("linux", {})
        for key, value in adjust.annotations.items():
            remove, name = _removal(key)
            self._claim("annotations", name, plugin)
            for target in (self.spec.setdefault("annotations", {}), self.annotations):
                if remove:
                    target.pop(name, None)
                else:
                    target[name] = value
        for kv in adjust.env:
            remove, name = _removal(kv.key)
            self._claim("env", name, plugin)
            env = [e for e in process.get("env", []) if e.split("=", 1)[0] != name]
            process["env"] = env if remove else [*env, f"{name}={kv.value}"]
        if adjust.args:
            args = list(adjust.args)
            if args[0] == "":
                args = args[1:]  # an update: replaces without claiming
            else:
                self._claim("args", "", plugin)
            if not args:
                raise AdjustmentRefused(f"plugin {plugin}: args adjustment leaves no command")
            process["args"] = args
        for m in adjust.mounts:
            remove, destination = _removal(m.destination)
            self._claim("mounts", destination, plugin)
            mounts = [x for x in self.spec.get("mounts", []) if x.get("destination") != destination]
            if not remove:
                if not destination.startswith("/") or not m.type:
                    raise AdjustmentRefused(
                        f"plugin {plugin}: mount {m.destination!r} needs an absolute destination and a type"
                    )
                mounts.append(
                    {
                        "destination": destination,
                        "type": m.type,
                        "source": m.source,
                        "options": list(m.options),
                    }
                )
            self.spec["mounts"] = mounts
        self._apply_hooks(adjust.hooks)
        for r in adjust.rlimits:
            self._claim("rlimits", r.type, plugin)
            rlimits = [x for x in process.get("rlimits", []) if x.get("type") != r.type]
            process["rlimits"] = [*rlimits, {"type": r.type, "hard": r.hard, "soft": r.soft}]
        if adjust.HasField("linux"):
            self._apply_linux(adjust.linux, linux, process, plugin)
        self.merged.MergeFrom(adjust)

    def _refuse_unsupported(self, adjust: nri.ContainerAdjustment) -> None:
        if adjust.CDI_devices:
            raise AdjustmentRefused("adjust.CDI_devices is not supported by podhost (it has no CDI registry)")
        if not adjust.HasField("linux"):
            return
        linux = adjust.linux
        unsupported = [
            *_present(linux, ("io_priority", "seccomp_policy", "scheduler", "rdt", "memory_policy")),
            *(["namespaces"] if linux.namespaces else []),
            *(["net_devices"] if linux.net_devices else []),
            *(["cgroups_path"] if linux.cgroups_path else []),
        ]
        if unsupported:
            raise AdjustmentRefused(f"adjust.linux.{unsupported[0]} is not supported by podhost")
        if linux.HasField("resources"):
            _refuse_unsupported_resources(linux.resources, "adjust.linux.resources")

    def _apply_hooks(self, hooks: nri.Hooks) -> None:
        names = {
            "prestart": "prestart",
            "create_runtime": "createRuntime",
            "create_container": "createContainer",
            "start_container": "startContainer",
            "poststart": "poststart",
            "poststop": "poststop",
        }
        for field, oci_name in names.items():
            for hook in getattr(hooks, field):
                entry: dict[str, Any] = {"path": hook.path, "args": list(hook.args), "env": list(hook.env)}
                if hook.HasField("timeout"):
                    entry["timeout"] = hook.timeout.value
                self.spec.setdefault("hooks", {}).setdefault(oci_name, []).append(entry)

    def _apply_linux(
        self,
        adjust: nri.LinuxContainerAdjustment,
        linux: dict[str, Any],
        process: dict[str, Any],
        plugin: str,
    ) -> None:
        for d in adjust.devices:
            remove, path = _removal(d.path)
            self._claim("devices", path, plugin)
            devices = [x for x in linux.get("devices", []) if x.get("path") != path]
            if not remove:
                device: dict[str, Any] = {"path": path, "type": d.type, "major": d.major, "minor": d.minor}
                if d.HasField("file_mode"):
                    device["fileMode"] = d.file_mode.value
                if d.HasField("uid"):
                    device["uid"] = d.uid.value
                if d.HasField("gid"):
                    device["gid"] = d.gid.value
                devices.append(device)
                rule = {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"}
                linux.setdefault("resources", {}).setdefault("devices", []).append(rule)
            linux["devices"] = devices
        if adjust.HasField("oom_score_adj"):
            self._claim("oom_score_adj", "", plugin)
            process["oomScoreAdj"] = adjust.oom_score_adj.value
        for key, value in adjust.sysctl.items():
            remove, name = _removal(key)
            self._claim("sysctl", name, plugin)
            sysctl = linux.setdefault("sysctl", {})
            if remove:
                sysctl.pop(name, None)
            else:
                sysctl[name] = value
        if adjust.HasField("resources"):
            self._apply_resources(adjust.resources, linux.setdefault("resources", {}), plugin)

    def _apply_resources(self, r: nri.LinuxResources, out: dict[str, Any], plugin: str) -> None:
        memory, cpu = r.memory, r.cpu
        if memory.HasField("limit"):
            self._claim("memory.limit", "", plugin)
            out.setdefault("memory", {})["limit"] = memory.limit.value
        if memory.HasField("swap"):
            self._claim("memory.swap", "", plugin)
            out.setdefault("memory", {})["swap"] = memory.swap.value
        for name in ("shares", "quota", "period"):
            if cpu.HasField(name):
                self._claim(f"cpu.{name}", "", plugin)
                out.setdefault("cpu", {})[name] = getattr(cpu, name).value
        for name in ("cpus", "mems"):
            if getattr(cpu, name):
                self._claim(f"cpu.{name}", "", plugin)
                out.setdefault("cpu", {})[name] = getattr(cpu, name)
        if r.HasField("pids"):
            self._claim("pids.limit", "", plugin)
            out["pids"] = {"limit": r.pids.limit}
        for key, value in r.unified.items():
            self._claim("unified", key, plugin)
            out.setdefault("unified", {})[key] = value
