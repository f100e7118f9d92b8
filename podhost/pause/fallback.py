"""The Python pause, used only where no C compiler could build pause.c. Same protocol and behaviour as
pause.c (read that file's header); it costs megabytes per pod instead of kilobytes, and says so. Run as
`python -m podhost.pause.fallback`, it imports nothing of podhost's but `podhost.linux`."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable

from podhost import linux

CLONE = {
    "net": linux.CLONE_NEWNET,
    "ipc": linux.CLONE_NEWIPC,
    "uts": linux.CLONE_NEWUTS,
    "pid": linux.CLONE_NEWPID,
}
PAUSE_UID = 65535


class StepFailed(Exception):
    """A launch step failed; `str()` is pause.c's "pause: <step>: errno N" line."""


def _step(name: str, fn: Callable[..., object], *args: object) -> None:
    """Run one launch step; a failure becomes pause.c's report line (its errno, not a traceback)."""
    try:
        fn(*args)
    except OSError as e:
        raise StepFailed(f"pause: {name}: errno {e.errno or 0}\n") from e


def _write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def install_handlers() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    signal.signal(signal.SIGCHLD, lambda *_: None)


def wait_for_signals() -> None:
    while True:
        signal.pause()
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def launch(ns: str) -> None:
    """The launcher (pause.c's `launch`): never returns; exits 0 after printing the pause's PID, else 1."""
    try:
        _launch(ns)
    except StepFailed as e:
        os.write(2, str(e).encode())
    os._exit(1)


def _launch(ns: str) -> None:
    for procs in filter(None, os.environ.get("PODHOST_PAUSE_CGROUPS", "").split(":")):
        _step("join cgroup", _write_file, procs, "0")
    in_userns = os.environ.get("PODHOST_PAUSE_USERNS") == "1"
    if in_userns:  # pause.c's protocol: the daemon writes the maps, then one byte on stdin
        _step("unshare user", linux.unshare, linux.CLONE_NEWUSER)
        os.write(1, b"userns\n")
        if len(os.read(0, 1)) != 1:
            raise StepFailed("pause: userns maps: errno 5\n")
        _step("setgid 0 in userns", os.setgid, 0)
        _step("setuid 0 in userns", os.setuid, 0)
    flags = 0
    for word in filter(None, ns.split(",")):
        flags |= CLONE[word]
    if flags:
        _step("unshare", linux.unshare, flags)
    host = os.environ.get("PODHOST_PAUSE_HOSTNAME", "").encode()
    if host:
        _step("sethostname", linux.sethostname, host)
    for item in filter(None, os.environ.get("PODHOST_PAUSE_SYSCTLS", "").split(";")):
        path, eq, value = item.partition("=")
        if not eq:
            raise StepFailed("pause: sysctl syntax: errno 22\n")
        _step("sysctl", _write_file, path, value)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child:
        os.close(ready_w)
        msg = b""
        while len(msg) < 256 and (chunk := os.read(ready_r, 256)):
            msg += chunk
        if msg == b"k":
            os.write(1, f"{child}\n".encode())
            os._exit(0)
        os.waitpid(child, 0)  # it failed and is exiting: leave no orphan
        os.write(2, msg or b"pause: ready: child exited without reporting\n")
        os._exit(1)
    os.close(ready_r)
    try:
        _become_pause(ready_w, in_userns)
    except StepFailed as e:
        os.write(ready_w, str(e).encode())
        os._exit(1)
    except BaseException as e:  # never unwind into the launcher's code in the forked child
        os.write(ready_w, f"pause: {type(e).__name__}: {e}\n".encode())
        os._exit(1)
    wait_for_signals()


def _become_pause(ready_w: int, in_userns: bool) -> None:
    """The forked pause, in pause.c's order: every step that can fail before "k" goes out on `ready_w`;
    errors go there too, since stderr is /dev/null once it is opened (as uid 65535: see pause.c)."""
    _step("setsid", os.setsid)
    _step("chdir /", os.chdir, "/")
    _step("setgroups", os.setgroups, [])
    # In a user namespace an unmapped id answers EINVAL: the pause stays the mapped root then (pause.c).
    for name, call in (("setgid", os.setgid), ("setuid", os.setuid)):
        try:
            call(PAUSE_UID)
        except OSError as e:
            if not (in_userns and e.errno == errno.EINVAL):
                raise StepFailed(f"pause: {name}: errno {e.errno or 0}\n") from e
            if name == "setgid":
                break
    devnull = -1

    def open_devnull() -> None:
        nonlocal devnull
        devnull = os.open("/dev/null", os.O_RDWR)

    _step("open /dev/null", open_devnull)
    for fd in (0, 1, 2):
        _step("dup2 /dev/null", os.dup2, devnull, fd)
    if devnull > 2:
        os.close(devnull)
    _step("no_new_privs", linux.prctl, linux.PR_SET_NO_NEW_PRIVS, 1)
    install_handlers()
    _step("report ready", os.write, ready_w, b"k")
    os.close(ready_w)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "-v":
        print("podhost-pause 1.0 (python fallback)")
        return
    ns = os.environ.get("PODHOST_PAUSE_NS")
    if ns is not None:
        launch(ns)
    install_handlers()
    wait_for_signals()


if __name__ == "__main__":
    main()
