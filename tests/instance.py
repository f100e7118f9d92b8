"""One isolated podhost instance for tests and benchmarks: its own root, daemon, socket, bridge, subnet.

The daemon runs as a real `podhost daemon` subprocess and is driven only through the CRI client, as
crictl or a kubelet would. The pods' resolv.conf names only 127.0.0.1, so no pod ever asks an outside
resolver; the bridge is dropped and ip_forward put back by `cleanup()`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from podhost.cli.spawn import daemon_command, spawn_daemon, tail
from podhost.config import Config
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.runtime import namespaces, procs
from podhost.runtime.image.build import ensure_test_images
from podhost.runtime.image.store import ImageStore
from podhost.runtime.network.cni import PodNetwork
from tests.leaks import (
    INSTANCE_FILE_DIRS,
    await_exit,
    bridge_ports,
    cgroup_dirs,
    find_leaks,
    mounts_under,
    processes_in,
)

BUSYBOX = "localhost/podhost/busybox:latest"
#: The environment variable that, when set, holds the ip_forward value a test run found before any instance
#: started (tests/conftest.py): what every instance puts back, rather than the value it saw at its start,
#: which may be another instance's 1 while that one's CNI ADD or containerd peer is under way.
IP_FORWARD_ENV = "PODHOST_TEST_IP_FORWARD"


class Instance:
    def __init__(self, root: Path, bridge: str, subnet: str) -> None:
        self.root, self.bridge, self.subnet = root, bridge, subnet
        root.mkdir(parents=True, exist_ok=True)
        (root / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        self.config_file = root / "podhost.toml"
        self.config_file.write_text(f'default_resolv_conf = "{root}/resolv.conf"\n')
        self.config = Config.load(root=root, config_file=self.config_file, bridge=bridge, subnet=subnet)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.client = CRIClient("unix://" + str(self.config.socket), timeout=60)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self._ip_forward = os.environ.get(IP_FORWARD_ENV) or f.read().strip()
        store = ImageStore(self.config.image_dir)
        ensure_test_images(store)
        store.close()

    # --- daemon ------------------------------------------------------------------------------------

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the daemon and wait until it answers. `env` adds to (or overrides) the environment it
        inherits, e.g. `{"PODHOST_KILL_AT": "StartContainer:record"}` (podhost.runtime.stages)."""
        cmd = daemon_command(self.root, self.bridge, self.subnet, self.config_file)
        if env:
            # env(1) execs the daemon in its own place: the Popen's pid and returncode stay the daemon's.
            cmd = ["env", *(f"{key}={value}" for key, value in env.items()), *cmd]
        self.daemon = spawn_daemon(cmd, self.root / "daemon.log", self.client)

    def wait_exited(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the daemon to end by itself (e.g. it SIGKILLed itself at a stage, then
        the return code is -9); its return code, or None while it still runs. Never fails the test."""
        assert self.daemon is not None
        try:
            return self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would."""
        assert self.daemon is not None
        self.daemon.kill()
        self.daemon.wait()

    def stop(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.root / "daemon.log", lines)

    # --- pods --------------------------------------------------------------------------------------

    def pod_config(
        self,
        name: str,
        *,
        share_pid: bool = False,
        attempt: int = 0,
        host_network: bool = False,
        sysctls: dict[str, str] | None = None,
        ports: list[tuple[int, int]] | None = None,
        uid: str = "",
    ) -> pb.PodSandboxConfig:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=name, namespace="test", uid=uid or f"uid-{name}", attempt=attempt
            ),
            hostname=name,
            log_directory=str(self.root / "logs" / name),
            labels={"app": name},
            port_mappings=[
                pb.PortMapping(container_port=c, host_port=h, host_ip="127.0.0.1") for c, h in (ports or [])
            ],
            linux=pb.LinuxPodSandboxConfig(
                sysctls=sysctls or {},
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(
                        network=pb.NODE if host_network else pb.POD,
                        pid=pb.POD if share_pid else pb.CONTAINER,
                        ipc=pb.POD,
                    )
                ),
            ),
        )

    def container_config(
        self,
        name: str,
        command: list[str],
        *,
        image: str = BUSYBOX,
        share_pid: bool = False,
        memory: int = 0,
        attempt: int = 0,
    ) -> pb.ContainerConfig:
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=attempt),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=f"{name}.log",
            labels={"io.kubernetes.container.name": name},
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(memory_limit_in_bytes=memory),
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(pid=pb.POD if share_pid else pb.CONTAINER),
                    seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
                ),
            ),
        )

    def run_pod(self, name: str, **kw: object) -> str:
        return self.client.run_pod_sandbox(self.pod_config(name, **kw))  # type: ignore[arg-type]

    def run_container(
        self, pod_id: str, pod: pb.PodSandboxConfig, name: str, command: list[str], **kw: object
    ) -> str:
        share = pod.linux.security_context.namespace_options.pid == pb.POD
        cfg = self.container_config(name, command, share_pid=share, **kw)  # type: ignore[arg-type]
        cid = self.client.create_container(pod_id, cfg, pod)
        self.client.start_container(cid)
        return cid

    def exec(self, container_id: str, *cmd: str, timeout: int = 10) -> tuple[int, str, str]:
        r = self.client.exec_sync(container_id, list(cmd), timeout)
        return r.exit_code, r.stdout.decode(), r.stderr.decode()

    def sandbox_info(self, pod_id: str) -> dict[str, object]:
        import json

        resp = self.client.pod_sandbox_status(pod_id, verbose=True)
        return json.loads(resp.info.get("info", "{}"))

    def remove_all_pods(self) -> int:
        pods = self.client.list_pod_sandbox()
        for pod in pods:
            self.client.stop_pod_sandbox(pod.id)
            self.client.remove_pod_sandbox(pod.id)
        return len(pods)

    # --- teardown ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove the instance's pods (if its daemon still answers), stop the daemon, and remove everything
        the instance made on the machine: a failing test must not leave a pod running."""
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_all_pods()
        self.stop()
        self.scrub()  # whatever the daemon could not remove (or left unlisted) must not outlive the test
        self.client.close()
        PodNetwork(self.config).remove_egress_guard()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(self._ip_forward)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            base = hierarchy / self.config.cgroup_parent.lstrip("/")
            if base.is_dir():
                for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    base.rmdir()
        for point in sorted(mounts_under(self.root), key=len, reverse=True):  # the run dir's tmpfs too
            namespaces.unmount(point)
        shutil.rmtree(self.root, ignore_errors=True)

    def scrub(self) -> list[str]:
        """Stop the daemon and remove by force what its pods left behind (tests/leaks.py finds it): kill the
        instance's marked processes and those in its cgroup parent, unmount everything under the root,
        delete the bridge's veths, the IPAM reservations, run and state files and pod cgroups. The image
        store stays. For fixtures that run many cases on one instance, so that a case that leaked does not
        fail the next ones too. Returns what was found before scrubbing ([] when there was nothing)."""
        self.stop()
        config = self.config
        found = find_leaks(self.root, self.bridge, config.cgroup_parent, config.instance_id)
        if not found:
            return []
        for _ in range(10):  # a process may fork while being killed: until none is left
            killed = procs.kill_marked(config.instance_id)
            killed += [procs.Proc.of(pid) for pid in processes_in(config.cgroup_parent)]
            if not killed:
                break
            for proc in killed:
                procs.kill(proc)
            await_exit(killed, timeout=5.0)
        for point in sorted(mounts_under(self.root), key=len, reverse=True):
            namespaces.unmount(point)
        for port in bridge_ports(self.bridge):
            subprocess.run(["ip", "link", "del", port], capture_output=True)
        for sub in (*INSTANCE_FILE_DIRS, "state/cni/ipam"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for d in sorted(cgroup_dirs(config.cgroup_parent), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        return found


class OrphanReaper:
    """Makes this process a child subreaper and reaps the pause/conmon processes it inherits.

    When a test SIGKILLs a daemon, the pods' pause and conmon processes are re-parented to the nearest
    subreaper; on machines whose PID 1 never reaps, nothing else would collect them when they exit later.
    Only zombies with those names are reaped, so subprocess's own children keep their exit statuses.
    """

    def __init__(self) -> None:
        procs.become_subreaper()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="orphan-reaper")
        self._thread.start()

    def reap_once(self) -> None:
        with self._lock:
            procs.reap_zombie_children()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No reaping meanwhile: a test that ends an orphaned pause itself and wants its exit status."""
        with self._lock:
            yield

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.reap_once()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.reap_once()


def isolated_instance(prefix: str, bridge: str, subnet: str) -> Iterator[Instance]:
    """A started instance of its own under /tmp/<prefix>-*, removed with everything it made afterwards.
    For module fixtures: `yield from isolated_instance("ph-x", "phx0", "10.x.0.0/24")`."""
    inst = Instance(Path(f"/tmp/{prefix}-{secrets.token_hex(4)}"), bridge, subnet)
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()


def leak_checked(inst: Instance) -> Iterator[Instance]:
    """For per-test fixtures: `yield from leak_checked(instance)`. After the test, its pods are stopped and
    removed through CRI (the test's cleanup), and the test fails if that left anything in the kernel or on
    disk (tests/leaks.py), with the daemon's last log lines."""
    yield inst
    if inst.daemon is None or inst.daemon.poll() is not None:
        inst.start()
    inst.remove_all_pods()
    problems = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent, inst.config.instance_id)
    if problems:
        pytest.fail("leaked: " + "; ".join(problems) + "\n" + inst.log_tail(15))
