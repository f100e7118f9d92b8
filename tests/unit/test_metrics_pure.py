"""Pure parts of CRI metrics: parsing cgroup and /proc files, and turning readings into metrics."""

from __future__ import annotations

import dataclasses

from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.runtime import metrics
from podhost.runtime.metrics import (
    DESCRIPTORS,
    CgroupReading,
    ContainerReading,
    DeviceIO,
    InterfaceCounters,
    MetricType,
    cgroup_reading,
    container_metrics,
    network_metrics,
    parse_blkio_v1,
    parse_int,
    parse_io_stat,
    parse_max_open_files,
    parse_net_dev,
)
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerMetadata,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxMetadata,
)

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
"""

V1 = {
    ("cpuacct", "cpuacct.usage"): "2500000000\n",
    ("cpuacct", "cpuacct.stat"): "user 150\nsystem 50\n",
    ("cpu", "cpu.stat"): "nr_periods 10\nnr_throttled 3\nthrottled_time 1500000000\n",
    ("cpu", "cpu.cfs_period_us"): "100000\n",
    ("cpu", "cpu.cfs_quota_us"): "20000\n",
    ("cpu", "cpu.shares"): "1024\n",
    ("memory", "memory.usage_in_bytes"): "10000\n",
    ("memory", "memory.max_usage_in_bytes"): "12000\n",
    ("memory", "memory.stat"): (
        "cache 1\nrss 2\ntotal_cache 4000\ntotal_rss 5000\ntotal_mapped_file 300\ntotal_inactive_file 1000\n"
        "total_pgfault 77\ntotal_pgmajfault 3\n"
    ),
    ("memory", "memory.kmem.usage_in_bytes"): "700\n",
    ("memory", "memory.memsw.usage_in_bytes"): "10500\n",
    ("memory", "memory.failcnt"): "2\n",
    ("memory", "memory.oom_control"): "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    ("memory", "memory.limit_in_bytes"): "67108864\n",
    ("memory", "memory.memsw.limit_in_bytes"): "9223372036854771712\n",
    ("memory", "memory.soft_limit_in_bytes"): "33554432\n",
    ("blkio", "blkio.throttle.io_service_bytes_recursive"): (
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n"
    ),
    ("blkio", "blkio.throttle.io_serviced_recursive"): "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
    ("pids", "pids.current"): "4\n",
    ("pids", "pids.max"): "max\n",
}

V2 = {
    ("cpu", "cpu.stat"): (
        "usage_usec 2500000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\n"
        "throttled_usec 1500000\n"
    ),
    ("cpu", "cpu.max"): "20000 100000\n",
    ("cpu", "cpu.weight"): "39\n",
    ("memory", "memory.current"): "10000\n",
    ("memory", "memory.peak"): "12000\n",
    ("memory", "memory.stat"): (
        "anon 5000\nfile 4000\nkernel 700\nfile_mapped 300\ninactive_file 1000\npgfault 77\npgmajfault 3\n"
    ),
    ("memory", "memory.swap.current"): "500\n",
    ("memory", "memory.events"): "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
    ("memory", "memory.max"): "67108864\n",
    ("memory", "memory.swap.max"): "max\n",
    ("memory", "memory.low"): "33554432\n",
    ("io", "io.stat"): "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    ("pids", "pids.current"): "4\n",
    ("pids", "pids.max"): "max\n",
}


def test_v1_and_v2_cgroup_files_give_the_same_reading() -> None:
    v1 = cgroup_reading(1, lambda c, n: V1.get((c, n)))
    v2 = cgroup_reading(2, lambda c, n: V2.get((c, n)))
    expected = CgroupReading(
        cpu_usage_ns=2_500_000_000, cpu_user_ns=1_500_000_000, cpu_system_ns=500_000_000, cfs_periods=10,
        cfs_throttled_periods=3, cfs_throttled_ns=1_500_000_000, cpu_period_us=100000, cpu_quota_us=20000,
        cpu_shares=1024, memory_usage=10000, memory_working_set=9000, memory_max_usage=12000,
        memory_cache=4000, memory_rss=5000, memory_mapped_file=300, memory_kernel=700, memory_swap=500,
        memory_failcnt=2, memory_limit=64 << 20, memory_swap_limit=0, memory_reservation=32 << 20,
        pgfault=77, pgmajfault=3, oom_events=1, threads=4, threads_max=0,
        devices=[DeviceIO(8, 0, read_bytes=4096, write_bytes=8192, reads=1, writes=2)],
    )  # fmt: skip
    assert v1 == expected
    # cpu.weight 39 is what runc writes for 1024 shares; the mapping back loses precision.
    assert v2 == dataclasses.replace(expected, cpu_shares=998)


def test_a_cgroup_with_no_files_reads_as_zeros() -> None:
    assert cgroup_reading(1, lambda c, n: None) == CgroupReading()
    assert cgroup_reading(2, lambda c, n: None) == CgroupReading()


def test_parse_int_reads_no_limit_as_zero() -> None:
    assert parse_int("max\n") == 0 and parse_int("9223372036854771712") == 0 and parse_int(None) == 0
    assert parse_int("42\n") == 42 and parse_int("junk") == 0


def test_net_dev_keeps_all_counters() -> None:
    assert parse_net_dev(NET_DEV) == [
        InterfaceCounters("lo", 120, 2, 0, 0, 120, 2, 0, 0),
        InterfaceCounters("eth0", 5000, 40, 1, 2, 3000, 30, 3, 4),
    ]


def test_network_metrics_are_per_interface_counters_without_loopback() -> None:
    got = network_metrics(parse_net_dev(NET_DEV), ["pod-id", "", "ns", "web", "POD"], 123)
    assert len(got) == 8
    assert all(m.label_values == ["pod-id", "", "ns", "web", "POD", "eth0"] for m in got)
    assert all(m.type == MetricType.COUNTER and m.timestamp == 123 for m in got)
    values = {m.name: m.value for m in got}
    assert values["container_network_receive_bytes_total"] == 5000
    assert values["container_network_receive_packets_dropped_total"] == 2
    assert values["container_network_transmit_errors_total"] == 3


def test_container_metrics_have_cadvisor_units_and_one_label_value_per_key() -> None:
    reading = ContainerReading(
        cgroup=cgroup_reading(1, lambda c, n: V1.get((c, n))), processes=2, file_descriptors=9, sockets=1,
        fs_usage_bytes=4096, fs_limit_bytes=1 << 30, fs_inodes_total=100, fs_inodes_free=60,
        started_at=1_700_000_000_500_000_000,
    )  # fmt: skip
    ts = 1_700_000_100_900_000_000
    got = container_metrics(reading, ["cid", "busybox", "ns", "web", "app"], ts)
    keys = {d.name: d.label_keys for d in DESCRIPTORS}
    assert all(len(m.label_values) == len(keys[m.name]) for m in got)
    one = {m.name: m for m in got}
    assert one["container_cpu_usage_seconds_total"].value == 2  # whole seconds, truncated
    assert one["container_cpu_usage_seconds_total"].label_values[-1] == "total"
    assert one["container_cpu_user_seconds_total"].value == 1
    assert one["container_memory_working_set_bytes"].value == 9000
    assert one["container_memory_working_set_bytes"].type == MetricType.GAUGE
    assert one["container_oom_events_total"].type == MetricType.COUNTER
    assert one["container_start_time_seconds"].value == 1_700_000_000
    assert one["container_last_seen"].value == 1_700_000_100
    assert one["container_sockets"].value == 1 and one["container_fs_inodes_free"].value == 60
    failures = [m for m in got if m.name == "container_memory_failures_total"]
    assert {(tuple(m.label_values[-2:]), m.value) for m in failures} == {
        (("pgfault", "container"), 77), (("pgfault", "hierarchy"), 77),
        (("pgmajfault", "container"), 3), (("pgmajfault", "hierarchy"), 3),
    }  # fmt: skip
    # Everything described is served, except the per-pod network metrics and the unset ulimit.
    described = {d.name for d in DESCRIPTORS if not {"interface", "ulimit"} & set(d.label_keys)}
    assert {m.name for m in got} == described


def test_descriptors_follow_cadvisor_names_and_critest_needs() -> None:
    names = [d.name for d in DESCRIPTORS]
    assert len(names) == len(set(names))
    assert all(n.startswith("container_") and d.help for n, d in zip(names, DESCRIPTORS, strict=True))
    for name in (
        "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
        "container_network_receive_bytes_total", "container_processes", "container_oom_events_total",
    ):  # fmt: skip
        assert name in names
    counters = [d.name for d in DESCRIPTORS if d.type == MetricType.COUNTER]
    assert all(n.endswith("_total") or n == "container_memory_failcnt" for n in counters)


def test_labels_of_pod_and_container() -> None:
    sandbox = PodSandbox("sb1", PodSandboxConfig(metadata=PodSandboxMetadata("web", "u", "team", 0)))
    container = Container(
        "c1", "sb1", ContainerConfig(metadata=ContainerMetadata("app"), image="busybox"),
        image_ref="localhost/busybox:latest",
    )  # fmt: skip
    assert metrics.pod_labels(sandbox) == ["sb1", "", "team", "web", "POD"]
    assert metrics.container_labels(sandbox, container) == [
        "c1",
        "localhost/busybox:latest",
        "team",
        "web",
        "app",
    ]


def test_conversion_to_cri_messages() -> None:
    d = convert.metric_descriptor(DESCRIPTORS[0])
    assert d.name == "container_cpu_usage_seconds_total" and list(d.label_keys)[-1] == "cpu"
    m = metrics.Metric("container_memory_rss", 5, MetricType.GAUGE, ["a", "b", "c", "d", "e"], 7)
    p = convert.pod_sandbox_metrics(
        metrics.PodSandboxMetrics("sb", [m], [metrics.ContainerMetrics("c", [m])])
    )
    assert p.pod_sandbox_id == "sb" and p.container_metrics[0].container_id == "c"
    got = p.container_metrics[0].metrics[0]
    assert got.metric_type == pb.MetricType.GAUGE and got.value.value == 7 and got.timestamp == 5
    assert list(got.label_values) == ["a", "b", "c", "d", "e"]


def test_block_io_parsers_and_open_files_limit() -> None:
    assert parse_blkio_v1(None, None) == [] and parse_io_stat("") == []
    assert parse_io_stat("259:0 rbytes=1 wbytes=2 rios=3 wios=4\nbad line\n") == [
        DeviceIO(259, 0, 1, 2, 3, 4)
    ]
    limits = "Limit                     Soft Limit           Hard Limit           Units\n"
    assert (
        parse_max_open_files(
            limits + "Max open files            1024                 20000                files\n"
        )
        == 1024
    )
    assert (
        parse_max_open_files(
            limits + "Max open files            unlimited            unlimited            files\n"
        )
        == -1
    )
    assert parse_max_open_files(None) == 0


def test_block_io_and_ulimit_metrics() -> None:
    cg = CgroupReading(devices=[DeviceIO(8, 0, 4096, 8192, 1, 2, device="/dev/sda")])
    got = container_metrics(ContainerReading(cgroup=cg, max_open_files=1024), ["i", "m", "n", "p", "c"], 1)
    values = {(m.name, tuple(m.label_values[5:])): m.value for m in got if len(m.label_values) > 5}
    assert values[("container_fs_reads_bytes_total", ("/dev/sda",))] == 4096
    assert values[("container_fs_writes_total", ("/dev/sda",))] == 2
    assert values[("container_blkio_device_usage_total", ("/dev/sda", "8", "0", "Write"))] == 8192
    assert values[("container_ulimits_soft", ("max_open_files",))] == 1024
    assert "container_ulimits_soft" not in {
        m.name for m in container_metrics(ContainerReading(cgroup=cg, max_open_files=-1), ["a"] * 5, 1)
    }


#: cri-tools pkg/validate/pod.go expectedMetricDescriptorNames, without its unimplementedMetricDescriptors
#: that podhost does not measure (hugetlb: this host's hugetlb controller is on cgroup2; PSI: cgroup v2).
CRITEST_EXPECTED = [
    "container_blkio_device_usage_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_usage_bytes",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_quota",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
    "container_ulimits_soft",
]


def test_descriptors_cover_what_critest_expects() -> None:
    assert set(CRITEST_EXPECTED) == {d.name for d in DESCRIPTORS}
