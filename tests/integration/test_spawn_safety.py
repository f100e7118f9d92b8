"""What podhost starts never outlives a failed, timed-out or interrupted start, and never touches a host file.

Drives the spawning modules directly (pause launch, `conmon.create`, the OCI runtime wrapper) against the
real conmon and runc, with fake pause binaries and OCI runtime wrappers that hang or fork escapees: after
every failure, no process marked for the test's instance is left (procs.marked), nor conmon, nor what the
runtime forked without the mark (its init, hooks).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.container import conmon, ocirt
from podhost.runtime.sandbox.pause import PauseSpec, start_pause
from tests.instance import OrphanReaper
from tests.wait import wait_for

pytestmark = pytest.mark.root

CONMON = "/usr/bin/conmon"
RUNC = "/usr/sbin/runc"
BUSYBOX = Path("/bin/busybox")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def instance() -> Iterator[str]:
    """A fresh instance id; afterwards nothing may carry its mark (and whatever does is killed)."""
    name = f"ph1-spawn-{secrets.token_hex(4)}"
    yield name
    left = procs.kill_marked(name)
    assert left == [], f"processes marked {name} left: {left}"


def script(path: Path, text: str) -> Path:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


# --- pause -------------------------------------------------------------------------------------------------


def test_pause_that_never_reports_is_killed_at_the_timeout(
    tmp_path: Path, instance: str, orphan_reaper: OrphanReaper
) -> None:
    """A launcher that hangs, with an escapee in its own session holding the launcher's pipes."""
    fake = script(tmp_path / "pause", "/usr/bin/setsid /bin/sleep 1000 &\nexec /bin/sleep 1000\n")
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"start pause: no report within 1s"):
        start_pause(fake, PauseSpec([], "", [], ""), instance, "pod-1", timeout=1.0)
    assert time.monotonic() - started < 4
    assert procs.marked(instance) == {}


def test_pause_failure_does_not_wait_for_pipes_a_leftover_holds(
    tmp_path: Path, instance: str, orphan_reaper: OrphanReaper
) -> None:
    """The launcher fails at once while a detached child keeps its stdout/stderr: the error comes at once
    (no EOF wait), carries the launcher's words, and the child is killed."""
    fake = script(
        tmp_path / "pause",
        "/usr/bin/setsid /bin/sleep 1000 &\necho 'pause: unshare: errno 1' >&2\nexit 1\n",
    )
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"start pause: pause: unshare: errno 1"):
        start_pause(fake, PauseSpec([], "", [], ""), instance, "pod-1", timeout=10.0)
    assert time.monotonic() - started < 3
    assert procs.marked(instance) == {}


def test_interrupted_pause_start_kills_what_it_started(
    tmp_path: Path, instance: str, orphan_reaper: OrphanReaper
) -> None:
    """KeyboardInterrupt (any BaseException) while waiting: the same cleanup as an error."""
    fake = script(tmp_path / "pause", "/usr/bin/setsid /bin/sleep 1000 &\nexec /bin/sleep 1000\n")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            start_pause(fake, PauseSpec([], "", [], ""), instance, "pod-1", timeout=30.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 4
    assert procs.marked(instance) == {}


def test_other_owners_are_left_alone(tmp_path: Path, instance: str, orphan_reaper: OrphanReaper) -> None:
    """The cleanup of one failed pause start kills only its own owner's processes."""
    bystander = subprocess.Popen(
        ["/bin/sleep", "1000"], env=procs.mark_env(instance, "pod-other"), start_new_session=True
    )
    try:
        # Marked once it has exec'd sleep: until then /proc shows the environment of the forked test.
        wait_for("the bystander's mark", lambda: "pod-other" in procs.marked(instance), 5)
        fake = script(tmp_path / "pause", "exit 1\n")
        with pytest.raises(RuntimeFailure, match="exit status 1"):
            start_pause(fake, PauseSpec([], "", [], ""), instance, "pod-1")
        assert [p.pid for p in procs.marked(instance)["pod-other"]] == [bystander.pid]
    finally:
        bystander.kill()
        bystander.wait()


# --- conmon and the OCI runtime ----------------------------------------------------------------------------


class Bundle:
    """A minimal real OCI bundle (busybox rootfs, `runc spec` defaults) and conmon's dirs around it."""

    def __init__(self, root: Path, instance: str) -> None:
        self.root = root
        self.id = f"{instance}-{secrets.token_hex(3)}"
        self.dir = root / "bundle"
        bin_dir = self.dir / "rootfs" / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy2(BUSYBOX, bin_dir / "busybox")
        for name in ("sh", "sleep"):
            (bin_dir / name).symlink_to("busybox")
        subprocess.run([RUNC, "spec", "--bundle", str(self.dir)], check=True)
        self.config = json.loads((self.dir / "config.json").read_text())
        self.config["process"]["terminal"] = False
        self.config["process"]["args"] = ["sh", "-c", "echo out; echo err >&2; exec sleep 1000"]
        self.config["linux"]["cgroupsPath"] = "/" + self.id
        self.write_config()
        self.runc_root = root / "runc-root"
        self.runtime = ocirt.OciRuntime("runc", RUNC, self.runc_root)
        self.instance = instance

    def write_config(self) -> None:
        (self.dir / "config.json").write_text(json.dumps(self.config))

    def init(self) -> procs.Proc:
        """The container's init, from the pid file runc wrote at create."""
        return procs.Proc.of(int((self.dir / "pidfile").read_text()))

    def spec(self, runtime_binary: str = RUNC, log_path: str = "") -> conmon.ConmonSpec:
        return conmon.ConmonSpec(
            container_id=self.id, name="c", bundle=self.dir, runtime_binary=runtime_binary,
            runtime_args=[f"--root={self.runc_root}"], container_pid_file=self.dir / "pidfile",
            conmon_pid_file=self.dir / "conmon.pid", exit_dir=self.root / "exits",
            socket_dir=self.root / "attach", persist_dir=self.root / "persist", log_path=log_path,
            instance=self.instance, owner=self.id,
        )  # fmt: skip

    def cgroups(self) -> list[Path]:
        return [h / self.id for h in CGROUP_ROOT.iterdir() if not h.is_symlink() and (h / self.id).is_dir()]

    def undo(self) -> None:
        """The caller's undo after a failed create, as the container service does it: the runtime's
        state (`delete --force`), the container cgroup (runc cannot remove it when it never saved its
        state), conmon's attach link."""
        self.runtime.delete(self.id, force=True)
        for cgroup in self.cgroups():
            cgroup.rmdir()
        (self.root / "attach" / self.id).unlink(missing_ok=True)


@pytest.fixture
def bundle(tmp_path: Path, instance: str, orphan_reaper: OrphanReaper) -> Iterator[Bundle]:
    b = Bundle(tmp_path, instance)
    try:
        yield b
    finally:
        procs.kill_marked(instance)
        b.undo()
        assert b.cgroups() == []


def conmon_processes(container_id: str) -> list[int]:
    """Every conmon on the machine started for `container_id`, marked or not."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                argv[0].endswith(b"conmon")
                and container_id.encode() in argv
                and procs.state(int(entry.name)) != "Z"
            ):
                found.append(int(entry.name))
    return found


HANGING_CREATE = """\
for arg in "$@"; do
  if [ "$arg" = create ]; then
    /usr/bin/setsid /bin/sleep 1000 &
    exec /bin/sleep 1000
  fi
done
exec /usr/sbin/runc "$@"
"""


def test_hung_runtime_create_is_killed_with_everything_it_started(bundle: Bundle, tmp_path: Path) -> None:
    wrapper = script(tmp_path / "hung-runc", HANGING_CREATE)
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"hung-runc create .*: no report within 1.5s"):
        conmon.create(CONMON, bundle.spec(str(wrapper)), timeout=1.5)
    assert time.monotonic() - started < 4.5
    assert procs.marked(bundle.instance) == {}
    assert conmon_processes(bundle.id) == []


def test_hung_hook_kills_the_runtimes_unmarked_children(bundle: Bundle) -> None:
    """The real runc hangs in a createRuntime hook: runc's init and the hook do not carry the mark (runc
    gives them their own environments) and must die with it, found through the process tree."""
    hook_pid = bundle.root / "hook.pid"
    bundle.config["hooks"] = {
        "createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", f"echo $$ > {hook_pid}; exec /bin/sleep 1000"]}
        ]
    }
    bundle.write_config()
    with pytest.raises(RuntimeFailure, match=r"runc create .*: no report within 2s"):
        conmon.create(CONMON, bundle.spec(), timeout=2.0)
    hook = int(hook_pid.read_text())
    assert procs.state(hook) in ("", "Z")  # killed (a zombie until its new parent reaps it)
    assert procs.marked(bundle.instance) == {}
    assert conmon_processes(bundle.id) == []
    for cgroup in bundle.cgroups():  # runc's init had joined the container cgroup
        assert (cgroup / "cgroup.procs").read_text() == ""


def test_runtime_create_error_is_reported_and_cleaned(bundle: Bundle) -> None:
    bundle.config["process"]["args"] = ["/no/such/binary"]
    bundle.write_config()
    with pytest.raises(RuntimeFailure, match="no such file or directory"):
        conmon.create(CONMON, bundle.spec(), timeout=10)
    assert procs.marked(bundle.instance) == {}


def unread_bytes(fifo: Path) -> int:
    """Bytes written to `fifo` that its reader has not read yet (FIONREAD reads none of them)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)
    finally:
        os.close(fd)


def test_container_without_log_path_touches_no_log_file(bundle: Bundle) -> None:
    """Finding 3: `-l none:` (not k8s-file:/dev/null). Create, start, reopen the log, exit: /dev/null stays
    the device, conmon holds no regular file but its ctl/winsz fifos and cgroup files, writes no file but
    its own (pid, exit), and still records the exit code."""
    null_before = os.stat("/dev/null")
    spec = bundle.spec()
    assert "none:" in conmon.conmon_args(CONMON, spec)
    conmon.create(CONMON, spec, timeout=10)
    monitor = procs.Proc.of(conmon.read_pid_file(spec.conmon_pid_file))
    bundle.runtime.start(bundle.id, bundle.init(), bundle.dir)
    conmon.ctl(bundle.dir, conmon.CTL_REOPEN_LOG)
    wait_for("conmon to take the reopen command", lambda: unread_bytes(bundle.dir / "ctl") == 0, 5)
    held = {os.readlink(f"/proc/{monitor.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{monitor.pid}/fd")}
    files = {h for h in held if h.startswith("/") and not h.startswith(("/dev/null", "/sys/fs/cgroup/"))}
    assert files <= {str(bundle.dir / "ctl"), str(bundle.dir / "winsz")}
    bundle.runtime.kill(bundle.id, signal.SIGKILL)
    wait_for(f"conmon (pid {monitor.pid}) gone", lambda: not monitor.alive(), 10)
    assert (bundle.root / "exits" / bundle.id).read_text() == "137"
    null_after = os.stat("/dev/null")
    assert stat.S_ISCHR(null_after.st_mode) and null_after.st_rdev == os.makedev(1, 3)
    assert (null_after.st_ino, null_after.st_mtime_ns) == (null_before.st_ino, null_before.st_mtime_ns)
    assert not os.path.lexists("/dev/null.tmp")
    made = sorted(str(p.relative_to(bundle.root)) for p in bundle.root.rglob("*") if "rootfs" not in p.parts)
    assert made == [
        "attach", f"attach/{bundle.id}", "bundle", "bundle/config.json", "bundle/conmon.pid", "bundle/ctl",
        "bundle/pidfile", "bundle/winsz", "exits", f"exits/{bundle.id}", "persist", "persist/exit",
        "runc-root", f"runc-root/{bundle.id}", f"runc-root/{bundle.id}/state.json",
    ]  # fmt: skip


def test_runtime_call_timeout_kills_its_process_group(tmp_path: Path) -> None:
    """OciRuntime.run: on a timeout the runtime's whole process group dies, not only the runtime."""
    pids = tmp_path / "pids"
    fake = script(tmp_path / "slow-runc", f"/bin/sleep 1000 &\necho $$ $! > {pids}\nwait\n")
    runtime = ocirt.OciRuntime("slow", str(fake), tmp_path / "root")
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"slow state c1: timed out after 0.5s"):
        runtime.run(ocirt.state_args("c1"), timeout=0.5)
    assert time.monotonic() - started < 3
    for pid in map(int, pids.read_text().split()):
        assert procs.state(pid) in ("", "Z"), f"pid {pid} survived"
    assert list((tmp_path / "root").iterdir()) == []  # the call's log file is gone too


def test_bound_runtime_call_timeout_kills_what_it_started_and_spares_the_conmon(
    tmp_path: Path, instance: str, orphan_reaper: OrphanReaper
) -> None:
    """An OciRuntime bound to a container marks its calls (container and call); on a timeout the call's
    escapee (its own session, its parent gone: found only by the call mark) dies, and the container's
    other marked process (its conmon) is left alone."""
    pids = tmp_path / "pids"
    fake = script(
        tmp_path / "slow-runc",
        f"env > {tmp_path / 'env'}\n"
        f"sh -c '/usr/bin/setsid /bin/sleep 1000 & echo $! > {pids}'\n"
        "exec /bin/sleep 1000\n",
    )
    conmon_standin = subprocess.Popen(
        ["/bin/sleep", "1000"], env=procs.mark_env(instance, "c1"), start_new_session=True
    )
    try:
        runtime = ocirt.OciRuntime("slow", str(fake), tmp_path / "root").for_owner(instance, "c1")
        started = time.monotonic()
        with pytest.raises(RuntimeFailure, match=r"slow state c1: timed out after 0.5s"):
            runtime.run(ocirt.state_args("c1"), timeout=0.5)
        assert time.monotonic() - started < 3
        env = (tmp_path / "env").read_text().splitlines()
        assert f"PODHOST_OWNER={instance}/c1" in env
        assert any(line.startswith("PODHOST_CALL=") for line in env)
        assert procs.state(int(pids.read_text())) == "", "killed and reaped"
        assert [p.pid for p in procs.marked(instance)["c1"]] == [conmon_standin.pid]
        assert list((tmp_path / "root").iterdir()) == []
    finally:
        conmon_standin.kill()
        conmon_standin.wait()


def test_bound_runtime_marks_never_reach_the_containers_processes(bundle: Bundle, tmp_path: Path) -> None:
    """runc gives its init and the exec'd process environments of their own: the marks (which a sweep of
    unlisted owners kills by) stay on podhost's processes, never on the container's."""
    conmon.create(CONMON, bundle.spec(), timeout=10)
    runtime = bundle.runtime.for_owner(bundle.instance, bundle.id)
    runtime.start(bundle.id, bundle.init(), bundle.dir)
    state = runtime.state(bundle.id)
    assert state is not None and state["status"] == "running"
    process = {**bundle.config["process"], "args": ["sleep", "1000"]}
    ep = runtime.exec(bundle.id, process, tmp_path)
    try:
        wait_for("the exec'd process", ep.exec_pid, 10)
        assert ep.call and procs._marks_of(ep.popen.pid) == (f"{bundle.instance}/{bundle.id}", ep.call)
        assert procs._marks_of(ep.exec_pid()) == ("", "")
        assert procs._marks_of(state["pid"]) == ("", "")
    finally:
        ep.kill()
        ep.popen.communicate(timeout=10)
        ep.cleanup()
    runtime.kill(bundle.id, signal.SIGKILL)
