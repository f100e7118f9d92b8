"""The daemon's instance lock and bounded shutdown, without root: flock between two opens, the in-flight
call list of a real gRPC server, and the watchdog ending a process that a stuck thread keeps alive."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from podhost.cri.server import InFlightCalls
from podhost.daemon import EXIT_SHUTDOWN_OVERRUN, lock_instance, still_running
from podhost.errors import AlreadyExists


def test_second_lock_on_one_state_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    fd = lock_instance(tmp_path / "state")
    try:
        with pytest.raises(AlreadyExists, match=rf"another podhost daemon \(pid {os.getpid()}\)"):
            lock_instance(tmp_path / "state")
        assert not os.get_inheritable(fd), "pause and conmon must never inherit the lock"
    finally:
        os.close(fd)
    os.close(lock_instance(tmp_path / "state"))  # released with its descriptor: free again


def test_in_flight_calls_snapshot_while_a_call_runs(tmp_path: Path) -> None:
    calls = InFlightCalls()
    release = threading.Event()
    entered = threading.Event()

    def stuck(request: bytes, context: grpc.ServicerContext) -> bytes:
        entered.set()
        release.wait(10)
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Svc", {"Stuck": grpc.unary_unary_rpc_method_handler(stuck)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(2, thread_name_prefix="cri"), interceptors=[calls])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{tmp_path}/s.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/s.sock")
    try:
        pending = channel.unary_unary("/test.Svc/Stuck").future(b"x", timeout=10)
        assert entered.wait(5)
        ((method, thread, age),) = calls.snapshot()
        assert method == "/test.Svc/Stuck" and thread.startswith("cri") and age >= 0
        assert any("call /test.Svc/Stuck" in line for line in still_running(calls))
        release.set()
        assert pending.result() == b"x"
        assert calls.snapshot() == []
    finally:
        release.set()
        channel.close()
        server.stop(0)


def test_watchdog_ends_a_process_a_stuck_thread_keeps_alive() -> None:
    child = textwrap.dedent(
        """
        import logging, sys, threading
        from podhost.daemon import exit_when_overdue
        logging.basicConfig(stream=sys.stderr)
        threading.Thread(target=threading.Event().wait, name="stuck").start()  # not a daemon thread
        exit_when_overdue(0.5)
        """
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert proc.returncode == EXIT_SHUTDOWN_OVERRUN
    assert time.monotonic() - started < 10
    assert "shutdown did not finish within 0.5 s; exiting anyway" in proc.stderr
