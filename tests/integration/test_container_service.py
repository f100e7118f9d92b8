"""ContainerService against the real kernel, runc and conmon, in a minimal hand-made sandbox.

The sandbox stands in for the lead's sandbox service: a busybox `sleep` founding net/IPC/UTS (and PID)
namespaces via `unshare`, its namespaces pinned by bind mounts, the pod's hosts/hostname/resolv.conf
files and a tmpfs /dev/shm, and a pod cgroup. Every test checks that what it made is gone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podhost.config import Config
from podhost.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, RuntimeFailure
from podhost.runtime import mount, namespaces, procs
from podhost.runtime.cgroups import Cgroups
from podhost.runtime.container.service import ContainerService
from podhost.runtime.events import EventBus
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerEventType,
    ContainerMetadata,
    ContainerSecurityContext,
    ContainerState,
    Image,
    ImageConfig,
    LinuxContainerResources,
    NamespaceMode,
    NamespaceOption,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxMetadata,
    PodSandboxState,
)
from podhost.runtime.state import RecordStore
from tests.wait import wait_for

pytestmark = pytest.mark.root

BUSYBOX = Path("/bin/busybox")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\S*) (stdout|stderr) (F|P) (.*)$")


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    path = Path(tempfile.mkdtemp(prefix="ph-ctr-", dir="/tmp"))
    yield path
    assert not _mounts_under(path), _mounts_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def layer(workdir: Path) -> Path:
    """A one-layer busybox image: /bin/busybox plus its applet links, and /etc files for user lookup."""
    root = workdir / "layer"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    for name in applets.split():
        if name != "busybox":
            (root / "bin" / name).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    return root


@pytest.fixture(scope="module")
def config(workdir: Path) -> Iterator[Config]:
    cfg = Config.load(root=workdir / "root", cgroup_parent=f"/podhost-ctrtest-{secrets.token_hex(4)}")
    procs.become_subreaper()  # as the daemon does: detached conmons come back to us to be reaped
    yield cfg
    cgroups = Cgroups()
    cgroups.remove(cfg.cgroup_parent)
    assert not cgroups.leftovers(cfg.cgroup_parent)


class Pod:
    """A hand-made sandbox: pause stand-in, pinned namespaces, pod files, shm, pod cgroup."""

    def __init__(self, config: Config, shares_pid: bool, host_network: bool = False) -> None:
        self.config = config
        self.cgroups = Cgroups()
        sandbox_id = "phctrpod" + secrets.token_hex(28)
        ns_flags = ["--ipc"] + ([] if host_network else ["--net", "--uts"])
        argv = ["unshare", *ns_flags]
        if shares_pid:
            argv += ["--pid", "--fork", "--kill-child"]
        if host_network:
            argv += [str(BUSYBOX), "sleep", "1000"]
        else:  # loopback up and a pod hostname, as the sandbox service and CNI make them
            argv += [
                str(BUSYBOX),
                "sh",
                "-c",
                f"{BUSYBOX} ip link set lo up && {BUSYBOX} hostname testpod && exec {BUSYBOX} sleep 1000",
            ]
        self.unshare = subprocess.Popen(argv)
        self.pause_pid = self._pause_pid(shares_pid)
        run_dir = config.sandbox_run_dir(sandbox_id)
        run_dir.mkdir(parents=True)
        ns_paths = {}
        kinds = ["ipc"] + ([] if host_network else ["net", "uts"]) + (["pid"] if shares_pid else [])
        self._wait_ready(kinds)
        for kind in kinds:
            ns_paths[kind] = namespaces.pin(self.pause_pid, kind, run_dir / "ns" / kind)
        (run_dir / "hosts").write_text("127.0.0.1 localhost\n")
        (run_dir / "hostname").write_text("testpod\n")
        (run_dir / "resolv.conf").write_text("nameserver 127.0.0.53\n")
        (run_dir / "shm").mkdir()
        mount.mount(
            "shm",
            str(run_dir / "shm"),
            "tmpfs",
            mount.MS_NOSUID | mount.MS_NODEV | mount.MS_NOEXEC,
            "mode=1777,size=65536k",
        )
        self.log_dir = self.config.root / "logs" / sandbox_id  # type: ignore[operator]
        pid_mode = NamespaceMode.POD if shares_pid else NamespaceMode.CONTAINER
        net_mode = NamespaceMode.NODE if host_network else NamespaceMode.POD
        self.sandbox = PodSandbox(
            id=sandbox_id,
            config=PodSandboxConfig(
                metadata=PodSandboxMetadata(name="testpod", uid="uid-1", namespace="default"),
                hostname="testpod",
                log_directory=str(self.log_dir),
                namespace_options=NamespaceOption(network=net_mode, pid=pid_mode),
            ),
            runtime_handler="runc",
            state=PodSandboxState.SANDBOX_READY,
            pid=self.pause_pid,
            pid_start_time=procs.start_time(self.pause_pid),
            cgroup=f"{config.cgroup_parent}/pod-{sandbox_id[:16]}",
            ns_paths=ns_paths,
        )
        self.cgroups.create(self.sandbox.cgroup)
        self.cgroups.add_process(self.sandbox.cgroup, self.pause_pid)

    def _pause_pid(self, forked: bool) -> int:
        if not forked:
            return self.unshare.pid
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        return int(wait_for("the pause stand-in's fork", lambda: children.read_text().split(), 5)[0])

    def _wait_ready(self, kinds: list[str]) -> None:
        """Until the stand-in has unshared, set its hostname and exec'd sleep: pinning earlier would pin
        the host's namespaces."""

        def up() -> bool:
            own = all(
                os.readlink(f"/proc/{self.pause_pid}/ns/{k}") != os.readlink(f"/proc/self/ns/{k}")
                for k in kinds
            )
            return own and b"sleep" in Path(f"/proc/{self.pause_pid}/cmdline").read_bytes()

        wait_for("the pause stand-in to unshare and exec sleep", up, 5)

    def close(self) -> None:
        run_dir = self.config.sandbox_run_dir(self.sandbox.id)
        self.unshare.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pause_pid, signal.SIGKILL)
        self.unshare.wait()
        # The stand-in was unshare's child; with unshare gone it is re-parented to us (a subreaper).

        def reaped() -> bool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pause_pid, os.WNOHANG)
            return procs.state(self.pause_pid) in ("", "X")

        wait_for("the pause stand-in reaped", reaped, 5)
        for pin in self.sandbox.ns_paths.values():
            namespaces.unpin(pin)
        namespaces.unmount(str(run_dir / "shm"))
        shutil.rmtree(run_dir)
        wait_for("the pod cgroup empty", lambda: not self.cgroups.pids(self.sandbox.cgroup), 5)
        self.cgroups.remove(self.sandbox.cgroup)
        shutil.rmtree(self.log_dir, ignore_errors=True)


@pytest.fixture
def service(config: Config) -> Iterator[ContainerService]:
    svc = ContainerService(
        config, RecordStore(config.container_records, Container), EventBus(), id_prefix="phctr"
    )
    yield svc
    _remove_all(svc)
    svc.close()
    assert _leaks(config) == []


def _remove_all(service: ContainerService) -> None:
    for container in service.list():
        service.remove(container.id)


@pytest.fixture
def pod(config: Config, service: ContainerService) -> Iterator[Pod]:
    p = Pod(config, shares_pid=False)
    yield p
    _remove_all(service)  # containers go before their pod (fixtures unwind in reverse order)
    p.close()


@pytest.fixture
def make_pod(config: Config, service: ContainerService) -> Iterator[Callable[..., Pod]]:
    made: list[Pod] = []

    def make(shares_pid: bool = False, host_network: bool = False) -> Pod:
        made.append(Pod(config, shares_pid, host_network))
        return made[-1]

    yield make
    _remove_all(service)
    for p in made:
        p.close()


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split(" ")[4] for line in f]
    return [p for p in points if p.startswith(str(path) + "/")]


def _leaks(config: Config) -> list[str]:
    """Container leftovers: mounts, bundle/state dirs, records, exit files, runc state, container cgroups."""
    assert config.root is not None
    leaks = [f"mount {m}" for m in _mounts_under(config.run_dir / "containers")]
    for d in (
        config.run_dir / "containers",
        config.state_dir / "containers",
        config.container_records,
        config.run_dir / "exits",
        config.run_dir / "attach",
        config.run_dir / "runc-root" / "runc",
    ):
        if d.is_dir():
            leaks += [f"file {p}" for p in d.iterdir() if not p.name.startswith(".")]
    cgroups = Cgroups()
    leaks += [
        f"cgroup {p}"
        for p in cgroups.leftovers(config.cgroup_parent)
        if "phctr" in p.name and not p.name.startswith("pod-")
    ]
    return leaks


# --- helpers ----------------------------------------------------------------------------------------------

IMAGE = Image(
    id="sha256:" + "ab" * 32,
    repo_tags=["localhost/phctr/busybox:1"],
    config=ImageConfig(env=["PATH=/bin"], cmd=["sh"]),
)


def ccfg(name: str, command: list[str], **kwargs: Any) -> ContainerConfig:
    return ContainerConfig(
        metadata=ContainerMetadata(name=name),
        image="localhost/phctr/busybox:1",
        command=command,
        log_path=f"{name}.log",
        **kwargs,
    )  # type: ignore[arg-type]


def run(service: ContainerService, pod: Pod, layer: Path, config: ContainerConfig) -> Container:
    container = service.create(pod.sandbox, config, IMAGE, [layer])
    service.start(container.id)
    return container


def wait_exit(service: ContainerService, container_id: str, timeout: float = 10) -> Container:
    deadline = time.monotonic() + timeout
    sub = service.events.subscribe()
    try:
        while True:
            c = service.get(container_id)
            if c.state == ContainerState.CONTAINER_EXITED:
                return c
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"container {container_id} did not exit"
            sub.get(timeout=remaining)
    finally:
        sub.close()


def wait_logged(container: Container, text: str) -> None:
    """Until the container wrote `text` as a line: a readiness signal (e.g. its signal trap is set)."""
    wait_for(
        f"{text!r} in the log of {container.id[:13]}", lambda: text in (t for *_, t in log_lines(container))
    )


def log_lines(container: Container) -> list[tuple[str, str, str]]:
    out = []
    for line in Path(container.log_path).read_text().splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        out.append((m.group(2), m.group(3), m.group(4)))
    return out


# --- tests ------------------------------------------------------------------------------------------------


def test_logs_and_exit_code_error(service: ContainerService, pod: Pod, layer: Path) -> None:
    sub = service.events.subscribe()
    c = run(service, pod, layer, ccfg("err", ["sh", "-c", "echo hi; echo err >&2; exit 3"]))
    t0 = time.monotonic()
    done = wait_exit(service, c.id)
    assert time.monotonic() - t0 < 2
    assert (done.exit_code, done.reason) == (3, "Error")
    assert done.finished_at >= done.started_at > 0
    assert ("stdout", "F", "hi") in log_lines(done) and ("stderr", "F", "err") in log_lines(done)
    kinds = []
    while (event := sub.get(timeout=0.5)) is not None:
        if event.container_id == c.id:
            kinds.append(event.event_type)
    sub.close()
    assert kinds == [
        ContainerEventType.CONTAINER_CREATED_EVENT,
        ContainerEventType.CONTAINER_STARTED_EVENT,
        ContainerEventType.CONTAINER_STOPPED_EVENT,
    ]
    with pytest.raises(FailedPrecondition):
        service.start(c.id)


def test_true_completes(service: ContainerService, pod: Pod, layer: Path) -> None:
    exited: list[str] = []
    service.on_exit = lambda container: exited.append(container.id)
    c = run(service, pod, layer, ccfg("ok", ["true"]))
    done = wait_exit(service, c.id)
    assert (done.exit_code, done.reason) == (0, "Completed")
    assert exited == [c.id]


def test_stop_honours_sigterm(service: ContainerService, pod: Pod, layer: Path) -> None:
    c = run(
        service,
        pod,
        layer,
        ccfg("graceful", ["sh", "-c", "trap 'exit 0' TERM; echo trapped; sleep 100 & wait"]),
    )
    wait_logged(c, "trapped")
    t0 = time.monotonic()
    service.stop(c.id, 10)
    assert time.monotonic() - t0 < 3
    done = service.status(c.id)
    assert (done.state, done.exit_code, done.reason) == (ContainerState.CONTAINER_EXITED, 0, "Completed")
    service.stop(c.id, 10)  # idempotent


def test_stop_kills_after_timeout(service: ContainerService, pod: Pod, layer: Path) -> None:
    c = run(service, pod, layer, ccfg("stubborn", ["sh", "-c", "trap '' TERM; echo trapped; sleep 100"]))
    wait_logged(c, "trapped")
    t0 = time.monotonic()
    service.stop(c.id, 1)
    elapsed = time.monotonic() - t0
    assert 1 <= elapsed < 4
    done = service.status(c.id)
    assert (done.exit_code, done.reason) == (137, "Error")
    assert not procs.alive(c.pid, c.pid_start_time)


def test_exec_sync(service: ContainerService, pod: Pod, layer: Path) -> None:
    c = run(service, pod, layer, ccfg("exec", ["sleep", "100"]))
    result = service.exec_sync(c.id, ["sh", "-c", "echo out; echo oops >&2; exit 7"], 5)
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"oops\n", 7)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        service.exec_sync(c.id, ["sleep", "77"], 1)
    assert time.monotonic() - t0 < 3
    ps = service.exec_sync(c.id, ["ps", "-o", "pid,args"], 5).stdout.decode()
    assert "sleep 77" not in ps and "sleep 100" in ps
    assert service.exec_sync(c.id, ["sh", "-c", "kill -9 $$"], 5).exit_code == 137
    with pytest.raises(RuntimeFailure, match="executable file not found"):
        service.exec_sync(c.id, ["nosuchcmd"], 5)
    service.stop(c.id, 0)
    with pytest.raises(FailedPrecondition):
        service.exec_sync(c.id, ["true"], 5)


def test_oom_killed(service: ContainerService, pod: Pod, layer: Path) -> None:
    res = LinuxContainerResources(memory_limit_in_bytes=8 * 1024 * 1024)
    c = run(service, pod, layer, ccfg("oom", ["sh", "-c", "head -c 50m /dev/zero | tail"], resources=res))
    done = wait_exit(service, c.id, 20)
    assert done.reason == "OOMKilled", (done.exit_code, done.reason)
    assert done.exit_code != 0


def test_containers_share_the_pod_network(service: ContainerService, pod: Pod, layer: Path) -> None:
    a = run(service, pod, layer, ccfg("a", ["sleep", "100"]))
    b = run(service, pod, layer, ccfg("b", ["sleep", "100"]))
    pinned = os.stat(pod.sandbox.ns_paths["net"]).st_ino
    views = []
    for c in (a, b):
        ns = service.exec_sync(c.id, ["readlink", "/proc/self/ns/net"], 5).stdout.decode().strip()
        assert ns == f"net:[{pinned}]"
        dev = service.exec_sync(c.id, ["cat", "/proc/net/dev"], 5).stdout.decode()
        views.append(sorted(line.split(":")[0].strip() for line in dev.splitlines()[2:]))
        assert service.exec_sync(c.id, ["hostname"], 5).stdout == b"testpod\n"
    assert views[0] == views[1] == ["lo"]
    assert os.readlink("/proc/self/ns/net") != f"net:[{pinned}]"


def test_own_pid_namespace_by_default(service: ContainerService, pod: Pod, layer: Path) -> None:
    c = run(service, pod, layer, ccfg("pid", ["sh", "-c", "sleep 100; true"]))
    out = service.exec_sync(c.id, ["ps", "-o", "pid,args"], 5).stdout.decode().splitlines()[1:]
    procs_seen = {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out}
    assert procs_seen[1] == "sh -c sleep 100; true"
    assert all("sleep 1000" not in args for args in procs_seen.values())


def test_shared_pid_namespace(service: ContainerService, make_pod: Callable[..., Pod], layer: Path) -> None:
    pod = make_pod(shares_pid=True)
    c = run(service, pod, layer, ccfg("shared", ["sleep", "100"]))
    cmdline = service.exec_sync(c.id, ["cat", "/proc/1/cmdline"], 5).stdout
    assert cmdline.split(b"\0")[1:3] == [b"sleep", b"1000"]
    assert b"sleep 100" in service.exec_sync(c.id, ["ps", "-o", "args"], 5).stdout


def test_host_network_pod(service: ContainerService, make_pod: Callable[..., Pod], layer: Path) -> None:
    pod = make_pod(host_network=True)
    c = run(service, pod, layer, ccfg("hostnet", ["sleep", "100"]))
    ns = service.exec_sync(c.id, ["readlink", "/proc/self/ns/net"], 5).stdout.decode().strip()
    assert ns == os.readlink("/proc/self/ns/net")


def _assert_nothing_left(service: ContainerService, config: Config) -> None:
    assert service.list() == []
    assert _leaks(config) == []


def test_bad_memory_limit(service: ContainerService, pod: Pod, layer: Path, config: Config) -> None:
    for limit in (-1, 1024 * 1024):
        res = LinuxContainerResources(memory_limit_in_bytes=limit)
        with pytest.raises(InvalidArgument, match="memory limit"):
            service.create(pod.sandbox, ccfg("badmem", ["true"], resources=res), IMAGE, [layer])
    _assert_nothing_left(service, config)


def test_missing_command(service: ContainerService, pod: Pod, layer: Path, config: Config) -> None:
    image = Image(id=IMAGE.id, config=ImageConfig(env=["PATH=/bin"]))
    with pytest.raises(InvalidArgument, match="no command"):
        service.create(pod.sandbox, ccfg("nocmd", []), image, [layer])
    _assert_nothing_left(service, config)


def test_missing_executable(service: ContainerService, pod: Pod, layer: Path, config: Config) -> None:
    with pytest.raises(RuntimeFailure, match='exec: "nosuchexe": executable file not found in \\$PATH'):
        service.create(pod.sandbox, ccfg("noexe", ["nosuchexe"]), IMAGE, [layer])
    _assert_nothing_left(service, config)


def test_crun_fails_clearly(service: ContainerService, pod: Pod, layer: Path, config: Config) -> None:
    if not shutil.which("crun"):
        pytest.skip("crun not installed")
    pod.sandbox.runtime_handler = "crun"
    with pytest.raises(RuntimeFailure, match="crun") as info:
        service.create(pod.sandbox, ccfg("crun", ["true"]), IMAGE, [layer])
    assert "hybrid" in str(info.value) or "cgroup" in str(info.value), str(info.value)
    _assert_nothing_left(service, config)
    assert not any((config.run_dir / "runc-root" / "crun").glob("phctr*"))


def test_same_name_and_attempt_is_reserved(service: ContainerService, pod: Pod, layer: Path) -> None:
    from podhost.errors import AlreadyExists

    service.create(pod.sandbox, ccfg("twice", ["true"]), IMAGE, [layer])
    with pytest.raises(AlreadyExists):
        service.create(pod.sandbox, ccfg("twice", ["true"]), IMAGE, [layer])


def test_remove_leaves_nothing(service: ContainerService, pod: Pod, layer: Path, config: Config) -> None:
    c = run(service, pod, layer, ccfg("gone", ["sleep", "100"]))
    bundle = config.container_run_dir(c.id)
    assert Cgroups().exists(c.cgroup) and bundle.exists()
    assert not _mounts_under(bundle)  # its rootfs is the container's own copy once runc has pivoted
    assert service.exec_sync(c.id, ["ls", "/bin/sh"], 5).exit_code == 0
    stats = service.stats(c.id)
    assert stats.memory_usage_bytes > 0 and stats.cpu_usage_core_nano_seconds > 0
    sub = service.events.subscribe()
    service.remove(c.id)
    assert not _mounts_under(bundle) and not bundle.exists()
    assert not Cgroups().exists(c.cgroup)
    assert not procs.alive(c.pid, c.pid_start_time)
    assert service.records.get(c.id) is None
    events = [e.event_type for e in iter(lambda: sub.get(timeout=0.3), None) if e.container_id == c.id]
    assert events[-1] == ContainerEventType.CONTAINER_DELETED_EVENT
    sub.close()
    _assert_nothing_left(service, config)


def test_user_and_readonly_rootfs(service: ContainerService, pod: Pod, layer: Path) -> None:
    sc = ContainerSecurityContext(
        run_as_username="app", readonly_rootfs=True, seccomp_profile_type="RuntimeDefault"
    )
    c = run(service, pod, layer, ccfg("user", ["sleep", "100"], security_context=sc))
    ident = service.exec_sync(c.id, ["id"], 5).stdout.decode()
    assert ident.startswith("uid=1000(app) gid=1000(app)") and "2000(extra)" in ident
    result = service.exec_sync(c.id, ["touch", "/newfile"], 5)
    assert result.exit_code != 0 and b"Read-only" in result.stderr
    blocked = service.exec_sync(c.id, ["unshare", "-n", "true"], 5)
    assert blocked.exit_code != 0


def test_runtime_default_seccomp_keeps_busybox_working(
    service: ContainerService, pod: Pod, layer: Path
) -> None:
    sc = ContainerSecurityContext(seccomp_profile_type="RuntimeDefault")
    script = "echo hello > /tmp/index.html; httpd -p 127.0.0.1:8080 -h /tmp; sleep 100"
    c = run(service, pod, layer, ccfg("seccomp", ["sh", "-c", script], security_context=sc))
    fetch = "for i in 1 2 3 4 5 6 7 8 9; do wget -q -O - http://127.0.0.1:8080/index.html && break; sleep 0.1; done"
    got = service.exec_sync(c.id, ["sh", "-c", fetch], 5)
    assert got.stdout == b"hello\n", got
    raw = service.exec_sync(
        c.id, ["sh", "-c", "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080"], 5
    )
    assert raw.stdout.endswith(b"hello\n"), raw
    if (layer / "bin" / "ipcmk").exists():  # Debian's busybox-static builds without ipcmk/ipcs
        assert service.exec_sync(c.id, ["ipcmk", "-M", "4096"], 5).exit_code == 0
        assert b"4096" in service.exec_sync(c.id, ["ipcs", "-m"], 5).stdout
    assert b"httpd" in service.exec_sync(c.id, ["ps"], 5).stdout
    denied = service.exec_sync(c.id, ["sh", "-c", "mount -t tmpfs t /mnt"], 5)
    assert denied.exit_code != 0


def test_update_resources_and_reopen_log(service: ContainerService, pod: Pod, layer: Path) -> None:
    c = run(service, pod, layer, ccfg("upd", ["sleep", "100"]))
    service.update_resources(c.id, LinuxContainerResources(memory_limit_in_bytes=64 * 1024 * 1024))
    limit = Cgroups().controller_dir("memory", c.cgroup) / "memory.limit_in_bytes"  # type: ignore[operator]
    assert int(limit.read_text()) == 64 * 1024 * 1024
    Path(c.log_path).rename(c.log_path + ".1")
    service.reopen_log(c.id)
    wait_for("conmon's new log file", Path(c.log_path).exists, 2)


def test_a_containers_cpuset_is_cloned_from_the_pods_at_mkdir(
    service: ContainerService, pod: Pod, layer: Path
) -> None:
    """The pod cgroup passes its cpus and mems to the containers' cgroups as the kernel makes them
    (cgroup.clone_children), so runc writes neither: each write of a cpuset rebuilds the scheduler
    domains from every cpuset on the machine."""
    cgroups = Cgroups()
    pod_cpuset = cgroups.controller_dir("cpuset", pod.sandbox.cgroup)
    if pod_cpuset is None:
        pytest.skip("no cgroup v1 cpuset hierarchy on this machine")
    assert (pod_cpuset / "cgroup.clone_children").read_text().strip() == "1"
    c = run(service, pod, layer, ccfg("cpus", ["sleep", "100"]))
    container_cpuset = cgroups.controller_dir("cpuset", c.cgroup)
    assert container_cpuset is not None and container_cpuset.parent == pod_cpuset
    for name in ("cpuset.cpus", "cpuset.mems", "cgroup.clone_children"):
        assert (container_cpuset / name).read_text() == (pod_cpuset / name).read_text(), name
    assert (container_cpuset / "cpuset.cpus").read_text().strip(), "an empty cpuset admits no task"


def test_a_cpuset_left_empty_by_a_killed_daemon_is_filled_on_the_next_create() -> None:
    """A daemon SIGKILLed between a cpuset mkdir and the copy of its parent's cpus leaves an empty
    cpuset, which admits no task (moving one in fails with ENOSPC): the next create of a path below it fills it in (found by the
    RunPodSandbox:pause kill of test_crash_stages)."""
    cgroups = Cgroups()
    parent = f"/podhost-cpusettest-{secrets.token_hex(4)}"
    root = cgroups.controller_dir("cpuset", "/")
    if root is None:
        pytest.skip("no cgroup v1 cpuset hierarchy on this machine")
    try:
        (root / parent.lstrip("/")).mkdir()  # made, then the daemon was killed: cpus and mems empty
        assert not (root / parent.lstrip("/") / "cpuset.cpus").read_text().strip()
        cgroups.create(parent + "/pod-x")
        for level in (parent, parent + "/pod-x"):
            cpuset = cgroups.controller_dir("cpuset", level)
            assert cpuset is not None
            for name in ("cpuset.cpus", "cpuset.mems"):
                assert (cpuset / name).read_text() == (root / name).read_text(), (level, name)
    finally:
        cgroups.remove(parent)
    assert not cgroups.leftovers(parent)


def test_recover_after_restart(pod: Pod, layer: Path, config: Config) -> None:
    # The daemon that goes away is a service of the test's own. With the fixture's, the teardown removed
    # the container again through its stale in-memory record (RUNNING, its exit file already consumed by
    # the successor), and that SIGKILL waited out the 10 s bound for an exit nobody would report.
    first = ContainerService(
        config, RecordStore(config.container_records, Container), EventBus(), id_prefix="phctr"
    )
    c = run(
        first,
        pod,
        layer,
        ccfg("survivor", ["sh", "-c", "trap 'exit 5' TERM; echo trapped; sleep 100 & wait"]),
    )
    wait_logged(c, "trapped")
    first.close()  # the daemon goes away; conmon and the container keep running
    os.kill(c.pid, signal.SIGTERM)
    wait_for("conmon's exit file", (config.run_dir / "exits" / c.id).exists, 5)
    again = ContainerService(config, RecordStore(config.container_records, Container), EventBus())
    try:
        again.recover(procs.marked(config.instance_id))
        done = again.get(c.id)
        assert (done.state, done.exit_code, done.reason) == (ContainerState.CONTAINER_EXITED, 5, "Error")
        again.remove(c.id)
    finally:
        again.close()
