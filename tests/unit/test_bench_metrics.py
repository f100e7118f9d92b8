"""The benchmark's arithmetic and /proc parsing, on fixed inputs (no root, no processes started)."""

from __future__ import annotations

import os

import pytest

from bench import metrics

ROLLUP = """\
55d0c0a6f000-7ffd2b3fe000 ---p 00000000 00:00 0                          [rollup]
Rss:                1816 kB
Pss:                 612 kB
Pss_Anon:            120 kB
Pss_File:            492 kB
Shared_Clean:       1200 kB
"""

# comm with a space and a parenthesis: fields must be counted after the last ')'.
STAT = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 12345 0 0\n"


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert metrics.percentile(values, 0) == 1.0
    assert metrics.percentile(values, 100) == 4.0
    assert metrics.percentile(values, 50) == pytest.approx(2.5)
    assert metrics.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert metrics.percentile([7.0], 99) == 7.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        metrics.percentile([], 50)
    with pytest.raises(ValueError):
        metrics.percentile([1.0], 101)


def test_summarize() -> None:
    s = metrics.summarize([1.0, 2.0, 3.0])
    assert s == {"n": 3, "p50": 2.0, "p99": pytest.approx(2.98), "mean": 2.0, "min": 1.0, "max": 3.0}
    assert metrics.summarize([]) == {"n": 0}


def test_smaps_rollup_pss() -> None:
    assert metrics.parse_smaps_rollup(ROLLUP) == 612
    with pytest.raises(ValueError):
        metrics.parse_smaps_rollup("Rss: 1 kB\n")


def test_pss_summed_over_the_pids_still_there() -> None:
    table = {10: 100, 11: 250, 12: None}  # 12 exited between listing and reading
    assert metrics.sum_known([10, 11, 12], table.get) == (350, 2)
    assert metrics.sum_known([], table.get) == (0, 0)


def test_status_rss_and_switches() -> None:
    status = "Name:\tx\nVmRSS:\t   46616 kB\nvoluntary_ctxt_switches:\t30\nnonvoluntary_ctxt_switches:\t5\n"
    assert metrics.parse_status_rss(status) == 46616
    assert metrics.parse_status_rss("Name:\tkthreadd\n") == 0
    assert metrics.parse_status_switches(status) == 35


def test_stat_fields_after_an_odd_comm() -> None:
    assert metrics.parse_stat_comm(STAT) == "my (odd) proc"
    assert metrics.parse_stat_ppid(STAT) == 1
    assert metrics.parse_stat_cpu(STAT) == pytest.approx(300 / metrics.CLK_TCK)


def test_processes_added_and_cpu_delta() -> None:
    assert metrics.processes_added({1, 2, 3}, [2, 3, 4, 5]) == {4, 5}
    before = {1: 1.0, 2: 5.0, 3: 2.0}
    after = {1: 1.5, 2: 5.25, 4: 9.0}  # 3 exited, 4 is new: neither counts
    assert metrics.cpu_delta(before, after) == pytest.approx(0.75)


def test_readers_on_this_process_and_a_gone_one() -> None:
    me = os.getpid()
    assert (metrics.pss_kib(me) or 0) > 0
    assert (metrics.rss_kib(me) or 0) > 0
    assert metrics.cpu_seconds(me) is not None
    assert metrics.comm(me)
    gone = 2**22 + 1  # above pid_max's ceiling: never a live PID
    assert metrics.pss_kib(gone) is None
    assert metrics.rss_kib(gone) is None
    assert metrics.cpu_seconds(gone) is None
    assert metrics.context_switches(gone) is None
    assert metrics.descendants(gone) == set()
    assert metrics.tree_cpu_seconds(gone) == 0
