"""CRI metrics: what ListMetricDescriptors describes and ListPodSandboxMetrics answers.

Owns: the metric catalogue (names, help, label keys, types) and turning readings of a pod's cgroups, its
containers' processes and writable layers and its network namespace into `Metric` records. The kubelet's
PodAndContainerStatsFromCRI path (pkg/kubelet/stats/cri_stats_provider.go, the CRI metrics collector)
exposes them on /metrics/cadvisor unchanged, so the names, label keys and units are cadvisor's, as CRI-O
serves them (internal/lib/statsserver/descriptors.go): `id, image, namespace, pod, container` on every
metric, plus `cpu` ("total"), `interface`, or `failure_type, scope` where cadvisor has them. Values are
CRI `UInt64Value`s, so `*_seconds*` metrics are whole seconds (CRI-O truncates the same way; the ns
figures are in PodSandboxStats). Timestamps are ns since the epoch.

Only what podhost really measures is served: no hugetlb or pressure (PSI) metrics, which cri-tools lists
as not yet implemented by all runtimes. Block I/O metrics come per device the container's cgroup has
touched (none for a container that only wrote to page cache: critest counts those as optional). Network metrics are per pod
(PodSandboxMetrics.metrics, read through pause's /proc/<pid>/net/dev), the rest per running container
(ContainerMetrics), as containerd 2 and CRI-O place them.

The parsing and the turning into metrics are pure (tests feed them file contents); `read_*` and
`measure_pod_sandbox` do the reading and never change anything.
"""

from __future__ import annotations

import contextlib
import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podhost.runtime import procs
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.model import Container, PodSandbox

NS_PER_S = 1_000_000_000
#: cgroup v1 reports "no limit" as a huge page-aligned number (9223372036854771712), v2 as "max"; both
#: become 0, cadvisor's "unlimited".
_UNLIMITED = 1 << 62
#: cpuacct.stat counts USER_HZ ticks, which is 100 on every Linux ABI.
_USER_HZ = 100


class MetricType(enum.IntEnum):
    """CRI MetricType (same numbers)."""

    COUNTER = 0
    GAUGE = 1


BASE_LABEL_KEYS = ("id", "image", "namespace", "pod", "container")
#: The `container` label of pod-level metrics (cadvisor's name for the pause container).
POD_CONTAINER = "POD"


@dataclass(frozen=True)
class MetricDescriptor:
    name: str
    help: str
    type: MetricType
    label_keys: tuple[str, ...] = BASE_LABEL_KEYS


@dataclass
class Metric:
    name: str
    timestamp: int  # ns since the epoch
    type: MetricType
    label_values: list[str]
    value: int


@dataclass
class ContainerMetrics:
    container_id: str
    metrics: list[Metric] = field(default_factory=list)


@dataclass
class PodSandboxMetrics:
    pod_sandbox_id: str
    metrics: list[Metric] = field(default_factory=list)
    container_metrics: list[ContainerMetrics] = field(default_factory=list)


def _d(name: str, help: str, type: MetricType, *extra: str) -> MetricDescriptor:
    return MetricDescriptor(name, help, type, BASE_LABEL_KEYS + extra)


C, G = MetricType.COUNTER, MetricType.GAUGE

#: Everything ListMetricDescriptors answers, in cadvisor's groups. Help texts are cadvisor's.
DESCRIPTORS: tuple[MetricDescriptor, ...] = (
    _d("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", C, "cpu"),
    _d("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", C),
    _d("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", C),
    _d("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", C),
    _d("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", C),
    _d("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", C),
    _d("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", G),
    _d("container_memory_working_set_bytes", "Current working set in bytes.", G),
    _d("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", G),
    _d("container_memory_cache", "Number of bytes of page cache memory.", G),
    _d("container_memory_rss", "Size of RSS in bytes.", G),
    _d("container_memory_mapped_file", "Size of memory mapped files in bytes.", G),
    _d("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", G),
    _d("container_memory_swap", "Container swap usage in bytes.", G),
    _d("container_memory_failcnt", "Number of memory usage hits limits", C),
    _d("container_memory_failures_total", "Cumulative count of memory allocation failures.", C, "failure_type", "scope"),
    _d("container_oom_events_total", "Count of out of memory events observed for the container", C),
    _d("container_processes", "Number of processes running inside the container.", G),
    _d("container_threads", "Number of threads running inside the container", G),
    _d("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", G),
    _d("container_file_descriptors", "Number of open file descriptors for the container.", G),
    _d("container_sockets", "Number of open sockets for the container.", G),
    _d("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", G),
    _d("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", G),
    _d("container_fs_inodes_total", "Number of Inodes", G),
    _d("container_fs_inodes_free", "Number of available Inodes", G),
    _d("container_fs_reads_bytes_total", "Cumulative count of bytes read", C, "device"),
    _d("container_fs_reads_total", "Cumulative count of reads completed", C, "device"),
    _d("container_fs_writes_bytes_total", "Cumulative count of bytes written", C, "device"),
    _d("container_fs_writes_total", "Cumulative count of writes completed", C, "device"),
    _d("container_blkio_device_usage_total", "Blkio Device bytes usage", C, "device", "major", "minor", "operation"),
    _d("container_spec_cpu_period", "CPU period of the container.", G),
    _d("container_spec_cpu_quota", "CPU quota of the container.", G),
    _d("container_spec_cpu_shares", "CPU share of the container.", G),
    _d("container_spec_memory_limit_bytes", "Memory limit for the container.", G),
    _d("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", G),
    _d("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", G),
    _d("container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", G, "ulimit"),
    _d("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", G),
    _d("container_last_seen", "Last time a container was seen by the exporter", G),
    _d("container_network_receive_bytes_total", "Cumulative count of bytes received", C, "interface"),
    _d("container_network_receive_packets_total", "Cumulative count of packets received", C, "interface"),
    _d("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", C, "interface"),
    _d("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", C, "interface"),
    _d("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", C, "interface"),
    _d("container_network_transmit_packets_total", "Cumulative count of packets transmitted", C, "interface"),
    _d("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", C, "interface"),
    _d("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", C, "interface"),
)  # fmt: skip

_BY_NAME = {d.name: d for d in DESCRIPTORS}


# --- readings (plain numbers, as the kernel gives them) ------------------------------------------------


@dataclass
class DeviceIO:
    """Block I/O of a cgroup on one device (v1 blkio.throttle.*_recursive, v2 io.stat)."""

    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0
    device: str = ""  # /dev/<name> when known, else "major:minor"


@dataclass
class CgroupReading:
    """One container cgroup. Bytes, ns and counts; 0 where the host has no such file."""

    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cfs_periods: int = 0
    cfs_throttled_periods: int = 0
    cfs_throttled_ns: int = 0
    cpu_period_us: int = 0
    cpu_quota_us: int = 0
    cpu_shares: int = 0
    memory_usage: int = 0
    memory_working_set: int = 0
    memory_max_usage: int = 0
    memory_cache: int = 0
    memory_rss: int = 0
    memory_mapped_file: int = 0
    memory_kernel: int = 0
    memory_swap: int = 0
    memory_failcnt: int = 0
    memory_limit: int = 0
    memory_swap_limit: int = 0
    memory_reservation: int = 0
    pgfault: int = 0
    pgmajfault: int = 0
    oom_events: int = 0
    threads: int = 0
    threads_max: int = 0
    devices: list[DeviceIO] = field(default_factory=list)


@dataclass
class InterfaceCounters:
    """One line of /proc/net/dev."""

    name: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


@dataclass
class ContainerReading:
    cgroup: CgroupReading
    processes: int = 0
    file_descriptors: int = 0
    sockets: int = 0
    fs_usage_bytes: int = 0
    fs_limit_bytes: int = 0
    fs_inodes_total: int = 0
    fs_inodes_free: int = 0
    started_at: int = 0  # ns
    max_open_files: int = 0  # soft RLIMIT_NOFILE of the container's first process; -1 unlimited


# --- pure parsing -------------------------------------------------------------------------------------


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """`key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events); bad lines are skipped."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def parse_int(text: str | None) -> int:
    """A one-number file; "max" (v2's no limit), empty or missing is 0; v1's huge "no limit" too."""
    text = (text or "").strip()
    if not text or text == "max":
        return 0
    try:
        value = int(text.split()[0])
    except ValueError:
        return 0
    return 0 if value >= _UNLIMITED else value


def parse_net_dev(text: str) -> list[InterfaceCounters]:
    """/proc/net/dev: two header lines, then `name: ` and 8 receive columns (bytes packets errs drop fifo
    frame compressed multicast), then 8 transmit columns (bytes packets errs drop fifo colls carrier
    compressed)."""
    found = []
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        f = counters.split()
        if len(f) >= 16 and all(x.isdigit() for x in f[:16]):
            n = [int(x) for x in f[:16]]
            found.append(InterfaceCounters(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return found


def parse_blkio_v1(service_bytes: str | None, serviced: str | None) -> list[DeviceIO]:
    """blkio.throttle.io_service_bytes_recursive and io_serviced_recursive: `major:minor Op value`
    lines (Op Read, Write, Sync, Async, Discard, Total) and a final `Total value`."""
    devices: dict[tuple[int, int], DeviceIO] = {}
    for text, unit in ((service_bytes, "bytes"), (serviced, "ios")):
        for line in (text or "").splitlines():
            f = line.split()
            if len(f) != 3 or ":" not in f[0] or f[1] not in ("Read", "Write"):
                continue
            try:
                major, minor = (int(x) for x in f[0].split(":"))
                value = int(f[2])
            except ValueError:
                continue
            d = devices.setdefault((major, minor), DeviceIO(major, minor))
            if unit == "bytes":
                d.read_bytes, d.write_bytes = (
                    (value, d.write_bytes) if f[1] == "Read" else (d.read_bytes, value)
                )
            else:
                d.reads, d.writes = (value, d.writes) if f[1] == "Read" else (d.reads, value)
    return list(devices.values())


def parse_io_stat(text: str | None) -> list[DeviceIO]:
    """cgroup v2 io.stat: `major:minor rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` lines."""
    found = []
    for line in (text or "").splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        try:
            major, minor = (int(x) for x in f[0].split(":"))
            kv = {k: int(v) for k, _, v in (x.partition("=") for x in f[1:])}
        except ValueError:
            continue
        found.append(
            DeviceIO(
                major, minor, kv.get("rbytes", 0), kv.get("wbytes", 0), kv.get("rios", 0), kv.get("wios", 0)
            )
        )
    return found


def parse_max_open_files(limits: str | None) -> int:
    """The soft "Max open files" of /proc/<pid>/limits; "unlimited" is -1, unknown 0."""
    for line in (limits or "").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return -1 if soft == "unlimited" else int(soft) if soft.isdigit() else 0
    return 0


#: read(controller, file name) -> the file's text, or None when it does not exist.
Reader = Callable[[str, str], "str | None"]


def cgroup_reading(version: int, read: Reader) -> CgroupReading:
    """Everything `CgroupReading` holds, from the files of one cgroup (v1: each in its controller's
    hierarchy; v2: all in one directory). File names and derivations follow runc's libcontainer cgroups
    stats, which cadvisor, containerd and CRI-O all read through."""
    r = CgroupReading()
    if version == 2:
        cpu = parse_flat_keyed(read("cpu", "cpu.stat"))
        r.cpu_usage_ns = cpu.get("usage_usec", 0) * 1000
        r.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        r.cpu_system_ns = cpu.get("system_usec", 0) * 1000
        r.cfs_periods = cpu.get("nr_periods", 0)
        r.cfs_throttled_periods = cpu.get("nr_throttled", 0)
        r.cfs_throttled_ns = cpu.get("throttled_usec", 0) * 1000
        cpu_max = (read("cpu", "cpu.max") or "").split()
        r.cpu_period_us = parse_int(cpu_max[1]) if len(cpu_max) > 1 else 0
        r.cpu_quota_us = parse_int(cpu_max[0]) if cpu_max else 0
        weight = parse_int(read("cpu", "cpu.weight"))
        # runc's shares -> weight mapping (1 + (shares - 2) * 9999 / 262142), inverted.
        r.cpu_shares = 2 + ((weight - 1) * 262142) // 9999 if weight else 0
        mem = parse_flat_keyed(read("memory", "memory.stat"))
        r.memory_usage = parse_int(read("memory", "memory.current"))
        r.memory_max_usage = parse_int(read("memory", "memory.peak"))
        r.memory_cache = mem.get("file", 0)
        r.memory_rss = mem.get("anon", 0)
        r.memory_mapped_file = mem.get("file_mapped", 0)
        r.memory_kernel = mem.get("kernel", mem.get("kernel_stack", 0) + mem.get("slab", 0))
        r.memory_swap = parse_int(read("memory", "memory.swap.current"))
        events = parse_flat_keyed(read("memory", "memory.events"))
        r.memory_failcnt = events.get("max", 0)
        r.oom_events = events.get("oom_kill", 0)
        r.memory_limit = parse_int(read("memory", "memory.max"))
        r.memory_swap_limit = parse_int(read("memory", "memory.swap.max"))
        r.memory_reservation = parse_int(read("memory", "memory.low"))
        r.devices = parse_io_stat(read("io", "io.stat"))
        r.pgfault, r.pgmajfault = mem.get("pgfault", 0), mem.get("pgmajfault", 0)
        inactive_file = mem.get("inactive_file", 0)
    else:
        r.cpu_usage_ns = parse_int(read("cpuacct", "cpuacct.usage"))
        ticks = parse_flat_keyed(read("cpuacct", "cpuacct.stat"))
        r.cpu_user_ns = ticks.get("user", 0) * NS_PER_S // _USER_HZ
        r.cpu_system_ns = ticks.get("system", 0) * NS_PER_S // _USER_HZ
        cpu = parse_flat_keyed(read("cpu", "cpu.stat"))
        r.cfs_periods = cpu.get("nr_periods", 0)
        r.cfs_throttled_periods = cpu.get("nr_throttled", 0)
        r.cfs_throttled_ns = cpu.get("throttled_time", 0)
        r.cpu_period_us = parse_int(read("cpu", "cpu.cfs_period_us"))
        r.cpu_quota_us = max(0, parse_int(read("cpu", "cpu.cfs_quota_us")))  # -1: no quota
        r.cpu_shares = parse_int(read("cpu", "cpu.shares"))
        mem = parse_flat_keyed(read("memory", "memory.stat"))
        r.memory_usage = parse_int(read("memory", "memory.usage_in_bytes"))
        r.memory_max_usage = parse_int(read("memory", "memory.max_usage_in_bytes"))
        r.memory_cache = mem.get("total_cache", 0)
        r.memory_rss = mem.get("total_rss", 0)
        r.memory_mapped_file = mem.get("total_mapped_file", 0)
        r.memory_kernel = parse_int(read("memory", "memory.kmem.usage_in_bytes"))
        memsw = parse_int(read("memory", "memory.memsw.usage_in_bytes"))
        r.memory_swap = max(0, memsw - r.memory_usage) if memsw else 0
        r.memory_failcnt = parse_int(read("memory", "memory.failcnt"))
        r.oom_events = parse_flat_keyed(read("memory", "memory.oom_control")).get("oom_kill", 0)
        r.memory_limit = parse_int(read("memory", "memory.limit_in_bytes"))
        r.memory_swap_limit = parse_int(read("memory", "memory.memsw.limit_in_bytes"))
        r.memory_reservation = parse_int(read("memory", "memory.soft_limit_in_bytes"))
        r.devices = parse_blkio_v1(
            read("blkio", "blkio.throttle.io_service_bytes_recursive"),
            read("blkio", "blkio.throttle.io_serviced_recursive"),
        )
        r.pgfault, r.pgmajfault = mem.get("total_pgfault", 0), mem.get("total_pgmajfault", 0)
        inactive_file = mem.get("total_inactive_file", 0)
    # The kubelet's working set: usage minus inactive file pages (what eviction and `kubectl top` use).
    r.memory_working_set = max(0, r.memory_usage - inactive_file)
    r.threads = parse_int(read("pids", "pids.current"))
    r.threads_max = parse_int(read("pids", "pids.max"))
    return r


# --- pure: readings -> metrics ------------------------------------------------------------------------


def _metric(name: str, ts: int, labels: list[str], value: int, *extra: str) -> Metric:
    d = _BY_NAME[name]
    return Metric(name, ts, d.type, labels + list(extra), max(0, int(value)))


def _io_values(devices: list[DeviceIO]) -> list[tuple[str, int, tuple[str, ...]]]:
    out: list[tuple[str, int, tuple[str, ...]]] = []
    for d in devices:
        name = d.device or f"{d.major}:{d.minor}"
        out += [
            ("container_fs_reads_bytes_total", d.read_bytes, (name,)),
            ("container_fs_reads_total", d.reads, (name,)),
            ("container_fs_writes_bytes_total", d.write_bytes, (name,)),
            ("container_fs_writes_total", d.writes, (name,)),
            ("container_blkio_device_usage_total", d.read_bytes, (name, str(d.major), str(d.minor), "Read")),
            (
                "container_blkio_device_usage_total",
                d.write_bytes,
                (name, str(d.major), str(d.minor), "Write"),
            ),
        ]
    return out


def container_metrics(reading: ContainerReading, labels: list[str], ts: int) -> list[Metric]:
    """The per-container metrics of one reading taken at `ts` (ns); `labels` are the BASE_LABEL_KEYS
    values (`container_labels`)."""
    r, cg = reading, reading.cgroup
    s = NS_PER_S
    values: list[tuple[str, int, tuple[str, ...]]] = [
        ("container_cpu_usage_seconds_total", cg.cpu_usage_ns // s, ("total",)),
        ("container_cpu_user_seconds_total", cg.cpu_user_ns // s, ()),
        ("container_cpu_system_seconds_total", cg.cpu_system_ns // s, ()),
        ("container_cpu_cfs_periods_total", cg.cfs_periods, ()),
        ("container_cpu_cfs_throttled_periods_total", cg.cfs_throttled_periods, ()),
        ("container_cpu_cfs_throttled_seconds_total", cg.cfs_throttled_ns // s, ()),
        ("container_memory_usage_bytes", cg.memory_usage, ()),
        ("container_memory_working_set_bytes", cg.memory_working_set, ()),
        ("container_memory_max_usage_bytes", cg.memory_max_usage, ()),
        ("container_memory_cache", cg.memory_cache, ()),
        ("container_memory_rss", cg.memory_rss, ()),
        ("container_memory_mapped_file", cg.memory_mapped_file, ()),
        ("container_memory_kernel_usage", cg.memory_kernel, ()),
        ("container_memory_swap", cg.memory_swap, ()),
        ("container_memory_failcnt", cg.memory_failcnt, ()),
        # cadvisor reports page faults for the container and its hierarchy; a leaf cgroup's are equal.
        ("container_memory_failures_total", cg.pgfault, ("pgfault", "container")),
        ("container_memory_failures_total", cg.pgfault, ("pgfault", "hierarchy")),
        ("container_memory_failures_total", cg.pgmajfault, ("pgmajfault", "container")),
        ("container_memory_failures_total", cg.pgmajfault, ("pgmajfault", "hierarchy")),
        ("container_oom_events_total", cg.oom_events, ()),
        ("container_processes", r.processes, ()),
        ("container_threads", cg.threads, ()),
        ("container_threads_max", cg.threads_max, ()),
        ("container_file_descriptors", r.file_descriptors, ()),
        ("container_sockets", r.sockets, ()),
        ("container_fs_usage_bytes", r.fs_usage_bytes, ()),
        ("container_fs_limit_bytes", r.fs_limit_bytes, ()),
        ("container_fs_inodes_total", r.fs_inodes_total, ()),
        ("container_fs_inodes_free", r.fs_inodes_free, ()),
        ("container_spec_cpu_period", cg.cpu_period_us, ()),
        ("container_spec_cpu_quota", cg.cpu_quota_us, ()),
        ("container_spec_cpu_shares", cg.cpu_shares, ()),
        ("container_spec_memory_limit_bytes", cg.memory_limit, ()),
        ("container_spec_memory_reservation_limit_bytes", cg.memory_reservation, ()),
        ("container_spec_memory_swap_limit_bytes", cg.memory_swap_limit, ()),
        ("container_start_time_seconds", r.started_at // s, ()),
        ("container_last_seen", ts // s, ()),
        *_io_values(cg.devices),
    ]
    out = [_metric(name, ts, labels, value, *extra) for name, value, extra in values]
    # cadvisor's only ulimit; its "unlimited" is -1, which a UInt64Value cannot hold: left out then.
    if r.max_open_files > 0:
        out.append(_metric("container_ulimits_soft", ts, labels, r.max_open_files, "max_open_files"))
    return out


def network_metrics(interfaces: list[InterfaceCounters], labels: list[str], ts: int) -> list[Metric]:
    """Per-interface counters of the pod's network namespace; loopback is left out, as cadvisor does."""
    out = []
    for i in interfaces:
        if i.name == "lo":
            continue
        for name, value in (
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_packets_dropped_total", i.rx_dropped),
            ("container_network_receive_errors_total", i.rx_errors),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_packets_dropped_total", i.tx_dropped),
            ("container_network_transmit_errors_total", i.tx_errors),
        ):
            out.append(_metric(name, ts, labels, value, i.name))
    return out


def pod_labels(sandbox: PodSandbox) -> list[str]:
    """BASE_LABEL_KEYS values of pod-level metrics: the sandbox id, no image, container "POD"."""
    md = sandbox.config.metadata
    return [sandbox.id, "", md.namespace, md.name, POD_CONTAINER]


def container_labels(sandbox: PodSandbox, container: Container) -> list[str]:
    md = sandbox.config.metadata
    image = container.image_ref or container.config.image
    return [container.id, image, md.namespace, md.name, container.config.metadata.name]


# --- reading (no changes to anything) -----------------------------------------------------------------


def read_cgroup(cgroups: Cgroups, path: str) -> CgroupReading:
    def read(controller: str, name: str) -> str | None:
        d = cgroups.controller_dir(controller, path)
        if d is None:
            return None
        try:
            return (d / name).read_text()
        except OSError:
            return None

    reading = cgroup_reading(cgroups.version, read)
    for d in reading.devices:
        d.device = _block_device_name(d.major, d.minor)
    return reading


def _block_device_name(major: int, minor: int) -> str:
    """/dev/<DEVNAME> from /sys/dev/block/<major>:<minor>/uevent, as cadvisor names devices."""
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.strip().partition("=")[2]
    except OSError:
        pass
    return f"{major}:{minor}"


def read_interfaces(sandbox: PodSandbox) -> list[InterfaceCounters]:
    """The pod netns's counters, through pause's /proc/<pid>/net/dev (the namespace pause is in); none
    for a host-network pod (those are the node's) or when pause is gone."""
    if sandbox.config.host_network or not procs.alive(sandbox.pid, sandbox.pid_start_time):
        return []
    try:
        with open(f"/proc/{sandbox.pid}/net/dev") as f:
            return parse_net_dev(f.read())
    except OSError:
        return []


def read_fds(pids: list[int]) -> tuple[int, int]:
    """(open file descriptors, of which sockets) over `pids`; processes that exit meanwhile count 0."""
    fds = sockets = 0
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            continue
        fds += len(names)
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(f"{base}/{name}").startswith("socket:"):
                    sockets += 1
    return fds, sockets


def read_writable_layer(upper: Path) -> tuple[int, int, int, int]:
    """(bytes used by the writable layer, filesystem size, inodes total, inodes free) of the container's
    overlay upper dir and the filesystem it is on."""
    used = 0
    for root, _dirs, files in os.walk(upper):
        for name in files:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(root, name)).st_size
    try:
        st = os.statvfs(upper)
    except OSError:
        return used, 0, 0, 0
    return used, st.f_blocks * st.f_frsize, st.f_files, st.f_ffree


def read_container(cgroups: Cgroups, container: Container, upper: Path) -> ContainerReading:
    path = container.cgroup
    pids = cgroups.pids(path) if path else []
    fds, sockets = read_fds(pids)
    used, limit, inodes, free = read_writable_layer(upper)
    limits = None
    if procs.alive(container.pid, container.pid_start_time):
        with contextlib.suppress(OSError):
            limits = Path(f"/proc/{container.pid}/limits").read_text()
    return ContainerReading(
        cgroup=read_cgroup(cgroups, path) if path else CgroupReading(),
        processes=len(pids),
        file_descriptors=fds,
        sockets=sockets,
        fs_usage_bytes=used,
        fs_limit_bytes=limit,
        fs_inodes_total=inodes,
        fs_inodes_free=free,
        started_at=container.started_at,
        max_open_files=parse_max_open_files(limits),
    )


def measure_pod_sandbox(
    cgroups: Cgroups,
    sandbox: PodSandbox,
    containers: list[Container],
    upper_dir: Callable[[str], Path],
    clock: Callable[[], int] = time.time_ns,
) -> PodSandboxMetrics:
    """The metrics of one sandbox: its network counters, and those of `containers` (the running ones);
    `upper_dir(container id)` is the container's writable layer."""
    out = PodSandboxMetrics(sandbox.id)
    out.metrics = network_metrics(read_interfaces(sandbox), pod_labels(sandbox), clock())
    for c in containers:
        reading = read_container(cgroups, c, upper_dir(c.id))
        out.container_metrics.append(
            ContainerMetrics(c.id, container_metrics(reading, container_labels(sandbox, c), clock()))
        )
    return out
