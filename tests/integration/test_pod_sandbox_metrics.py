"""CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics) of a real pod, as the kubelet's
PodAndContainerStatsFromCRI path and critest's "runtime should support metrics operations" read them."""

from __future__ import annotations

import subprocess

import pytest

from podhost.cri import api_pb2 as pb
from tests.instance import Instance

pytestmark = pytest.mark.root


def by_name(metrics: list[pb.Metric]) -> dict[str, list[pb.Metric]]:
    out: dict[str, list[pb.Metric]] = {}
    for m in metrics:
        out.setdefault(m.name, []).append(m)
    return out


def test_a_running_pod_has_cadvisor_metrics(podhost: Instance) -> None:
    pod = podhost.pod_config("metricspod")
    pod_id = podhost.client.run_pod_sandbox(pod)
    cid = podhost.run_container(pod_id, pod, "sleeper", ["sleep", "3600"])
    ip = podhost.client.pod_sandbox_status(pod_id).status.network.ip
    subprocess.run(["busybox", "ping", "-c", "2", "-W", "1", ip], capture_output=True, check=True)

    descriptors = {d.name: d for d in podhost.client.list_metric_descriptors()}
    assert all(d.help and d.label_keys for d in descriptors.values())

    listed = podhost.client.list_pod_sandbox_metrics()
    assert [p.pod_sandbox_id for p in listed] == [pod_id]
    pod_metrics = listed[0]
    assert [c.container_id for c in pod_metrics.container_metrics] == [cid]
    served = list(pod_metrics.metrics) + list(pod_metrics.container_metrics[0].metrics)
    # Every metric served is described, with one label value per label key (what critest checks).
    for m in served:
        assert m.name in descriptors, m.name
        assert len(m.label_values) == len(descriptors[m.name].label_keys), m.name
        assert m.timestamp > 1_600_000_000 * 10**9
    # ... and every described metric is served for a running pod, block I/O aside (a container that
    # touched no block device has none; critest counts those as optional).
    block_io = {n for n, d in descriptors.items() if "device" in d.label_keys}
    assert set(descriptors) - block_io == {m.name for m in served} - block_io

    net = by_name(list(pod_metrics.metrics))
    eth0 = {m.name: m for ms in net.values() for m in ms if m.label_values[-1] == "eth0"}
    assert eth0["container_network_receive_bytes_total"].value.value > 2 * 84  # the echo requests
    assert eth0["container_network_receive_packets_total"].value.value >= 2
    assert eth0["container_network_transmit_packets_total"].value.value >= 2  # the echo replies
    assert eth0["container_network_receive_bytes_total"].metric_type == pb.MetricType.COUNTER
    assert net["container_network_receive_bytes_total"][0].label_values[:5] == [
        pod_id,
        "",
        pod.metadata.namespace,
        "metricspod",
        "POD",
    ]

    c = {ms[0].name: ms for ms in by_name(list(pod_metrics.container_metrics[0].metrics)).values()}
    labels = c["container_memory_working_set_bytes"][0].label_values
    assert labels[0] == cid and labels[2:] == [pod.metadata.namespace, "metricspod", "sleeper"] and labels[1]
    assert c["container_memory_working_set_bytes"][0].value.value > 0
    assert c["container_memory_working_set_bytes"][0].metric_type == pb.MetricType.GAUGE
    assert c["container_memory_usage_bytes"][0].value.value > 0
    assert c["container_processes"][0].value.value == 1  # sleep
    assert c["container_file_descriptors"][0].value.value >= 3
    assert c["container_start_time_seconds"][0].value.value > 1_600_000_000
    assert c["container_ulimits_soft"][0].label_values[-1] == "max_open_files"
    assert c["container_ulimits_soft"][0].value.value > 0
    cpu = c["container_cpu_usage_seconds_total"][0]
    assert cpu.label_values[-1] == "total" and cpu.metric_type == pb.MetricType.COUNTER
    assert {tuple(m.label_values[-2:]) for m in c["container_memory_failures_total"]} == {
        ("pgfault", "container"), ("pgfault", "hierarchy"), ("pgmajfault", "container"),
        ("pgmajfault", "hierarchy"),
    }  # fmt: skip
    assert max(m.value.value for m in c["container_memory_failures_total"]) > 0  # sleep faulted its pages in

    # A second look: counters do not go back, timestamps move on.
    again = podhost.client.list_pod_sandbox_metrics()[0].container_metrics[0].metrics
    cpu2 = next(m for m in again if m.name == "container_cpu_usage_seconds_total")
    assert cpu2.value.value >= cpu.value.value and cpu2.timestamp > cpu.timestamp

    # A stopped pod is not listed (only Ready sandboxes are measured).
    podhost.client.stop_pod_sandbox(pod_id)
    assert podhost.client.list_pod_sandbox_metrics() == []
