"""CRI streaming on real pods: `podhost cri exec -it` / `attach` / `port-forward` against a real daemon.

Interactive terminals are real: the CLI runs inside a tmux session (its own tmux server socket), keys are
typed with send-keys and the screen is read with capture-pane. Both transports are exercised: the
WebSocket (`v5.channel.k8s.io`, the CLI's default) and SPDY/3.1 (`v4.channel.k8s.io`, `--transport spdy`,
and port-forward, which is SPDY only).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.cri.streaming import client as streaming_client
from podhost.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from tests.instance import Instance, OrphanReaper, isolated_instance, leak_checked
from tests.wait import wait_for

pytestmark = pytest.mark.root

BRIDGE = "phstr0"
SUBNET = "10.236.0.0/24"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/var/www"]
SLEEP = ["sleep", "3600"]
PROMPT = r"^/ #"  # busybox sh as root (capture-pane drops the trailing space)


@pytest.fixture(scope="module")
def instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    yield from isolated_instance("ph-str", BRIDGE, SUBNET)


@pytest.fixture
def ph(instance: Instance) -> Iterator[Instance]:
    yield from leak_checked(instance)


def cli(inst: Instance, *args: str) -> list[str]:
    return [sys.executable, "-m", "podhost.cli.main", "--root", str(inst.root), "cri", *args]


def pod_with(inst: Instance, name: str, command: list[str], *, tty: bool = False, stdin: bool = False,
             stdin_once: bool = False) -> tuple[str, str]:  # fmt: skip
    pod = inst.pod_config(name)
    pod_id = inst.client.run_pod_sandbox(pod)
    config = inst.container_config(name, command)
    config.tty, config.stdin, config.stdin_once = tty, stdin, stdin_once
    cid = inst.client.create_container(pod_id, config, pod)
    inst.client.start_container(cid)
    return pod_id, cid


class Tmux:
    """One tmux server (own socket) with one session running `command` in a 120x40 window."""

    def __init__(self, root: Path, command: list[str]) -> None:
        name = f"tmux-{secrets.token_hex(3)}"
        self.socket = root / f"{name}.sock"  # its own server, its socket in the instance's root
        self.status = root / f"{name}.status"
        self.errors = root / f"{name}.stderr"
        shell = " ".join(_quote(a) for a in command) + f" 2>{self.errors}; echo $? > {self.status}"
        self._tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", shell)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip

    def keys(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", text, "Enter")

    def screen(self) -> str:
        try:
            return self._tmux("capture-pane", "-p", "-t", "t")
        except subprocess.CalledProcessError:
            errors = self.errors.read_text() if self.errors.exists() else ""
            raise AssertionError(f"the terminal is gone; the CLI said: {errors}") from None

    def wait_screen(self, pattern: str, timeout: float = 20.0) -> str:
        wait_for(f"{pattern!r} on screen", lambda: re.search(pattern, self.screen(), re.M), timeout)
        return self.screen()

    def retype_until(self, text: str, pattern: str, tries: int = 10) -> None:
        """Type `text` until `pattern` shows: a resize travels apart from the keys, so the first command
        may still see the old size."""
        for _ in range(tries):
            self.keys(text)
            with contextlib.suppress(AssertionError):
                wait_for(f"{pattern!r} on screen", lambda: re.search(pattern, self.screen(), re.M), 1.0)
                return
        raise AssertionError(f"{pattern!r} never appeared on screen:\n{self.screen()}")

    def resize(self, width: int, height: int) -> None:
        self._tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def exit_status(self, timeout: float = 20.0) -> int:
        wait_for("the CLI to exit", lambda: self.status.exists() and self.status.read_text().strip(), timeout)
        return int(self.status.read_text())

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True)
        self.socket.unlink(missing_ok=True)
        self.status.unlink(missing_ok=True)
        self.errors.unlink(missing_ok=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture
def tmux_sessions() -> Iterator[list[Tmux]]:
    sessions: list[Tmux] = []
    yield sessions
    for session in sessions:
        session.kill()


# --- exec ----------------------------------------------------------------------------------------------


def test_exec_it_is_a_real_interactive_shell(ph: Instance, tmux_sessions: list[Tmux]) -> None:
    _, cid = pod_with(ph, "shell", SLEEP)
    term = Tmux(ph.root, cli(ph, "exec", "-it", cid, "sh"))
    tmux_sessions.append(term)
    term.wait_screen(PROMPT)
    term.keys("echo $((6*7))")
    term.wait_screen(r"^42\s*$")
    # The terminal's size is the window's, and follows it (SIGWINCH -> resize stream -> the container's tty).
    term.keys("stty size")
    term.wait_screen(r"^40 120\s*$")
    term.resize(100, 30)
    term.retype_until("stty size", r"^30 100\s*$")
    term.keys("exit 3")
    assert term.exit_status() == 3


def test_exec_it_over_spdy_exits_with_the_shells_status(ph: Instance, tmux_sessions: list[Tmux]) -> None:
    _, cid = pod_with(ph, "shell", SLEEP)
    term = Tmux(ph.root, cli(ph, "exec", "-it", "--transport", "spdy", cid, "sh"))
    tmux_sessions.append(term)
    term.wait_screen(PROMPT)
    term.keys("echo $((6*7))")
    term.wait_screen(r"^42\s*$")
    term.keys("exit")
    assert term.exit_status() == 0


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_exec_with_piped_stdin_and_no_tty(ph: Instance, transport: str) -> None:
    _, cid = pod_with(ph, "pipe", SLEEP)
    result = subprocess.run(
        cli(ph, "exec", "-i", "--transport", transport, cid, "sh", "-c", "tr a-z A-Z; echo oops >&2; exit 4"),
        input=b"hello from the pipe\n", capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"HELLO FROM THE PIPE\n"
    assert result.stderr == b"oops\n"


def test_exec_failures_are_reported(ph: Instance) -> None:
    _, cid = pod_with(ph, "fails", SLEEP)
    # runc's own failure is not an exit code: it comes back as an error with runc's words.
    url = ph.client.exec(pb.ExecRequest(container_id=cid, cmd=["no-such-command"], stdout=True, stderr=True))
    with pytest.raises(RuntimeFailure, match="no-such-command"):
        streaming_client.stream(url, streaming_client.StreamOptions(stdout=io.BytesIO(), stderr=io.BytesIO()))
    # A URL is good once.
    url = ph.client.exec(pb.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
    assert streaming_client.stream(url, streaming_client.StreamOptions(stdout=io.BytesIO())) == 0
    with pytest.raises(RuntimeFailure, match="404"):
        streaming_client.stream(url, streaming_client.StreamOptions(stdout=io.BytesIO()), "spdy")
    # What CRI requires of the request, and of the container, is checked before a URL is made.
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        ph.client.exec(pb.ExecRequest(container_id=cid, cmd=["sh"], tty=True, stdout=True, stderr=True))
    ph.client.stop_container(cid, 0)
    with pytest.raises(FailedPrecondition, match="not running"):
        ph.client.exec(pb.ExecRequest(container_id=cid, cmd=["sh"], stdout=True))


# --- attach --------------------------------------------------------------------------------------------


def test_attach_to_a_tty_container(ph: Instance, tmux_sessions: list[Tmux]) -> None:
    _, cid = pod_with(ph, "console", ["sh"], tty=True, stdin=True)
    term = Tmux(ph.root, cli(ph, "attach", "-i", "-t", cid))
    tmux_sessions.append(term)
    term.retype_until("", PROMPT)  # attach shows only what comes after it: Enter until a fresh prompt
    term.keys("echo $((6*7))")
    term.wait_screen(r"^42\s*$")
    term.resize(90, 25)
    term.retype_until("stty size", r"^25 90\s*$")
    term.keys("exit")  # the container's shell ends: the container exits, and the attach with it
    assert term.exit_status() == 0
    wait_for(
        "the container exited", lambda: ph.client.container_status(cid).status.state == pb.CONTAINER_EXITED
    )


def test_attach_without_tty_feeds_stdin_once(ph: Instance) -> None:
    script = "while read line; do echo got:$line; echo err:$line >&2; done; echo stdin closed"
    _, cid = pod_with(ph, "reader", ["sh", "-c", script], stdin=True, stdin_once=True)
    result = subprocess.run(
        cli(ph, "attach", "-i", "--transport", "spdy", cid), input=b"a\nb\n", capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"got:a\ngot:b\nstdin closed\n"
    assert result.stderr == b"err:a\nerr:b\n"
    wait_for(
        "the container exited", lambda: ph.client.container_status(cid).status.state == pb.CONTAINER_EXITED
    )


# --- port-forward --------------------------------------------------------------------------------------


def test_port_forward_reaches_the_pods_httpd(ph: Instance) -> None:
    pod_id, _ = pod_with(ph, "web", HTTPD)
    forward = subprocess.Popen(
        cli(ph, "port-forward", pod_id, "0:80", "0:81"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        lines = [forward.stdout.readline(), forward.stdout.readline()]
        ports = [
            int(m.group(1))
            for line in lines
            if (m := re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> ", line))
        ]
        assert len(ports) == 2, lines

        def page() -> bytes:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/", timeout=5).read()
            except OSError:
                return b""

        assert b"Welcome to nginx!" in wait_for("a page through the forwarded port", page)
        assert b"Welcome to nginx!" in page()  # every local connection gets its own pair of streams
        # Nothing listens on 81 in the pod: the connection is closed, the session goes on.
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/", timeout=5).read()
        assert b"Welcome to nginx!" in page()
        forward.send_signal(signal.SIGINT)
        assert forward.wait(10) == 0
        assert "error forwarding port 81" in (forward.stderr.read() if forward.stderr else "")
    finally:
        if forward.poll() is None:
            forward.kill()
            forward.wait()


def test_port_forward_over_a_websocket(ph: Instance) -> None:
    from websockets.sync.client import connect

    pod_id, cid = pod_with(ph, "wsweb", HTTPD)
    wait_for("the web server answering", lambda: ph.exec(cid, "wget", "-qO-", "http://127.0.0.1/")[0] == 0)
    url = ph.client.port_forward(pod_id, [80]).replace("http://", "ws://")
    with connect(url, subprotocols=["v4.channel.k8s.io"], proxy=None, compression=None) as ws:  # type: ignore[list-item]
        first = {ws.recv(timeout=5), ws.recv(timeout=5)}
        assert first == {
            b"\x00\x50\x00",
            b"\x01\x50\x00",
        }  # channels 0 and 1 open with port 80, little-endian
        ws.send(b"\x00GET / HTTP/1.0\r\n\r\n")
        body = b""
        try:
            while True:
                message = ws.recv(timeout=5)
                assert isinstance(message, bytes) and message[0] == 0
                body += message[1:]
        except Exception:
            pass
    assert b"200 OK" in body and b"Welcome to nginx!" in body


def test_streaming_does_not_leave_processes_behind(ph: Instance) -> None:
    """A client that vanishes mid-session takes its exec'd process with it."""
    _, cid = pod_with(ph, "vanish", SLEEP)
    proc = subprocess.Popen(cli(ph, "exec", "-i", cid, "sleep", "1000"), stdin=subprocess.PIPE)
    wait_for("the exec'd sleep running", lambda: "sleep 1000" in ph.exec(cid, "ps", "ax")[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for("the exec'd sleep gone", lambda: "sleep 1000" not in ph.exec(cid, "ps", "ax")[1])
