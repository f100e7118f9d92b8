"""pause itself: version, privileges, namespaces, reaping, exit on SIGTERM, and what it costs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podhost.pause import binary_path
from podhost.runtime import procs
from podhost.runtime.sandbox.pause import PauseSpec, start_pause
from tests.instance import OrphanReaper

pytestmark = pytest.mark.root

PAUSE = binary_path()
FALLBACK = [sys.executable, "-m", "podhost.pause.fallback"]


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def wait_exit(pid: int) -> int:
    """Wait status of an orphaned pause, which the session's subreaper (this process) inherited."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            time.sleep(0.005)  # not re-parented to us yet
            continue
        if got == pid:
            return status
        time.sleep(0.005)
    raise AssertionError(f"pause {pid} did not exit")


@pytest.mark.parametrize("command", [[str(PAUSE)], FALLBACK], ids=["c", "python-fallback"])
def test_version(command: list[str]) -> None:
    out = subprocess.run([*command, "-v"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("podhost-pause 1.0")


def test_pause_founds_namespaces_drops_privileges_and_exits_0_on_sigterm(orphan_reaper: OrphanReaper) -> None:
    pid = start_pause(
        PAUSE,
        PauseSpec(
            ["net", "ipc", "uts", "pid"], "podname", [], "/proc/sys/net/ipv4/ip_unprivileged_port_start=0"
        ),
    )
    try:
        for kind in ("net", "ipc", "uts", "pid"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
        assert status_field(pid, "NSpid").split() == [str(pid), "1"]  # PID 1 of its own PID namespace
        assert status_field(pid, "Uid").split() == ["65535"] * 4
        assert status_field(pid, "CapEff") == status_field(pid, "CapPrm") == "0000000000000000"
        assert status_field(pid, "NoNewPrivs") == "1"
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"/pause\0"
        uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert uts.stdout == "podname\n"
        port = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
            capture_output=True,
            text=True,
        )
        assert port.stdout == "0\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    status = wait_exit(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_pause_as_pid_1_reaps_orphans(orphan_reaper: OrphanReaper) -> None:
    pid = start_pause(PAUSE, PauseSpec(["pid"], "", [], ""))
    try:
        # 200 orphans inside pause's PID namespace: each subshell exits at once, its `sleep 0` is re-parented
        # to PID 1, which must reap it when it exits.
        script = "for i in $(seq 200); do (sleep 0 &); done"
        subprocess.run(["nsenter", "-t", str(pid), "-p", "--", "sh", "-c", script], check=True)
        time.sleep(0.5)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        zombies = [c for c in children if procs.state(int(c)) == "Z"]
        assert zombies == []
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_exit(pid)


def test_launch_errors_are_reported_with_the_step() -> None:
    with pytest.raises(Exception, match="join cgroup: errno 2"):
        start_pause(PAUSE, PauseSpec(["net"], "", [Path("/nonexistent/cgroup.procs")], ""))


def test_python_fallback_speaks_the_same_protocol(orphan_reaper: OrphanReaper) -> None:
    env = {
        "PODHOST_PAUSE_NS": "net,uts",
        "PODHOST_PAUSE_HOSTNAME": "fallback",
        "PODHOST_PAUSE_CGROUPS": "",
        "PODHOST_PAUSE_SYSCTLS": "",
    }
    out = subprocess.run(
        FALLBACK, env={**os.environ, **env}, capture_output=True, text=True, timeout=20, check=True
    )
    pid = int(out.stdout.split()[0])
    try:
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert status_field(pid, "Uid").split() == ["65535"] * 4
        uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert uts.stdout == "fallback\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    status = wait_exit(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_the_portable_libc_build_behaves_the_same(tmp_path: Path, orphan_reaper: OrphanReaper) -> None:
    """Other architectures fall back to `-DPAUSE_LIBC`; keep that build working here too."""
    binary = tmp_path / "pause"
    subprocess.run(
        [
            "cc",
            "-DPAUSE_LIBC",
            "-Os",
            "-static",
            "-Wall",
            "-Werror",
            "-o",
            str(binary),
            str(PAUSE.parents[1] / "pause.c"),
        ],
        check=True,
    )
    assert subprocess.run([str(binary), "-v"], capture_output=True, text=True).stdout == "podhost-pause 1.0\n"
    pid = start_pause(binary, PauseSpec(["net", "pid"], "", [], ""))
    try:
        assert status_field(pid, "NSpid").split() == [str(pid), "1"]
        assert status_field(pid, "Uid").split() == ["65535"] * 4
    finally:
        os.kill(pid, signal.SIGTERM)
    status = wait_exit(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
