"""Cgroup directories of pods and containers, on cgroup v1 (one hierarchy per controller) or pure v2.

Owns: making, filling, measuring and removing cgroup directories given a path relative to each
hierarchy's root (e.g. "/podhost/pod-<id>/<ctr id>"), in every mounted hierarchy at once. Shared by the
sandbox service (pod cgroups) and the container service (stats, OOM counts, leftovers); runc itself makes
and removes container cgroups, this module only cleans up after it. Never kills processes: `remove`
fails when a cgroup still holds tasks, so the caller notices what it forgot to stop.

Layout facts. v1 mounts one hierarchy per controller (or a few co-mounted, "cpu,cpuacct") under
/sys/fs/cgroup/<name>; a hybrid host also mounts cgroup2 at /sys/fs/cgroup/unified. Pure v2 mounts one
cgroup2 at /sys/fs/cgroup with /sys/fs/cgroup/cgroup.controllers. Hierarchies are read from
/proc/self/mountinfo so co-mounts and named hierarchies (name=systemd) come out right.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from pathlib import Path

from podhost.errors import RuntimeFailure

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_REMOVE_RETRY_S = 1.0
_V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb", "net_cls",
    "net_prio", "perf_event", "rdma", "misc",
})  # fmt: skip


def normalize(path: str) -> str:
    """ "/a/b/" or "a/b" -> "/a/b"; the root is "/"."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise RuntimeFailure(f"cgroup path {path!r} must not contain '..'")
    return "/" + "/".join(parts)


def child(parent: str, name: str) -> str:
    """The cgroup path of `name` below `parent` (containers go to "<pod cgroup>/<ctr id>")."""
    return normalize(parent.rstrip("/") + "/" + name)


def parse_mountinfo(text: str) -> tuple[int, dict[str, Path]]:
    """(version, {hierarchy name: mount point}) from /proc/self/mountinfo contents.

    v1 hierarchies are named after their controllers ("cpu,cpuacct", "name=systemd"); a cgroup2 mount is
    "unified". Version is 2 only when the one cgroup2 mount is the whole tree (no v1 hierarchy)."""
    hierarchies: dict[str, Path] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, mount_point = rfields[0], Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            hierarchies.setdefault("unified", mount_point)
        elif fstype == "cgroup":
            names = [o for o in rfields[2].split(",") if o in _V1_CONTROLLERS or o.startswith("name=")]
            if names:
                hierarchies.setdefault(",".join(names), mount_point)
    v1 = [name for name in hierarchies if name != "unified"]
    return (1 if v1 else 2), hierarchies


class Cgroups:
    """Every cgroup hierarchy of this host, addressed by one path. Cheap to build; holds no fds."""

    def __init__(self, mountinfo: str | None = None) -> None:
        if mountinfo is None:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        self.version, self.hierarchies = parse_mountinfo(mountinfo)
        if not self.hierarchies:
            raise RuntimeFailure("no cgroup hierarchy is mounted")

    # --- pure path helpers -------------------------------------------------------------------------

    def _mount_of(self, controller: str) -> Path | None:
        if self.version == 2:
            return self.hierarchies.get("unified")
        for name, mount in self.hierarchies.items():
            if controller in name.split(","):
                return mount
        return None

    def dirs(self, path: str) -> list[Path]:
        """The directory of `path` in every hierarchy (existing or not), v1 controllers first."""
        rel = normalize(path).lstrip("/")
        return [mount / rel for mount in self.hierarchies.values()]

    def controller_dir(self, controller: str, path: str) -> Path | None:
        """The directory of `path` in the hierarchy holding `controller` (v2: the one tree)."""
        mount = self._mount_of(controller)
        return None if mount is None else mount / normalize(path).lstrip("/")

    def procs_files(self, path: str) -> list[Path]:
        """cgroup.procs of `path` in every hierarchy: writing a PID to each moves that process in."""
        return [d / "cgroup.procs" for d in self.dirs(path)]

    # --- changes -----------------------------------------------------------------------------------

    def create(self, path: str) -> None:
        """mkdir -p `path` in every hierarchy. On v1 cpuset, every dir of the path gets cpus/mems from its
        parent if it has none (the kernel leaves a new one empty, an empty cpuset admits no task, and a
        daemon killed between a mkdir and the copy leaves one so), and passes them on to its children."""
        path = normalize(path)
        if self.version == 2:
            self._enable_v2_controllers(path)
        for mount in self.hierarchies.values():
            current = mount
            cpuset = (mount / "cpuset.cpus").exists()
            for part in path.strip("/").split("/"):
                if not part:
                    continue
                parent, current = current, current / part
                try:
                    current.mkdir()
                    made = True
                except FileExistsError:
                    made = False
                except OSError as e:
                    raise RuntimeFailure(f"cgroup mkdir {current}: {e.strerror}") from e
                if cpuset:
                    copied = [_copy_if_empty(parent / n, current / n) for n in ("cpuset.cpus", "cpuset.mems")]
                    if made or any(copied):
                        _clone_to_children(current)

    def _enable_v2_controllers(self, path: str) -> None:
        mount = self.hierarchies["unified"]
        try:
            available = (mount / "cgroup.controllers").read_text().split()
        except OSError:
            return
        current = mount
        for part in [p for p in path.strip("/").split("/") if p][:-1] or []:
            _enable(current, available)
            current = current / part
            current.mkdir(exist_ok=True)
        _enable(current, available)

    def add_process(self, path: str, pid: int) -> None:
        """Move `pid` into `path` in every hierarchy."""
        for procs in self.procs_files(path):
            try:
                procs.write_text(str(pid))
            except OSError as e:
                raise RuntimeFailure(f"cgroup: moving pid {pid} into {procs.parent}: {e.strerror}") from e

    def kill(self, path: str) -> bool:
        """SIGKILL every process in `path` and below, in one write to cgroup v2's `cgroup.kill` (Linux 5.14);
        False where there is none (cgroup v1, an older kernel, no such cgroup): the caller kills otherwise."""
        if self.version != 2 or normalize(path) == "/":
            return False
        directory = self.controller_dir("", path)
        if directory is None:
            return False
        try:
            with open(directory / "cgroup.kill", "w") as f:
                f.write("1")
        except OSError:
            return False
        return True

    def remove(self, path: str) -> None:
        """rmdir `path` and everything below it, leaf first, in every hierarchy. Idempotent. Retries for
        a moment while tasks are still exiting (EBUSY); a cgroup that keeps its tasks is an error."""
        path = normalize(path)
        if path == "/":
            raise RuntimeFailure("refusing to remove the root cgroup")
        deadline = time.monotonic() + _REMOVE_RETRY_S
        for top in self.dirs(path):
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            raise RuntimeFailure(
                                f"cgroup rmdir {d}: {e.strerror} (pids: {_read_pids(d / 'cgroup.procs')})"
                            ) from e
                        time.sleep(0.01)

    # --- reading -----------------------------------------------------------------------------------

    def remove_if_empty(self, path: str) -> None:
        """rmdir `path` in every hierarchy where it has no children and no tasks; anything else stays.
        For a daemon's own cgroup parent at shutdown: never removes what still holds a pod."""
        for d in self.dirs(path):
            with contextlib.suppress(OSError):
                d.rmdir()

    def exists(self, path: str) -> bool:
        return any(d.is_dir() for d in self.dirs(path))

    def pids(self, path: str) -> list[int]:
        """Every process in `path` or below it, in any hierarchy."""
        found: set[int] = set()
        for top in self.dirs(path):
            if top.is_dir():
                for procs in top.rglob("cgroup.procs"):
                    found.update(_read_pids(procs))
        return sorted(found)

    def memory_usage(self, path: str) -> int:
        """Bytes charged to `path` (v1 memory.usage_in_bytes, v2 memory.current); 0 if unknown."""
        d = self.controller_dir("memory", path)
        if d is None:
            return 0
        return _read_int(d / ("memory.current" if self.version == 2 else "memory.usage_in_bytes"))

    def memory_working_set(self, path: str) -> int:
        """Usage minus inactive file pages: what the kubelet calls the working set."""
        d = self.controller_dir("memory", path)
        if d is None:
            return 0
        usage = self.memory_usage(path)
        stat = _read_kv(d / "memory.stat")
        inactive = stat.get("inactive_file" if self.version == 2 else "total_inactive_file", 0)
        return max(0, usage - inactive)

    def cpu_usage_ns(self, path: str) -> int:
        if self.version == 2:
            d = self.controller_dir("cpu", path)
            return 0 if d is None else _read_kv(d / "cpu.stat").get("usage_usec", 0) * 1000
        d = self.controller_dir("cpuacct", path)
        return 0 if d is None else _read_int(d / "cpuacct.usage")

    def oom_kills(self, path: str) -> int:
        """How many processes the kernel OOM-killed in `path` (v1 memory.oom_control, v2 memory.events)."""
        d = self.controller_dir("memory", path)
        if d is None:
            return 0
        return _read_kv(d / ("memory.events" if self.version == 2 else "memory.oom_control")).get(
            "oom_kill", 0
        )

    def leftovers(self, prefix: str) -> list[Path]:
        """Directories at or below `prefix` in any hierarchy: what a leak check reports."""
        found = []
        for top in self.dirs(prefix):
            if top.is_dir():
                found.append(top)
                found += [p for p in top.rglob("*") if p.is_dir()]
        return found


def _enable(directory: Path, controllers: list[str]) -> None:
    try:
        (directory / "cgroup.subtree_control").write_text(" ".join("+" + c for c in controllers))
    except OSError as e:
        log.debug("cgroup v2: enabling %s in %s: %s", controllers, directory, e.strerror)


def _clone_to_children(cpuset_dir: Path) -> None:
    """Let the kernel give the dir's future children (a pod's containers, which runc makes) its cpus and
    mems at mkdir, a flag they pass on. Otherwise every new cpuset is written twice, by runc or here,
    and each write rebuilds the scheduler domains from every cpuset on the machine: O(pods) per
    container (`perf` on `runc create` at 1,000 pods: `rebuild_sched_domains_locked`)."""
    try:
        (cpuset_dir / "cgroup.clone_children").write_text("1")
    except OSError as e:
        log.debug("cgroup v1: cgroup.clone_children in %s: %s", cpuset_dir, e.strerror)


def _copy_if_empty(source: Path, target: Path) -> bool:
    """Copy `source` into `target` when that is empty; whether it was."""
    try:
        if target.read_text().strip():
            return False
        target.write_text(source.read_text().strip() or "\n")
        return True
    except OSError as e:
        raise RuntimeFailure(f"cgroup: copying {source} to {target}: {e.strerror}") from e


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except OSError:
        return []


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out
