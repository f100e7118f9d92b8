"""`podhost daemon`: the runtime behind a CRI socket.

Pods do not depend on this process: pause and conmon are detached, so the daemon can be stopped, killed
or upgraded while pods run; on start it adopts what still runs and rolls back what was half-made.

Two promises about the daemon's own life:
- One daemon per instance. Before it touches anything (iptables, the bridge, cgroups, records, the
  socket) it takes an exclusive flock on `<state_dir>/daemon.lock`, held until the process ends (the
  kernel drops it even on SIGKILL; the descriptor is close-on-exec, so no pause or conmon inherits
  it). A second daemon on a busy instance fails at once, naming the holder, and has changed nothing.
- SIGTERM always ends it within `Config.shutdown_timeout`. The orderly stop (pod manager, gRPC server
  with a 2 s grace, streaming, runtime) runs as before; a watchdog started with it logs the calls and
  threads still busy when the time is up and exits anyway. A stuck request (a hung plugin or registry)
  would otherwise keep the process alive: Python waits for the gRPC pool's threads before exiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from podhost.config import Config
from podhost.errors import AlreadyExists, FailedPrecondition

if TYPE_CHECKING:
    from podhost.cri.server import InFlightCalls

log = logging.getLogger("podhost.daemon")

LOCK_NAME = "daemon.lock"
#: The exit status of a daemon whose shutdown overran `Config.shutdown_timeout`.
EXIT_SHUTDOWN_OVERRUN = 1
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + "/"


def lock_instance(state_dir: Path) -> int:
    """Take the instance's lock for the life of the process; the descriptor is returned (keep it open).
    Raises AlreadyExists naming the daemon that holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyExists(
            f"another podhost daemon (pid {holder}) already runs on {state_dir} (it holds {path}); "
            "refusing to start"
        ) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _where(frame: FrameType | None) -> str:
    """The innermost podhost frame of a thread's stack ("podhost/x.py:12 in f"); "" if it has none
    (an idle pool thread, or the interpreter waiting for threads)."""
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_PACKAGE_DIR):
            return f"podhost/{code.co_filename.removeprefix(_PACKAGE_DIR)}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
    return ""


def still_running(calls: InFlightCalls | None) -> list[str]:
    """What keeps a stopping daemon busy: the calls being served, and every thread inside podhost code."""
    found = []
    if calls is not None:
        found += [f"call {method} for {age:.1f} s on {thread}" for method, thread, age in calls.snapshot()]
    frames = sys._current_frames()
    me = threading.current_thread()
    for thread in threading.enumerate():
        where = _where(frames.get(thread.ident or -1))
        if thread is not me and where:
            found.append(f"thread {thread.name} at {where}")
    return found[:40]


def exit_when_overdue(timeout: float, calls: InFlightCalls | None = None) -> threading.Thread:
    """Start the shutdown watchdog: if the process still exists `timeout` seconds from now, log what is
    still running and end it with EXIT_SHUTDOWN_OVERRUN (pods keep running; they do not need us)."""

    def watchdog() -> None:
        threading.Event().wait(timeout)
        busy = still_running(calls)
        log.error(
            "podhost daemon: shutdown did not finish within %g s; exiting anyway (pods keep running). "
            "Still running: %s",
            timeout,
            "; ".join(busy) or "nothing podhost knows of",
        )
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(EXIT_SHUTDOWN_OVERRUN)

    thread = threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True)
    thread.start()
    return thread


def run(config: Config) -> None:
    """Serve CRI on `config.socket` until SIGTERM/SIGINT; the pod manager (the `kubelet_*` settings) is
    embedded, and the Kubernetes API (kubectl's) serves it on 127.0.0.1 unless `kube_api` is off."""
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("hpack").setLevel(logging.INFO)  # its debug is every header of every CRI call
    if os.geteuid() != 0:
        raise FailedPrecondition("podhost daemon must run as root (pods need namespaces, mounts and cgroups)")
    lock_instance(config.state_dir)  # first: a second daemon must change nothing
    from podhost.apiserver.server import KubeAPIServer
    from podhost.cri.server import InFlightCalls, prepare_socket_path, serve
    from podhost.cri.streaming.server import StreamingServer
    from podhost.kubelet.manager import PodManager, settings_from_config
    from podhost.pause.build import build
    from podhost.runtime.runtime import Runtime

    # A socket another server answers on (another instance sharing it) is refused before the node is
    # touched, not after the egress guard is installed.
    prepare_socket_path(config.socket)
    if config.pause_binary is None:
        build()
    calls = InFlightCalls()
    with contextlib.ExitStack() as running:  # unwound in reverse: the manager first, the runtime last
        runtime = Runtime.open(config)
        running.callback(runtime.close)
        streaming = StreamingServer(runtime, config.stream_address, config.stream_port)
        streaming.start()
        running.callback(streaming.close)
        manager = PodManager(settings_from_config(config))
        server = serve(runtime, config.socket, streaming=streaming, calls=calls)
        running.callback(lambda: server.stop(grace=2).wait())
        running.callback(manager.close)
        kube_api = KubeAPIServer(config, manager) if config.kube_api else None  # kubectl's API
        if kube_api:
            running.callback(kube_api.close)
        # Registered last, so it starts first: the whole stop, and the interpreter's exit after it
        # (which waits for the gRPC pool's threads), is bounded from the moment it begins.
        running.callback(exit_when_overdue, config.shutdown_timeout, calls)
        manager.start()  # after the server: it drives the runtime through the CRI socket, like a kubelet
        if kube_api:
            kube_api.start()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        log.info("podhost daemon serving CRI on %s (state %s)", config.socket, config.state_dir)
        stop.wait()
        log.info("podhost daemon stopping (at most %g s)", config.shutdown_timeout)
    log.info("podhost daemon stopped; pods keep running")
