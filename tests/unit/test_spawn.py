"""conmon's start-up handshake with descriptor numbers past select()'s FD_SETSIZE (1024), and its cleanup.

Finding 11: at ~500 pods the daemon holds two pidfds per pod and CreateContainer failed with "filedescriptor
out of range in select()". These tests hold >1024 descriptors open, so every descriptor create() makes is
numbered above 1024, and drive `conmon.create` with a fake conmon (a Python script speaking conmon's sync
pipe protocol). No root needed.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.errors import RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.container import conmon

FD_SETSIZE = 1024


@pytest.fixture
def high_fds() -> Iterator[int]:
    """Raise the soft RLIMIT_NOFILE (within the hard limit) and fill every descriptor below 1100, so the
    next ones opened are numbered above FD_SETSIZE; yields the lowest free one. All undone afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
    if want < 1200:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low to open descriptors past {FD_SETSIZE}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    filler: list[int] = []
    try:
        while (fd := os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)) < 1100:
            filler.append(fd)
        os.close(fd)
        yield fd
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sync_read_works_on_a_descriptor_past_fd_setsize(high_fds: int) -> None:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        assert read_fd > FD_SETSIZE
        os.write(write_fd, b'{"pid": 4242}\n')
        assert conmon.parse_sync(conmon._read_all(read_fd, time.monotonic() + 5) or b"") == (4242, "")
        assert conmon._read_all(read_fd, time.monotonic() + 0.05) is None  # nothing more: the deadline
    finally:
        os.close(read_fd)
        os.close(write_fd)


FAKE_CONMON = """\
import os, sys
sys.stderr.write("conmon: starting\\n")
fd = int(os.environ["_OCI_SYNCPIPE"])
mode = sys.argv[-1] if sys.argv[-1] in ("hang", "fail") else "ok"
if mode == "hang":  # detach like conmon, then never report: the child keeps the sync pipe
    if os.fork():
        os._exit(0)
    os.setsid()
    os.execv("/bin/sleep", ["sleep", "1000"])
os.write(fd, b'{"pid": 4242}\\n' if mode == "ok" else b'{"pid": -1, "message": "runc create failed: boom"}\\n')
"""


def fake_spec(tmp_path: Path, instance: str = "", owner: str = "") -> conmon.ConmonSpec:
    return conmon.ConmonSpec(
        container_id="c1", name="c", bundle=tmp_path, runtime_binary="/bin/false", runtime_args=[],
        container_pid_file=tmp_path / "pidfile", conmon_pid_file=tmp_path / "conmon.pid",
        exit_dir=tmp_path / "exits", socket_dir=tmp_path / "attach", persist_dir=tmp_path / "persist",
        instance=instance, owner=owner,
    )  # fmt: skip


def fake_conmon(tmp_path: Path, mode: str = "ok") -> str:
    """A conmon stand-in; `mode` (ok, fail, hang) is baked in, as create() gives conmon a clean env."""
    path = tmp_path / "conmon"
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.argv.append({mode!r})\n{FAKE_CONMON}")
    path.chmod(0o755)
    return str(path)


def test_create_past_fd_setsize(high_fds: int, tmp_path: Path) -> None:
    """The whole handshake (conmon's exit via its pidfd, its stderr, the sync pipe) with every descriptor
    create() opens numbered past FD_SETSIZE."""
    assert conmon.create(fake_conmon(tmp_path), fake_spec(tmp_path), timeout=10) == 4242


def test_create_reports_the_runtimes_error(high_fds: int, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="runc create failed: boom"):
        conmon.create(fake_conmon(tmp_path, "fail"), fake_spec(tmp_path), timeout=10)


def test_create_timeout_kills_the_detached_monitor(tmp_path: Path) -> None:
    """A conmon that detaches and never reports: the create fails at the deadline and the detached
    process, found by its mark, is dead by then."""
    instance = f"ph1-unit-{os.getpid()}"
    started = time.monotonic()
    with pytest.raises(RuntimeFailure, match=r"false create c1: no report within 0.5s"):
        conmon.create(fake_conmon(tmp_path, "hang"), fake_spec(tmp_path, instance, "c1"), timeout=0.5)
    assert time.monotonic() - started < 3
    assert procs.marked(instance) == {}
