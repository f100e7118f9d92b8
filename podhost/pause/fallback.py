"""The Python pause, used only where no C compiler could build pause.c. Same protocol and behaviour as
pause.c (read that file's header); it costs megabytes per pod instead of kilobytes, and says so."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE = {"net": 0x40000000, "ipc": 0x08000000, "uts": 0x04000000, "pid": 0x20000000}
PAUSE_UID = 65535
PR_SET_NO_NEW_PRIVS = 38


def _libc_call(libc: ctypes.CDLL, name: str, *args: object) -> None:
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"pause: {name}: errno {err}\n")
        os._exit(1)


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
    libc = ctypes.CDLL(None, use_errno=True)
    for procs in filter(None, os.environ.get("PODHOST_PAUSE_CGROUPS", "").split(":")):
        with open(procs, "w") as f:
            f.write("0")
    flags = 0
    for word in filter(None, ns.split(",")):
        flags |= CLONE[word]
    if flags:
        _libc_call(libc, "unshare", flags)
    host = os.environ.get("PODHOST_PAUSE_HOSTNAME", "").encode()
    if host:
        _libc_call(libc, "sethostname", host, len(host))
    for item in filter(None, os.environ.get("PODHOST_PAUSE_SYSCTLS", "").split(";")):
        path, _, value = item.partition("=")
        with open(path, "w") as f:
            f.write(value)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child:
        os.close(ready_w)
        if os.read(ready_r, 1) != b"k":  # the child said why on stderr
            os._exit(1)
        sys.stdout.write(f"{child}\n")
        sys.stdout.flush()
        os._exit(0)
    os.close(ready_r)
    os.setsid()
    os.chdir("/")
    os.setgroups([])
    os.setgid(PAUSE_UID)
    os.setuid(PAUSE_UID)
    _libc_call(libc, "prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    install_handlers()
    os.write(ready_w, b"k")
    os.close(ready_w)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    wait_for_signals()


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
