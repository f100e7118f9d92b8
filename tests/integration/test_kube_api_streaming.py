"""The real kubectl's streaming verbs against a real daemon's Kubernetes API (issue 11): exec (exit codes,
stdin, a terminal), attach, port-forward and cp, over what kubectl 1.32 asks first (WebSocket v5 for exec
and attach, SPDY tunnelled in a WebSocket for port-forward) and over SPDY/3.1, which older clients
speak (kubectl falls back to it when told not to use WebSockets).

One daemon (root /tmp/ph-kstr-*, bridge phstr0, subnet 10.231.24.0/24) and one set of pods serve the
module: the article's demo and a pod to attach to. Afterwards they are deleted and the instance is
checked for leaks.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.instance import OrphanReaper
from tests.integration.test_kube_api import KUBECTL, Kube
from tests.integration.test_kubelet_pods import DEMO, KubeletInstance, kubelet_instance
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE, SUBNET = "phkst0", "10.231.24.0/24"
# Both shells are their container's PID 1, which ignores a SIGTERM it has no handler for: without the traps
# the module's `kubectl delete` waited out the 30 s grace period before the SIGKILL.
ATTACH_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: attach-demo
  annotations:
    kubectl.kubernetes.io/default-container: echo
spec:
  containers:
  - name: ticker
    image: busybox:1.28
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]
  - name: echo
    image: busybox:1.28
    command: ["sh", "-c", "trap 'exit 0' TERM; while read line; do echo got: $line; done"]
    stdin: true
"""
#: kubectl's switches back to SPDY/3.1 for exec/attach/cp and for port-forward (what older clients speak).
SPDY_ONLY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


class StreamingKube(Kube):
    """kubectl with the instance's kubeconfig, optionally speaking SPDY only."""

    spdy = False

    def env(self) -> dict[str, str]:
        return {**super().env(), **(SPDY_ONLY if self.spdy else {})}

    def run(
        self, *args: str, stdin: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            env=self.env(),
            cwd=self.inst.root,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def in_terminal(self, *args: str, typed: bytes, rows: int = 33, cols: int = 101) -> tuple[int, bytes]:
        """kubectl run in a pseudo-terminal of rows x cols; `typed` is typed once the shell prompts.
        (exit status, everything the terminal showed)."""
        assert KUBECTL is not None
        pid, fd = pty.fork()
        if pid == 0:  # the child: kubectl on the terminal
            os.chdir(self.inst.root)
            os.execve(KUBECTL, [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], self.env())
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            shown, typed_yet = b"", False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:  # EIO: kubectl exited and closed the terminal
                        break
                    if not data:
                        break
                    shown += data
                if not typed_yet and b"# " in shown:
                    os.write(fd, typed)
                    typed_yet = True
            else:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), shown


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pods(orphan_reaper: OrphanReaper) -> Iterator[StreamingKube]:
    """The module's instance with the demo and the attach pod running; afterwards nothing may be left."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    instances = cast(Generator[KubeletInstance, None, None], kubelet_instance("ph-kstr", BRIDGE, SUBNET))
    inst = next(instances)
    try:
        k = StreamingKube(inst)
        wait_for(
            "the kubeconfig", lambda: k.kubeconfig.exists() and k("version", check=False).returncode == 0
        )
        k("apply", "-f", str(DEMO))
        k("apply", "-f", k.write("attach.yaml", ATTACH_POD))
        k("wait", "--for=condition=Ready", "pod/shared-namespace-demo", "pod/attach-demo", "--timeout=60s")
        yield k
        k("delete", "pod", "shared-namespace-demo", "attach-demo", "--wait=true", timeout=120)
        assert inst.client.list_pod_sandbox() == []
        problems = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
        assert not problems, "leaked: " + "; ".join(problems) + "\n" + inst.log_tail(20)
    finally:
        instances.close()  # the instance's own cleanup: pods, bridge, mounts, files


@pytest.fixture(params=["websocket", "spdy"])
def kube(pods: StreamingKube, request: pytest.FixtureRequest) -> Iterator[StreamingKube]:
    pods.spdy = request.param == "spdy"
    yield pods
    pods.spdy = False
    inst: KubeletInstance = pods.inst
    assert inst.daemon is not None and inst.daemon.poll() is None, inst.log_tail(20)


def test_exec_ps_in_a_terminal_shows_pause_as_pid_1(kube: StreamingKube) -> None:
    code, shown = kube.in_terminal(
        "exec", "-it", "shared-namespace-demo", "-c", "shell", "--", "/bin/sh", typed=b"ps ax; exit\r"
    )
    assert code == 0, shown
    lines = shown.decode(errors="replace").splitlines()
    pid1 = next(line for line in lines if line.split()[:1] == ["1"])
    assert pid1.split()[-1] == "/pause", shown
    assert any(line.rstrip().endswith("sleep 3600") for line in lines), shown
    assert any("httpd" in line for line in lines), shown  # nginx's stand-in, in the shared PID namespace


def test_exec_in_a_terminal_gets_its_size_and_exit_code(kube: StreamingKube) -> None:
    code, shown = kube.in_terminal(
        "exec",
        "-it",
        "shared-namespace-demo",
        "-c",
        "shell",
        "--",
        "/bin/sh",
        typed=b"stty size; tty; exit 7\r",
        rows=33,
        cols=101,
    )
    assert code == 7, shown
    # \r\r\n when kubectl's own terminal was not raw yet: the line ending is kubectl's, the size ours
    assert re.search(rb"33 101\r+\n", shown) and b"/dev/pts/" in shown, shown
    assert b"command terminated with exit code 7" in shown, shown


def test_exec_passes_the_exit_code_and_both_outputs(kube: StreamingKube) -> None:
    proc = kube.run(
        "exec", "shared-namespace-demo", "-c", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert proc.returncode == 3, proc
    assert proc.stdout == b"out\n"
    assert b"err\n" in proc.stderr and b"command terminated with exit code 3" in proc.stderr
    ok = kube.run("exec", "shared-namespace-demo", "-c", "shell", "--", "true")
    assert ok.returncode == 0 and ok.stdout == b"", ok


def test_exec_stdin_reaches_the_command(kube: StreamingKube) -> None:
    assert (
        kube.run("exec", "-i", "shared-namespace-demo", "-c", "shell", "--", "cat", stdin=b"hi\n").stdout
        == b"hi\n"
    )
    data = os.urandom(200_000)
    proc = kube.run("exec", "-i", "shared-namespace-demo", "-c", "shell", "--", "md5sum", stdin=data)
    assert proc.returncode == 0 and proc.stdout.split()[0].decode() == hashlib.md5(data).hexdigest(), proc


def test_exec_errors_are_kubectls(kube: StreamingKube) -> None:
    missing = kube.run("exec", "no-such-pod", "--", "true")
    assert missing.returncode == 1 and b'pods "no-such-pod" not found' in missing.stderr, missing
    absent = kube.run("exec", "shared-namespace-demo", "-c", "shell", "--", "/no/such/binary")
    assert absent.returncode != 0, absent
    # without -c kubectl picks the default container (the first) and says so
    defaulted = kube.run("exec", "shared-namespace-demo", "--", "hostname")
    assert defaulted.returncode == 0 and defaulted.stdout.strip() == b"shared-namespace-demo", defaulted
    assert b'Defaulted container "nginx"' in defaulted.stderr


def test_attach_streams_output_and_takes_stdin(kube: StreamingKube) -> None:
    assert KUBECTL is not None
    watch = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), "attach", "attach-demo", "-c", "ticker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=kube.env(),
    )
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()
        second = watch.stdout.readline()
        assert first.startswith(b"tick ") and second.startswith(b"tick "), (first, second)
        assert int(second.split()[1]) == int(first.split()[1]) + 1
    finally:
        watch.terminate()
        watch.wait(10)
    # the annotated default container ("echo") reads what is typed
    talk = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), "attach", "-i", "attach-demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.PIPE,
        env=kube.env(),
    )
    try:
        assert talk.stdin is not None and talk.stdout is not None
        token = f"hello-{os.getpid()}-{kube.spdy}".encode()
        deadline = time.monotonic() + 30
        seen = b""
        while b"got: " + token not in seen and time.monotonic() < deadline:
            talk.stdin.write(token + b"\n")
            talk.stdin.flush()
            ready, _, _ = select.select([talk.stdout], [], [], 1.0)
            if ready:
                seen += os.read(talk.stdout.fileno(), 4096)
        assert b"got: " + token in seen, seen
    finally:
        talk.terminate()
        talk.wait(10)


def test_port_forward_serves_the_pods_page_on_loopback(kube: StreamingKube) -> None:
    assert KUBECTL is not None
    port = free_port()
    forward = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(kube.kubeconfig),
            "port-forward",
            "pod/shared-namespace-demo",
            f"{port}:80",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=kube.env(),
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert line.startswith(f"Forwarding from 127.0.0.1:{port} -> 80".encode()), line
        for _ in range(3):  # one session, several connections
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
                assert reply.status == 200
                assert reply.headers.get("Content-type") == "text/html"
    finally:
        forward.terminate()
        forward.wait(10)


def test_cp_both_ways(kube: StreamingKube, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(data)
    remote = f"/tmp/blob-{kube.spdy}.bin"
    up = kube.run("cp", str(tmp_path / "blob.bin"), f"shared-namespace-demo:{remote}", "-c", "shell")
    assert up.returncode == 0, up
    summed = kube.run("exec", "shared-namespace-demo", "-c", "shell", "--", "md5sum", remote)
    assert summed.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    down = kube.run("cp", f"shared-namespace-demo:{remote}", str(tmp_path / "back.bin"), "-c", "shell")
    assert down.returncode == 0, down
    assert (tmp_path / "back.bin").read_bytes() == data
