"""Port-forward's last hop: a TCP connection to a port on the pod's loopback, made inside its netns.

A socket belongs to the network namespace it was created in, whatever thread uses it later. So a short
-lived thread enters the pod's netns (setns(2) changes only the calling thread's network namespace),
creates and connects the socket there and ends; the daemon's other threads never leave the host netns,
and the bytes then flow through the socket like any other (no process per connection or per byte). This
is containerd's way (netns.Do around a dial of localhost:port). Pods on the host network have no netns
of their own: their ports are the host's.
"""

from __future__ import annotations

import errno
import os
import socket
import threading

from podhost import linux
from podhost.errors import FailedPrecondition, RuntimeFailure

CONNECT_TIMEOUT_S = 10.0


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(netns_path: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A socket connected to 127.0.0.1:`port` in the network namespace at `netns_path` (the host's
    when empty). RuntimeFailure names the pod side's refusal."""
    if not 0 < port < 65536:
        raise FailedPrecondition(f"port {port} is not a valid TCP port")
    if not netns_path:
        try:
            return _connect(port, timeout)
        except OSError as e:
            raise RuntimeFailure(f"connect to 127.0.0.1:{port}: {e.strerror or e}") from e
    result: list[socket.socket | BaseException] = []

    def enter_and_connect() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.CLONE_NEWNET)
            except OSError as e:
                raise OSError(e.errno, f"setns {netns_path}: {e.strerror}") from None
            finally:
                os.close(fd)
            result.append(_connect(port, timeout))
        except BaseException as e:  # handed to the caller's thread
            result.append(e)

    thread = threading.Thread(target=enter_and_connect, name=f"portforward-{port}", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        if isinstance(outcome, OSError) and outcome.errno == errno.ENOENT:
            raise FailedPrecondition(f"pod network namespace {netns_path} is gone") from outcome
        message = outcome.strerror if isinstance(outcome, OSError) and outcome.strerror else str(outcome)
        raise RuntimeFailure(f"connect to 127.0.0.1:{port} in {netns_path}: {message}") from outcome
    return outcome
