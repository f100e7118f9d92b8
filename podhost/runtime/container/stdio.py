"""A container's stdio for streaming sessions: an interactive `runc exec`, or conmon's attach socket.

Both give the streaming server the same small surface (`read_output`, `write_stdin`, `close_stdin`,
`resize`, `wait`, `close`), so it never needs to know which it has.

Exec (CRI-O's way, `internal/oci/runtime_oci.go` ExecContainer): `runc exec --process` in the
foreground. Without a tty its stdio are pipes the exec'd process inherits. With a tty (`terminal: true`
in the process spec) runc allocates the container's console itself and copies between it and runc's own
stdio, which here is a pty pair made for the session (runc puts it in raw mode, so echo and line editing
happen once, in the container's tty). The first size goes in the process spec (`consoleSize`), so the
console has it before the process starts; a later resize sets the session pty's size and sends runc
SIGWINCH, and runc copies the size to the container's console. runc's exit status is the process's
(128+N after signal N).

Attach (conmon's contract, src/conn_sock.c and src/ctrl.c): a SOCK_SEQPACKET socket at
`<socket dir>/<id>/attach`, connected through /proc/self/fd so long paths fit in sun_path. Every packet
conmon sends starts with the pipe it came from (2 stdout, 3 stderr); what the client sends is the
container's stdin, raw. Shutting down the write side makes conmon close the container's stdin when it
was started without --leave-stdin-open (stdin_once). Resizes go to the ctl fifo as "1 <rows> <cols>".

Owns no records and decides nothing about whether a session may start (the runtime facade does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import termios
import uuid
from pathlib import Path
from typing import Any

from podhost.errors import NotFound, RuntimeFailure
from podhost.runtime.container import conmon, ocirt

log = logging.getLogger(__name__)

STDOUT = 1
STDERR = 2
#: conmon's attach socket pipe numbers (first byte of each packet).
ATTACH_STDOUT = 2
ATTACH_STDERR = 3
#: conmon reads at most this much of one stdin packet; larger writes are split.
ATTACH_STDIN_CHUNK = 4096
READ_SIZE = 32 * 1024
#: How long after SIGKILL a session waits for runc to report before giving up on its status.
KILL_WAIT_S = 10.0


def set_winsize(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class ExecIO:
    """One interactive `runc exec` session."""

    def __init__(self, ep: ocirt.ExecProcess, tty: bool, master: int | None, label: str) -> None:
        self.ep = ep
        self.tty = tty
        self.label = label
        self._master = master
        self._stdin: int | None = None
        self._outputs: dict[int, int] = {}  # fd -> STDOUT/STDERR
        if master is not None:
            self._stdin = master
            self._outputs[master] = STDOUT
        else:
            popen = ep.popen
            if popen.stdin is not None:
                self._stdin = popen.stdin.fileno()
            for stream, kind in ((popen.stdout, STDOUT), (popen.stderr, STDERR)):
                if stream is not None:
                    self._outputs[stream.fileno()] = kind
        self._selector = selectors.DefaultSelector()
        for fd in self._outputs:
            self._selector.register(fd, selectors.EVENT_READ)
        self._closed = False

    @property
    def pid(self) -> int:
        return self.ep.popen.pid

    def read_output(self) -> tuple[int, bytes] | None:
        """The next output chunk as (STDOUT|STDERR, bytes); None once every output has ended."""
        while self._outputs:
            for key, _ in self._selector.select():
                fd = int(key.fd)
                try:
                    data = os.read(fd, READ_SIZE)
                except OSError:  # EIO: the pty's other side is gone (runc exited)
                    data = b""
                if data:
                    return self._outputs[fd], data
                self._selector.unregister(fd)
                del self._outputs[fd]
        return None

    def write_stdin(self, data: bytes) -> None:
        if self._stdin is None:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._stdin, view)
            view = view[written:]

    def close_stdin(self) -> None:
        """End of input. A pipe is closed (the process reads EOF); a terminal gets nothing, as a terminal
        whose keyboard went quiet would (a client that hangs up ends the session through `close`)."""
        if self._master is not None or self._stdin is None:
            return
        popen = self.ep.popen
        if popen.stdin is not None:
            with contextlib.suppress(OSError):
                popen.stdin.close()
        self._stdin = None

    def resize(self, width: int, height: int) -> None:
        if self._master is None or width <= 0 or height <= 0:
            return
        set_winsize(self._master, width, height)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.ep.popen.pid, signal.SIGWINCH)  # runc copies its terminal's size to the container's

    def wait(self) -> int:
        """The exec'd process's exit status (runc's own when runc failed; see `error`)."""
        code = self.ep.popen.wait()
        return code if code >= 0 else 128 - code

    def error(self) -> str:
        """runc's own error when it failed to run the process (empty when the process ran). Only
        error-level lines count: a warning in runc's log does not make an exit status runc's."""
        try:
            lines = self.ep.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        messages = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                messages.append(str(entry.get("msg", "")).strip())
        return "; ".join(m for m in messages if m)

    def abort(self) -> None:
        """Kill the exec'd process (runc then exits, which ends the output); other threads may be reading."""
        if self.ep.popen.poll() is None:
            log.info("exec %s: client gone, killing the exec'd process", self.label)
            if self.ep.exec_pid() > 0:
                self.ep.kill()
            else:  # runc has not started it yet: stop runc instead
                self.ep.popen.kill()

    def close(self) -> None:
        """Release everything; a process still running is killed (its client is gone)."""
        if self._closed:
            return
        self._closed = True
        popen = self.ep.popen
        if popen.poll() is None:
            log.info("exec %s: client gone, killing the exec'd process", self.label)
            self.ep.kill()
            try:
                popen.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self._selector.close()
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None
        self.ep.cleanup()


def start_exec(
    runtime: ocirt.OciRuntime,
    container_id: str,
    process: dict[str, Any],
    work_dir: Path,
    *,
    tty: bool,
    stdin: bool,
    size: tuple[int, int] = (80, 24),
) -> ExecIO:
    """Start `runc exec` of `process` (an OCI process object) with session stdio. `size` is the first
    terminal size (width, height) when `tty`."""
    token = uuid.uuid4().hex[:8]
    process_file = work_dir / f".exec-{token}.json"
    pid_file = work_dir / f".exec-{token}.pid"
    runtime.root.mkdir(parents=True, exist_ok=True)
    log_file = runtime.root / f".exec-{token}.log"
    process = dict(process, terminal=tty)
    if tty:
        # runc sizes the console before the process starts; resizing it later races with the process.
        process["consoleSize"] = {"width": size[0], "height": size[1]}
    process_file.write_text(json.dumps(process))
    argv = runtime.command(ocirt.exec_args(container_id, process_file, pid_file), log_file)
    master: int | None = None
    try:
        if tty:
            master, slave = os.openpty()
            os.set_inheritable(master, False)
            try:
                set_winsize(slave, *size)
                popen = subprocess.Popen(
                    argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    start_new_session=True,
                    close_fds=True,
                    env=runtime.call_env(token),
                )
            finally:
                os.close(slave)  # only runc holds it now: its exit is our EIO
        else:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=runtime.call_env(token),
            )
    except OSError as e:
        if master is not None:
            os.close(master)
        for f in (process_file, log_file):
            f.unlink(missing_ok=True)
        raise RuntimeFailure(f"{runtime.handler} exec: {e.strerror}") from e
    label = f"{container_id[:13]}/{token}"
    log.info("exec %s: %s started (tty=%s, stdin=%s)", label, process.get("args"), tty, stdin)
    return ExecIO(ocirt.ExecProcess(popen, process_file, pid_file, log_file, call=token), tty, master, label)


class AttachIO:
    """A connection to conmon's attach socket of one container."""

    def __init__(self, sock: socket.socket, bundle: Path, tty: bool, stdin_once: bool, label: str) -> None:
        self.sock = sock
        self.bundle = bundle
        self.tty = tty
        self.stdin_once = stdin_once
        self.label = label
        self._closed = False

    def read_output(self) -> tuple[int, bytes] | None:
        while True:
            try:
                packet = self.sock.recv(READ_SIZE + 1)
            except OSError:
                return None
            if not packet:
                return None
            pipe, data = packet[0], packet[1:]
            if data and pipe in (ATTACH_STDOUT, ATTACH_STDERR):
                return (STDOUT if pipe == ATTACH_STDOUT else STDERR), data

    def write_stdin(self, data: bytes) -> None:
        for start in range(0, len(data), ATTACH_STDIN_CHUNK):
            self.sock.sendall(data[start : start + ATTACH_STDIN_CHUNK])

    def close_stdin(self) -> None:
        # As CRI-O: only a stdin_once container without a tty has its stdin closed by the client's EOF.
        if self.stdin_once and not self.tty:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def resize(self, width: int, height: int) -> None:
        if self.tty and width > 0 and height > 0:
            conmon.ctl(self.bundle, conmon.CTL_RESIZE, height, width)

    def wait(self) -> None:
        """Attach has no exit status of its own: the session ends when the container's output does."""
        return None

    def error(self) -> str:
        return ""

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()


def open_attach(
    socket_dir: Path, container_id: str, bundle: Path, *, tty: bool, stdin_once: bool
) -> AttachIO:
    """Connect to conmon's attach socket of `container_id`."""
    link = socket_dir / container_id
    try:
        dir_fd = os.open(link, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NotFound(f"container {container_id[:13]} has no attach socket (is conmon running?)") from e
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/attach")
    except OSError as e:
        sock.close()
        raise RuntimeFailure(f"attach to container {container_id[:13]}: {e.strerror}") from e
    finally:
        os.close(dir_fd)
    return AttachIO(sock, bundle, tty, stdin_once, container_id[:13])
