"""pause itself: version, privileges, namespaces, reaping, exit on SIGTERM, and how it fails: every failure
is reported with its step and errno, promptly, and leaves no process behind."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.errors import RuntimeFailure
from podhost.pause import binary_path
from podhost.runtime import procs
from podhost.runtime.sandbox.pause import PauseSpec, start_pause
from tests.instance import OrphanReaper
from tests.wait import wait_for

pytestmark = pytest.mark.root

PAUSE = binary_path()
FALLBACK = [sys.executable, "-m", "podhost.pause.fallback"]
REPO = Path(__file__).resolve().parents[2]
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1), linux/nsfs.h


@pytest.fixture
def instance() -> Iterator[str]:
    """A fresh instance id for the marks; afterwards no process may carry it."""
    name = f"ph1-pause-{secrets.token_hex(4)}"
    yield name
    assert procs.kill_marked(name) == []


@pytest.fixture(scope="module")
def libc_pause(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portable `-DPAUSE_LIBC` build (other architectures use it), built here to keep it working."""
    binary = tmp_path_factory.mktemp("libc") / "pause"
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
    return binary


def pause_binary(kind: str, libc_pause: Path, tmp_path: Path) -> Path:
    """The binary start_pause gets for `kind`; a missing one makes it use the Python fallback."""
    return {"c": PAUSE, "libc": libc_pause, "python-fallback": tmp_path / "no-such-pause"}[kind]


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def end_pause(pid: int, sig: int, reaper: OrphanReaper) -> int:
    """Signal an orphaned pause and collect its exit status, with the session's reaper held off so it
    cannot take the status first."""
    with reaper.paused():
        os.kill(pid, sig)
        return wait_exit(pid)


def wait_exit(pid: int) -> int:
    """Wait status of an orphaned pause, which the session's subreaper (this process) inherited."""

    def reaped() -> tuple[int] | None:  # a tuple: a wait status of 0 is a result too
        got, status = os.waitpid(pid, os.WNOHANG)  # ChildProcessError: not re-parented to us yet
        return (status,) if got == pid else None

    (status,) = wait_for(f"pause {pid} to exit", reaped, 5, interval=0.005)
    return status


@pytest.mark.parametrize("command", [[str(PAUSE)], FALLBACK], ids=["c", "python-fallback"])
def test_version(command: list[str]) -> None:
    out = subprocess.run([*command, "-v"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("podhost-pause 1.0")


def test_pause_founds_namespaces_drops_privileges_and_exits_0_on_sigterm(
    orphan_reaper: OrphanReaper, instance: str
) -> None:
    pid = start_pause(
        PAUSE,
        PauseSpec(
            ["net", "ipc", "uts", "pid"], "podname", [], "/proc/sys/net/ipv4/ip_unprivileged_port_start=0"
        ),
        instance,
        "pod-1",
    ).pid
    try:
        for kind in ("net", "ipc", "uts", "pid"):
            assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
        assert status_field(pid, "NSpid").split() == [str(pid), "1"]  # PID 1 of its own PID namespace
        assert status_field(pid, "Uid").split() == ["65535"] * 4
        assert status_field(pid, "CapEff") == status_field(pid, "CapPrm") == "0000000000000000"
        assert status_field(pid, "NoNewPrivs") == "1"
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"/pause\0"
        # stdio is /dev/null, opened as uid 65535: nothing of the launcher's caller is held
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")} == {"/dev/null"}
        assert [p.pid for p in procs.marked(instance)["pod-1"]] == [pid]
        uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert uts.stdout == "podname\n"
        port = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
            capture_output=True,
            text=True,
        )
        assert port.stdout == "0\n"
    finally:
        status = end_pause(pid, signal.SIGTERM, orphan_reaper)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_pause_as_pid_1_reaps_orphans(orphan_reaper: OrphanReaper, instance: str) -> None:
    pid = start_pause(PAUSE, PauseSpec(["pid"], "", [], ""), instance, "pod-1").pid
    try:
        # 200 orphans inside pause's PID namespace: each subshell exits at once, its `sleep 0` is re-parented
        # to PID 1, which must reap it when it exits.
        script = "for i in $(seq 200); do (sleep 0 &); done"
        subprocess.run(["nsenter", "-t", str(pid), "-p", "--", "sh", "-c", script], check=True)

        def zombies() -> list[str]:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return [c for c in children if procs.state(int(c)) == "Z"]

        wait_for("pause to reap every orphan", lambda: zombies() == [], 5)
    finally:
        end_pause(pid, signal.SIGKILL, orphan_reaper)


@pytest.mark.parametrize("kind", ["c", "libc", "python-fallback"])
def test_launch_errors_are_reported_with_the_step(
    kind: str, libc_pause: Path, tmp_path: Path, instance: str
) -> None:
    binary = pause_binary(kind, libc_pause, tmp_path)
    with pytest.raises(RuntimeFailure, match=r"start pause: pause: join cgroup: errno 2$"):
        start_pause(
            binary, PauseSpec(["net"], "", [Path("/nonexistent/cgroup.procs")], ""), instance, "pod-1"
        )
    assert procs.marked(instance) == {}


# Runs start_pause in a private mount namespace whose /dev/null is a root-only regular file (the state
# finding 3 could leave the host in), so the pause, as uid 65535, fails for real: the host is untouched.
BROKEN_DEVNULL = """
import json, sys, time
from pathlib import Path
from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.sandbox.pause import PauseSpec, start_pause
binary, instance = Path(sys.argv[1]), sys.argv[2]
started = time.monotonic()
try:
    result = {"pid": start_pause(binary, PauseSpec(["net", "pid"], "", [], ""), instance, "pod-1").pid}
except RuntimeFailure as e:
    result = {"error": str(e)}
result["seconds"] = time.monotonic() - started
result["marked"] = sorted(procs.marked(instance))
print(json.dumps(result))
"""


@pytest.mark.parametrize("kind", ["c", "libc", "python-fallback"])
def test_pause_that_cannot_open_dev_null_says_so_and_leaves_nothing(
    kind: str, libc_pause: Path, tmp_path: Path, instance: str
) -> None:
    fake_null = tmp_path / "null"
    fake_null.touch(mode=0o600)
    out = subprocess.run(
        [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /dev/null && exec "$@"', str(fake_null),
            sys.executable, "-c", BROKEN_DEVNULL, str(pause_binary(kind, libc_pause, tmp_path)), instance,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result.get("error") == "start pause: pause: open /dev/null: errno 13", result
    assert result["seconds"] < 3  # the failure itself, not the 10 s timeout
    assert result["marked"] == []
    assert procs.marked(instance) == {}
    assert fake_null.read_bytes() == b""


def test_python_fallback_speaks_the_same_protocol(
    orphan_reaper: OrphanReaper, instance: str, tmp_path: Path
) -> None:
    """start_pause uses the fallback when the binary is missing; it behaves as pause.c does."""
    pid = start_pause(
        tmp_path / "no-such-pause", PauseSpec(["net", "uts"], "fallback", [], ""), instance, "p"
    ).pid
    try:
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert status_field(pid, "Uid").split() == ["65535"] * 4
        assert status_field(pid, "NoNewPrivs") == "1"
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")} == {"/dev/null"}
        uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert uts.stdout == "fallback\n"
    finally:
        status = end_pause(pid, signal.SIGTERM, orphan_reaper)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_the_portable_libc_build_behaves_the_same(
    libc_pause: Path, orphan_reaper: OrphanReaper, instance: str
) -> None:
    """Other architectures fall back to `-DPAUSE_LIBC`; keep that build working here too."""
    assert (
        subprocess.run([str(libc_pause), "-v"], capture_output=True, text=True).stdout
        == "podhost-pause 1.0\n"
    )
    pid = start_pause(libc_pause, PauseSpec(["net", "pid"], "", [], ""), instance, "pod-1").pid
    try:
        assert status_field(pid, "NSpid").split() == [str(pid), "1"]
        assert status_field(pid, "Uid").split() == ["65535"] * 4
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")} == {"/dev/null"}
    finally:
        status = end_pause(pid, signal.SIGTERM, orphan_reaper)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("kind", ["c", "libc", "python-fallback"])
@pytest.mark.parametrize(
    ("length", "pause_uid"), [(65536, 65535), (1000, 0)], ids=["65535-mapped", "unmapped"]
)
def test_pause_founds_the_user_namespace_first(
    kind: str, length: int, pause_uid: int, libc_pause: Path, tmp_path: Path, orphan_reaper: OrphanReaper,
    instance: str,
) -> None:  # fmt: skip
    """The user namespace comes first and owns the others; the daemon writes its maps; the pause is the
    mapped 65535 when that id is mapped, else the mapped root."""
    maps = f"0 165536 {length}\n"
    spec = PauseSpec(["net", "ipc", "uts", "pid"], "userns", [], "", (maps, maps))
    pid = start_pause(pause_binary(kind, libc_pause, tmp_path), spec, instance, "pod-1").pid
    try:
        assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "165536", str(length)]
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", "165536", str(length)]
        assert status_field(pid, "Uid").split() == [str(165536 + pause_uid)] * 4
        assert status_field(pid, "NoNewPrivs") == "1"
        assert Path(f"/proc/{pid}/setgroups").read_text().strip() == "allow"  # runc sets groups
        # Every namespace it founded is owned by its user namespace (ioctl NS_GET_USERNS).
        for kind in ("net", "ipc", "uts", "pid"):
            ns = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
            try:
                owner = fcntl.ioctl(ns, NS_GET_USERNS)
                try:
                    assert os.fstat(owner).st_ino == os.stat(f"/proc/{pid}/ns/user").st_ino, kind
                finally:
                    os.close(owner)
            finally:
                os.close(ns)
        uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
        assert uts.stdout == "userns\n"
    finally:
        status = end_pause(pid, signal.SIGTERM, orphan_reaper)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
