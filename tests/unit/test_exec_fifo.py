"""exec_fifo against real fifos and processes that play `runc init`: a child names itself
"runc:[2:INIT]", opens the fifo for writing (blocking, as init does), writes "0" and execs `sleep`.
No runc here: the integration tests start real containers this way (test_spawn_safety, every pod test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podhost.errors import FailedPrecondition, RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.container import exec_fifo
from tests.wait import wait_for

Spawn = Callable[..., tuple["subprocess.Popen[bytes]", procs.Proc]]

INIT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(15, b"runc:[2:INIT]", 0, 0, 0)
if sys.argv[2] == "never":
    signal.pause()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CLOEXEC)
if sys.argv[2] == "die":
    os._exit(1)
os.write(fd, b"0")
os.execvp("sleep", ["sleep", "30"])
"""


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / exec_fifo.FIFO_NAME
    os.mkfifo(path, 0o600)
    return path


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[subprocess.Popen[bytes]] = []

    def run(fifo: Path, how: str = "exec") -> tuple[subprocess.Popen[bytes], procs.Proc]:
        child = subprocess.Popen([sys.executable, "-c", INIT, str(fifo), how])
        started.append(child)
        wait_for(
            "the stand-in to name itself runc init",
            lambda: procs.comm(child.pid) == exec_fifo.RUNC_INIT_COMM,
            10,
        )
        return child, procs.Proc.of(child.pid)

    yield run
    for child in started:
        child.kill()
        child.wait()


def test_start_releases_init_which_execs_and_removes_the_fifo(fifo: Path, spawn: Spawn) -> None:
    child, init = spawn(fifo)
    assert exec_fifo.start(fifo, init, timeout=10) is True
    assert not fifo.exists()
    assert procs.comm(child.pid) == "sleep" and init.alive()


def test_no_fifo_leaves_the_start_to_the_runtime(tmp_path: Path) -> None:
    me = procs.Proc.of(os.getpid())
    assert exec_fifo.start(tmp_path / exec_fifo.FIFO_NAME, me, timeout=1) is False


def test_a_process_that_already_runs_is_started_and_its_fifo_removed(fifo: Path) -> None:
    """A start killed between reading the fifo and removing it: init has exec'd; the fifo goes."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        wait_for("sleep to exec", lambda: procs.comm(sleeper.pid) == "sleep", 10)
        assert exec_fifo.start(fifo, procs.Proc.of(sleeper.pid), timeout=10) is True
        assert not fifo.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dead_init_is_a_failed_precondition_and_the_fifo_stays(fifo: Path, spawn: Spawn) -> None:
    child, init = spawn(fifo, "never")
    child.kill()
    child.wait()
    with pytest.raises(FailedPrecondition, match="already dead"):
        exec_fifo.start(fifo, init, timeout=10)
    assert fifo.exists()


def test_init_that_dies_after_opening_is_a_failed_precondition(fifo: Path, spawn: Spawn) -> None:
    _, init = spawn(fifo, "die")
    with pytest.raises(FailedPrecondition, match="exited before it was started"):
        exec_fifo.start(fifo, init, timeout=10)


def test_init_that_never_opens_the_fifo_times_out(fifo: Path, spawn: Spawn) -> None:
    _, init = spawn(fifo, "never")
    with pytest.raises(RuntimeFailure, match="did not open"):
        exec_fifo.start(fifo, init, timeout=0.3)
    assert fifo.exists() and init.alive()


@pytest.mark.parametrize(
    ("binary", "hooks", "expected"),
    [
        ("/usr/sbin/runc", {}, True),
        ("/usr/sbin/runc", {"prestart": [{"path": "/bin/true"}]}, True),
        ("/usr/sbin/runc", {"poststart": [{"path": "/bin/true"}]}, False),
        ("/usr/bin/crun", {}, False),
    ],
)
def test_applies_to_runc_without_poststart_hooks(
    tmp_path: Path, binary: str, hooks: dict, expected: bool
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.0.2", "hooks": hooks}))
    assert exec_fifo.applies(binary, config) is expected
    assert exec_fifo.applies(binary, tmp_path / "missing.json") is False
