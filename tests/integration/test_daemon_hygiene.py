"""The daemon's own hygiene (issue 9, findings 8 and 12), against real daemons on this module's instance
(root /tmp/ph2-h-*, bridge ph2h0, subnet 10.231.2.128/25):

- a second daemon on a busy root fails at once with a clear message and changes nothing (iptables, the
  socket, the first daemon);
- a daemon that stops with no pods left removes its egress guard chain and its bridge, and keeps them
  while pods run;
- SIGTERM ends a daemon with a stuck request (a registry that accepts and never answers) within
  `shutdown_timeout`, and the log says what was abandoned.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.cli.spawn import daemon_command
from podhost.cri.client import CRIClient
from tests.instance import Instance, OrphanReaper

pytestmark = pytest.mark.root

BRIDGE = "ph2h0"
OTHER_BRIDGE = "ph2h1"
SUBNET = "10.231.2.128/25"
SHUTDOWN_TIMEOUT = 4.0
CHAIN = "PODHOST-FWD-" + BRIDGE


@pytest.fixture(scope="module")
def inst(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    instance = Instance(Path(f"/tmp/ph2-h-{secrets.token_hex(4)}"), BRIDGE, SUBNET)
    with instance.config_file.open("a") as f:
        f.write(f"shutdown_timeout = {SHUTDOWN_TIMEOUT}\n")
    try:
        instance.start()
        yield instance
    finally:
        instance.cleanup()


@pytest.fixture
def running(inst: Instance) -> Instance:
    if inst.daemon is None or inst.daemon.poll() is not None:
        inst.start()
    return inst


def ours(text: str) -> list[str]:
    """The lines of an iptables dump that name this module's bridges or chains (other tests on the
    machine may change the rest at the same time)."""
    return [line for line in text.splitlines() if "ph2h" in line]


def iptables_save() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def chain_exists(chain: str) -> bool:
    return subprocess.run(["iptables", "-w", "-S", chain], capture_output=True).returncode == 0


def sigterm_and_wait(inst: Instance, timeout: float = 30) -> tuple[int, float]:
    """(exit status, seconds from SIGTERM to exit)."""
    assert inst.daemon is not None
    started = time.monotonic()
    inst.daemon.send_signal(signal.SIGTERM)
    status = inst.daemon.wait(timeout)
    return status, time.monotonic() - started


def test_second_daemon_on_a_busy_root_fails_at_once_and_changes_nothing(running: Instance) -> None:
    before = ours(iptables_save())
    assert f":{CHAIN} - [0:0]" in before, "the first daemon installed its guard"
    files_before = sorted(str(p) for p in (running.root / "state").rglob("*"))
    # Another bridge, so anything the second daemon installed would show as new rules.
    cmd = daemon_command(running.root, OTHER_BRIDGE, SUBNET, running.config_file)
    started = time.monotonic()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started

    assert second.returncode != 0
    assert running.daemon is not None
    message = f"another podhost daemon (pid {running.daemon.pid}) already runs on {running.root / 'state'}"
    assert message in second.stderr, second.stderr
    print("second daemon:", second.stderr.strip().splitlines()[-1], f"({elapsed:.1f} s)")
    assert ours(iptables_save()) == before
    assert not chain_exists("PODHOST-FWD-" + OTHER_BRIDGE) and not link_exists(OTHER_BRIDGE)
    assert sorted(str(p) for p in (running.root / "state").rglob("*")) == files_before
    assert running.client.version().runtime_name == "podhost", "the first daemon still serves"


def test_stopping_with_no_pods_removes_the_bridge_and_the_guard(running: Instance) -> None:
    pod = running.run_pod("hygiene")
    assert link_exists(BRIDGE) and chain_exists(CHAIN)

    status, _ = sigterm_and_wait(running)
    assert status == 0
    assert link_exists(BRIDGE) and chain_exists(CHAIN), "a pod still runs: its bridge and guard stay"

    running.start()
    running.client.stop_pod_sandbox(pod)
    running.client.remove_pod_sandbox(pod)
    status, _ = sigterm_and_wait(running)
    assert status == 0
    assert not link_exists(BRIDGE), running.log_tail(10)
    assert not chain_exists(CHAIN)
    assert ours(iptables_save()) == [], "no rule names the bridge any more"

    running.start()  # a daemon that never ran a pod leaves nothing either
    assert chain_exists(CHAIN)
    status, _ = sigterm_and_wait(running)
    assert status == 0 and not chain_exists(CHAIN) and not link_exists(BRIDGE)


def files_on_disk_holding(root: Path, needle: bytes) -> list[str]:
    """Regular files under `root`, not on a tmpfs, whose bytes contain `needle`."""
    from podhost.linux import fstype_of

    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file() or "images" in path.relative_to(root).parts:
            continue
        with contextlib.suppress(OSError):
            if fstype_of(str(path)) != "tmpfs" and needle in path.read_bytes():
                found.append(str(path))
    return found


def test_a_containers_environment_never_reaches_the_disk(running: Instance) -> None:
    """The run dir (a disk directory here: /tmp) gets a tmpfs of the runtime's own, where a container's
    environment lives (its bundle, runc's state, the environment part of its record); the records in the
    state dir hold no value of it. The tmpfs goes when the daemon stops with no pod left."""
    run_dir = running.root / "run"
    assert fstype_of_run(run_dir) == "tmpfs"
    value = "s3cr3t-" + secrets.token_hex(8)
    pod_id = running.client.run_pod_sandbox(cfg := running.pod_config("env-pod"))
    config = running.container_config("env", ["sleep", "3600"])
    config.envs.add(key="PASSWORD", value=value.encode())
    cid = running.client.create_container(pod_id, config, cfg)
    running.client.start_container(cid)
    assert running.exec(cid, "sh", "-c", "echo $PASSWORD")[1].strip() == value
    assert files_on_disk_holding(running.root, value.encode()) == []
    status, _ = sigterm_and_wait(running)  # the pod still runs: the tmpfs stays, with its state
    assert status == 0 and fstype_of_run(run_dir) == "tmpfs"
    running.start()
    assert running.exec(cid, "sh", "-c", "echo $PASSWORD")[1].strip() == value, "adopted, env and all"
    running.client.stop_pod_sandbox(pod_id)
    running.client.remove_pod_sandbox(pod_id)
    status, _ = sigterm_and_wait(running)
    assert status == 0 and fstype_of_run(run_dir) != "tmpfs", "no pod left: the tmpfs is unmounted"
    assert files_on_disk_holding(running.root, value.encode()) == []


def fstype_of_run(run_dir: Path) -> str:
    from podhost.linux import fstype_of

    return fstype_of(str(run_dir))


@contextlib.contextmanager
def silent_registry() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers (a hung registry)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    try:
        yield listener, accepted
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_sigterm_ends_a_daemon_with_a_stuck_request_within_the_bound(running: Instance) -> None:
    with silent_registry() as (listener, accepted):
        port = listener.getsockname()[1]
        client = CRIClient("unix://" + str(running.config.socket), timeout=120)
        errors: list[BaseException] = []

        def pull() -> None:
            try:
                client.pull_image(f"127.0.0.1:{port}/stuck/image:1")
            except Exception as e:  # the daemon goes away under it
                errors.append(e)

        puller = threading.Thread(target=pull, daemon=True)
        puller.start()
        listener.settimeout(20)
        accepted.append(listener.accept()[0])
        accepted[0].settimeout(20)
        assert accepted[0].recv(4096)  # the daemon's request arrived: it now waits for an answer

        status, elapsed = sigterm_and_wait(running)
        print(f"daemon exited with {status} {elapsed:.1f} s after SIGTERM")
        assert elapsed < SHUTDOWN_TIMEOUT + 2, running.log_tail(10)
        assert status == 1, "a shutdown that overran says so"
        log = running.log_tail(10)
        assert f"shutdown did not finish within {SHUTDOWN_TIMEOUT:g} s" in log
        print(next(line for line in log.splitlines() if "shutdown did not finish" in line))
        assert "PullImage" in log, log
        puller.join(10)
        assert errors, "the stuck call ended with an error, not a hang"
        client.close()
