"""The benchmark's table and JSON document, built from fixed results (nothing is measured here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.harness import Params, container_config, names_path, role, sandbox_config
from podhost.cri import api_pb2 as pb


def _result(scale: float, pause_ready: float | None = None) -> dict[str, object]:
    lives = {
        "start_s": [0.010 * scale, 0.020 * scale, 0.030 * scale],
        "stop_s": [0.004 * scale] * 3,
        "remove_s": [0.001 * scale] * 3,
        "stop_remove_s": [0.005 * scale] * 3,
    }
    return {
        "root": "/tmp/ph-bench-x",
        "start_s": 1.0,
        "daemon_rss_idle_kib": 40960 * scale,
        "sandbox": lives,
        "pod": lives,
        "fleet_sequential_s": 10.0 * scale,
        "fleet_parallel_s": 5.0 * scale,
        "memory": {"pods": 100, "total_kib": 102400 * scale, "per_pod_kib": 1024 * scale},
        "daemon_rss_fleet_kib": 51200 * scale,
        "idle_cpu": {
            "daemon_pct": 0.5 * scale,
            "daemon_and_helpers_pct": 1.0 * scale,
            "daemon_wakeups_per_s": 2.0,
        },
        "pause_kill_to_notready_s": [0.002 * scale, 0.004 * scale],
        **({"pause_kill_to_ready_s": [pause_ready]} if pause_ready is not None else {}),
    }


PARAMS = {"runs": 3, "pods": 100, "in_flight": 10, "idle_seconds": 30.0, "warmup": 1}


def test_every_row_has_both_runtimes_and_their_ratio() -> None:
    rows = report.build_rows({"podhost": _result(0.5), "containerd": _result(1.0)}, PARAMS | {"density": 30})
    by_key = {r.key: r for r in rows}
    assert [r.key for r in rows] == [key for key, *_ in report.ROWS]
    assert by_key["sandbox_start_p50"].podhost == pytest.approx(10.0)
    assert by_key["sandbox_start_p50"].containerd == pytest.approx(20.0)
    assert by_key["memory_per_pod"].containerd == pytest.approx(1.0)  # MiB
    assert by_key["daemon_rss_fleet"].label == "daemon RSS, 100 pods"
    keys = (
        "sandbox_start_p50",
        "pod_start_p99",
        "memory_per_pod",
        "idle_cpu_daemon",
        "pause_kill_to_notready",
    )
    for key in keys:
        assert by_key[key].ratio == pytest.approx(0.5)
    assert by_key["idle_wakeups"].ratio == pytest.approx(1.0)


def test_the_crictl_rows_take_three_crictl_processes_out_of_the_pod_start() -> None:
    fast, slow = _result(0.5), _result(1.0)
    fast |= {"crictl_pod_start_s": [0.090, 0.100, 0.120], "crictl_version_s": [0.014, 0.015, 0.016]}
    slow |= {"crictl_pod_start_s": [0.170, 0.180, 0.200], "crictl_version_s": [0.015, 0.015, 0.018]}
    rows = {r.key: r for r in report.build_rows({"podhost": fast, "containerd": slow}, PARAMS)}
    assert rows["crictl_pod_start_p50"].podhost == pytest.approx(100.0)
    assert rows["crictl_call_p50"].containerd == pytest.approx(15.0)
    assert rows["crictl_pod_start_less_calls"].podhost == pytest.approx(55.0)  # 100 - 3 x 15
    assert rows["crictl_pod_start_less_calls"].containerd == pytest.approx(135.0)
    assert rows["crictl_pod_start_less_calls"].ratio == pytest.approx(55 / 135)
    without = report.build_rows({"podhost": _result(0.5), "containerd": slow}, PARAMS)
    assert {r.key: r for r in without}["crictl_pod_start_less_calls"].podhost is None


def _density(start_ms: list[float], teardown_ms: list[float], **extra: object) -> dict[str, object]:
    return {
        "pods": len(start_ms),
        "start_s": [v / 1e3 for v in start_ms],
        "teardown_s": [v / 1e3 for v in teardown_ms],
        "memory": {"per_pod_with_daemon_kib": 512.0},
        "daemon_rss_kib": 102400,
        "idle_cpu": {"daemon_pct": 0.1},
        **extra,
    }


def test_density_rows_split_first_and_last_hundred_and_average_the_teardown() -> None:
    fast = _result(0.5)
    fast["density"] = _density([10.0] * 100 + [50.0] * 150 + [30.0] * 100, [20.0, 40.0])
    slow = _result(1.0)
    slow["density"] = _density([100.0] * 300, [200.0, 200.0])
    rows = {
        r.key: r for r in report.build_rows({"podhost": fast, "containerd": slow}, PARAMS | {"density": 350})
    }
    assert rows["density_first_100"].label == "350 pods one after another: start p50, pods 1-100"
    assert rows["density_first_100"].podhost == pytest.approx(10.0)
    assert rows["density_last_100"].podhost == pytest.approx(30.0)  # not the 50 ms middle
    assert rows["density_last_100"].ratio == pytest.approx(0.3)
    assert rows["density_teardown"].podhost == pytest.approx(30.0)  # all of them, over the count
    assert rows["density_teardown"].ratio == pytest.approx(0.15)
    assert rows["density_memory_per_pod"].podhost == pytest.approx(0.5)  # MiB
    assert rows["density_daemon_rss"].containerd == pytest.approx(100.0)
    assert rows["density_first_100"].note == ""


def test_a_density_phase_cut_short_is_named_in_the_table() -> None:
    cut = _result(1.0)
    cut["density"] = _density([100.0] * 20, [200.0] * 20, failed_at=21, error="too many open files")
    rows = report.build_rows({"podhost": _result(0.5), "containerd": cut}, PARAMS | {"density": 1000})
    by_key = {r.key: r for r in rows}
    assert by_key["density_first_100"].podhost is None and by_key["density_first_100"].containerd == 100.0
    assert by_key["density_first_100"].note == "containerd failed at pod 21 (too many open files)"
    assert "* 1,000 pods one after another" in report.render_table(rows)


def test_a_run_without_the_density_phase_prints_none_of_its_rows() -> None:
    rows = report.build_rows({"podhost": _result(0.5), "containerd": _result(1.0)}, PARAMS | {"density": 0})
    keys = [r.key for r in rows]
    assert "sandbox_start_p50" in keys and not [k for k in keys if k.startswith("density_")]


def test_missing_pod_manager_is_named_not_zero() -> None:
    rows = report.build_rows({"podhost": _result(0.5), "containerd": _result(1.0)}, PARAMS)
    row = {r.key: r for r in rows}["pause_kill_to_ready"]
    assert row.podhost is None and row.containerd is None and row.ratio is None
    assert row.note == "n/a (pod manager not built yet)"
    table = report.render_table(rows)
    assert "n/a (pod manager not built yet)" in table
    failed = _result(0.5)
    failed["pause_kill_to_ready_s"], failed["pause_kill_not_ready_again"] = [], 1
    row = {r.key: r for r in report.build_rows({"podhost": failed}, PARAMS)}["pause_kill_to_ready"]
    assert row.podhost is None and row.note == report.NOT_READY_AGAIN
    ready = report.build_rows({"podhost": _result(0.5, 0.120), "containerd": _result(1.0)}, PARAMS)
    assert {r.key: r for r in ready}["pause_kill_to_ready"].podhost == pytest.approx(120.0)


def test_one_runtime_only_leaves_the_other_column_empty() -> None:
    rows = report.build_rows({"podhost": _result(1.0)}, PARAMS)
    assert all(r.containerd is None and r.ratio is None for r in rows)


def test_ratio_guards() -> None:
    assert report.ratio(1.0, 0.0) is None
    assert report.ratio(None, 1.0) is None
    assert report.ratio(3.0, 2.0) == 1.5


def test_table_is_aligned_with_one_line_per_row() -> None:
    rows = report.build_rows({"podhost": _result(0.5), "containerd": _result(1.0)}, PARAMS)
    lines = report.render_table(rows).splitlines()
    assert lines[0].split() == ["metric", "podhost", "containerd", "podhost/containerd"]
    body = lines[2 : 2 + len(rows)]
    assert len(body) == len(rows)
    assert body[0].startswith("sandbox start (RunPodSandbox) p50 (ms)")
    assert body[0].split()[-3:] == ["10.0", "20.0", "0.50x"]
    assert len({len(line) for line in [lines[1]] + [ln for ln in body if ln.endswith("x")]}) == 1


def test_json_document_shape(tmp_path: Path) -> None:
    results = {"podhost": _result(0.5), "containerd": _result(1.0)}
    doc = report.document(
        mode="full",
        params=PARAMS,
        results=results,
        leaks={"podhost": [], "containerd": []},
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:10:00+00:00",
        machine={"cpus": 2},
        git={"commit": "abc", "dirty": False},
    )
    out = tmp_path / "results" / "latest.json"
    report.write_json(doc, out)
    loaded = json.loads(out.read_text())
    assert set(loaded) == {
        "schema", "mode", "started_at", "finished_at", "params", "machine", "git", "rows", "results", "leaks",
    }  # fmt: skip
    assert loaded["schema"] == report.SCHEMA
    row = loaded["rows"][0]
    assert set(row) == {"key", "label", "unit", "podhost", "containerd", "ratio", "note"}
    assert loaded["results"]["containerd"]["pod"]["start_s"] == [0.01, 0.02, 0.03]
    assert not list(out.parent.glob("*.tmp"))


def test_workload_is_the_same_for_both_runtimes() -> None:
    pod = sandbox_config("p", "u1", Path("/tmp/ph-bench-x/logs/u1"), "/podhost-ctrd-bench/podu1")
    ns = pod.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (pb.POD, pb.CONTAINER, pb.POD)
    assert list(pod.dns_config.servers) == ["127.0.0.1"]
    assert not pod.port_mappings
    assert pod.linux.cgroup_parent == "/podhost-ctrd-bench/podu1"
    ctr = container_config()
    assert list(ctr.command) == ["sleep", "3600"]
    assert ctr.image.image == "localhost/podhost/busybox:latest"
    assert ctr.linux.security_context.namespace_options.pid == pb.CONTAINER


def test_roles_and_ownership_by_path() -> None:
    assert [role(c) for c in ("pause", "conmon", "containerd-shim", "sleep")] == [
        "pause", "conmon", "shim", "workload",
    ]  # fmt: skip
    root = Path("/tmp/ph-bench-ab")
    assert names_path(["/usr/bin/conmon", "-b", "/tmp/ph-bench-ab/run/c1"], root)
    assert not names_path(["/usr/bin/conmon", "-b", "/tmp/ph-bench-abc/run/c1"], root)
    assert not names_path(["/tmp/ph-bench-ab/bin"], root)  # argv[0] is the program, not an argument


def test_quick_is_smaller_than_full() -> None:
    full, quick = Params.full(), Params.quick()
    assert full.runs >= 50 and full.pods >= 100 and full.in_flight == 10 and full.idle_seconds >= 30
    assert quick.runs < full.runs and quick.pods < full.pods and quick.idle_seconds < full.idle_seconds


def test_command_line_defaults_are_the_documented_runs() -> None:
    from bench.__main__ import params_from, parse_args

    assert params_from(parse_args([])) == Params.full()
    assert params_from(parse_args(["--quick"])) == Params.quick()
    assert params_from(parse_args(["--quick", "--pods", "7", "--idle", "0"])).pods == 7
    assert params_from(parse_args(["--idle", "0"])).idle_seconds == 0
    assert Params.full().density == 1000 and params_from(parse_args(["--density", "0"])).density == 0


def test_restart_manifest_and_ready_condition() -> None:
    import yaml

    from bench.harness import pod_ready, restart_manifest

    doc = yaml.safe_load(restart_manifest())
    assert (doc["kind"], doc["metadata"]["name"], doc["metadata"]["namespace"]) == (
        "Pod",
        "bench-restart",
        "bench",
    )
    assert doc["spec"]["containers"][0]["command"] == ["sleep", "3600"]
    assert pod_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert not pod_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not pod_ready({})
