"""procs' one kill mechanism against real processes: `kill_tree`, `kill_owner`, `kill_session`,
`await_gone`, `communicate`. No root needed: every process here is this test's own.

The test process is made a child subreaper (the `orphan_reaper` fixture), so what a test orphans comes
back to it, and `reaped` collects those zombies at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.runtime import procs
from tests.instance import OrphanReaper
from tests.unit.test_spawn import FD_SETSIZE, high_fds  # noqa: F401  (a fixture)
from tests.wait import wait_for


@pytest.fixture
def instance(orphan_reaper: OrphanReaper) -> Iterator[str]:
    """A fresh instance id; afterwards nothing may carry its mark, and the test's orphans are reaped."""
    name = f"ph5-procs-{secrets.token_hex(4)}"
    yield name
    left = procs.kill_marked(name)
    _reap_orphans()
    assert left == [], f"processes marked {name} left: {left}"


def _reap_orphans() -> None:
    """Reap the zombie `sleep`s re-parented to this process (the orphans these tests make; no Popen of
    theirs waits for them)."""
    for pid in procs.children():
        if procs.state(pid) == "Z" and Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def spawn(
    argv: list[str], instance: str, owner: str, call: str = "", **kw: object
) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **procs.mark_env(instance, owner, call)}
    return subprocess.Popen(argv, env=env, start_new_session=True, **kw)  # type: ignore[call-overload]


def gone(pid: int) -> bool:
    return procs.state(pid) in ("", "Z", "X")


def tree_of(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        p = queue.pop()
        found.append(p)
        queue += procs.children(p)
    return found


# --- kill_owner / kill_tree ------------------------------------------------------------------------------


def test_kill_owner_kills_the_whole_marked_tree_and_spares_other_owners(instance: str) -> None:
    tree = spawn(["sh", "-c", "sleep 100 & sleep 100; :"], instance, "pod-a")
    other = spawn(["sleep", "100"], instance, "pod-b")
    try:
        wait_for("two children", lambda: len(procs.children(tree.pid)) == 2, 5)
        pids = tree_of(tree.pid)
        assert len(pids) == 3

        started = time.monotonic()
        killed = procs.kill_owner(instance, "pod-a")
        assert time.monotonic() - started < 2, "waits on pidfds, not a fixed sleep"
        assert sorted(p.pid for p in killed) == sorted(pids)
        assert all(gone(pid) for pid in pids)
        assert "pod-a" not in procs.marked(instance)
        assert [p.pid for p in procs.marked(instance)["pod-b"]] == [other.pid]
        assert procs.state(other.pid) == "S"
    finally:
        procs.kill_tree([procs.Proc.of(tree.pid)])  # a failed assertion must not wait 100 s
        tree.wait()
        other.kill()
        other.wait()


def test_kill_owner_kills_unmarked_descendants_and_re_parented_escapees(
    instance: str, tmp_path: Path
) -> None:
    """A descendant with the mark removed dies through the tree; a marked one whose parent already exited
    (re-parented here, out of the tree) dies through its mark."""
    pids = tmp_path / "pids"
    root = spawn(
        ["sh", "-c", f"env -u {procs.MARK_ENV} sleep 100 & echo $! >> {pids}; "
         f"sh -c 'sleep 100 & echo $! >> {pids}'; wait"],
        instance, "pod-a",
    )  # fmt: skip
    try:
        wait_for("two pids written", lambda: pids.exists() and len(pids.read_text().split()) == 2, 5)
        unmarked, escapee = map(int, pids.read_text().split())
        wait_for("env to exec sleep", lambda: procs._marks_of(unmarked) == ("", ""), 5)
        wait_for("the escapee's parent to exit", lambda: escapee not in tree_of(root.pid), 5)
        procs.kill_owner(instance, "pod-a")
        assert gone(root.pid) and gone(unmarked) and gone(escapee)
    finally:
        procs.kill_tree([procs.Proc.of(root.pid)])
        root.wait()


def test_extra_roots_without_an_instance_and_a_reused_pid_is_never_signalled(instance: str) -> None:
    tree = subprocess.Popen(["sh", "-c", "sleep 100; :"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "100"])
    try:
        wait_for("one child", lambda: len(procs.children(tree.pid)) == 1, 5)
        (child,) = procs.children(tree.pid)
        # A record of the bystander's PID with another start time: a reused PID, never touched.
        assert procs.kill_tree([procs.Proc(bystander.pid, procs.start_time(bystander.pid) + 1)]) == []
        killed = procs.kill_owner("", "", [procs.Proc.of(tree.pid)])
        assert {p.pid for p in killed} == {tree.pid, child}
        # The bystander was neither killed nor stopped (it may still be running into its sleep: R or S).
        assert gone(child) and bystander.poll() is None and procs.state(bystander.pid) in ("R", "S")
    finally:
        procs.kill_tree([procs.Proc.of(tree.pid)])  # a failed assertion must not wait 100 s
        tree.wait()
        bystander.kill()
        bystander.wait()


def test_call_marks_separate_calls_of_one_owner(instance: str) -> None:
    """Two calls for the same sandbox (the loopback and main CNI chains run side by side): killing one
    call leaves the other, and the owner's process without a call mark (its pause), alone."""
    first = spawn(["sleep", "100"], instance, "pod-a", call="c1")
    second = spawn(["sleep", "100"], instance, "pod-a", call="c2")
    pause = spawn(["sleep", "100"], instance, "pod-a")
    try:
        assert [p.pid for p in procs.marked(instance, "c1")["pod-a"]] == [first.pid]
        assert [p.pid for p in procs.kill_owner(instance, "pod-a", call="c1")] == [first.pid]
        assert gone(first.pid)
        assert procs.state(second.pid) == "S" and procs.state(pause.pid) == "S"
    finally:
        for p in (first, second, pause):
            p.kill()
            p.wait()


# --- await_gone -------------------------------------------------------------------------------------------


def test_await_gone_past_fd_setsize(high_fds: int, instance: str) -> None:  # noqa: F811
    """pidfds numbered past 1024 (poll, not select); returns at once when all are gone, and the survivors
    at the deadline."""
    assert high_fds > FD_SETSIZE
    a = subprocess.Popen(["sleep", "100"])
    b = subprocess.Popen(["sleep", "100"])
    try:
        pa, pb = procs.Proc.of(a.pid), procs.Proc.of(b.pid)
        started = time.monotonic()
        assert procs.await_gone([pa, pb], 0.2) == [pa, pb]
        assert 0.15 < time.monotonic() - started < 1
        a.kill()
        b.kill()
        started = time.monotonic()
        assert procs.await_gone([pa, pb], 5) == []
        assert time.monotonic() - started < 1
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
    assert procs.await_gone([pa], 5) == []  # reaped (PID maybe reused): gone


# --- kill_session and communicate --------------------------------------------------------------------


ESCAPING = """\
sh -c 'env -u PODHOST_OWNER -u PODHOST_CALL sleep 100 & echo $! >> {pids}'  # unmarked, in the group only
setsid sleep 100 &                      # left the group, still in the tree
echo $! >> {pids}
sh -c 'setsid sleep 100 & echo $! >> {pids}'  # left the group and the tree: only its mark is left
echo started
exec sleep 100
"""


def test_kill_session_ends_tree_group_and_marked_escapees(instance: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    popen = spawn(
        ["sh", "-c", ESCAPING.format(pids=pids)], instance, "pod-a", call="c1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    bystander = spawn(["sleep", "100"], instance, "pod-a")  # the owner's pause, say
    try:
        wait_for("three pids written", lambda: pids.exists() and len(pids.read_text().split()) == 3, 5)
        started = time.monotonic()
        assert procs.communicate(popen, None, time.monotonic() + 0.3) is None  # still running
        assert 0.25 < time.monotonic() - started < 1
        escapees = list(map(int, pids.read_text().split()))
        procs.kill_session(popen, instance, "pod-a", "c1")
        assert popen.returncode is not None and popen.stdout is not None and popen.stdout.closed
        # Gone, and reaped: the orphans re-parented to this process (a subreaper, like the daemon) are
        # reaped by kill_session, not left as zombies.
        assert [procs.state(pid) for pid in escapees] == ["", "", ""]
        assert [p.pid for p in procs.marked(instance)["pod-a"]] == [bystander.pid]
    finally:
        bystander.kill()
        bystander.wait()


def test_communicate_returns_at_exit_although_a_child_holds_the_pipes(instance: str) -> None:
    """The answer written before the exit is all there, stdin was fed (more than a pipe holds), and the
    call does not wait for the child that keeps stdout open."""
    script = (
        "import os, sys, subprocess\n"
        "data = sys.stdin.buffer.read()\n"
        "subprocess.Popen(['sleep', '100'])\n"
        "sys.stdout.write(str(len(data)))\n"
        "sys.stderr.write('note')\n"
    )
    popen = spawn(
        [sys.executable, "-c", script], instance, "pod-a",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    started = time.monotonic()
    assert procs.communicate(popen, b"x" * 300_000, time.monotonic() + 10) == (b"300000", b"note")
    assert time.monotonic() - started < 5
    assert popen.returncode == 0
    assert len(procs.marked(instance)["pod-a"]) == 1  # the sleep it left behind
    procs.kill_owner(instance, "pod-a")
    for stream in (popen.stdout, popen.stderr):
        assert stream is not None
        stream.close()


def test_a_claimed_child_keeps_its_exit_status_for_its_popen(
    tmp_path: Path, orphan_reaper: OrphanReaper
) -> None:
    """A pause launcher or a first conmon is our child with an adopted name: the zombie reaper must not
    take its exit status from its Popen (which would then read 0, as for ECHILD) while it is claimed."""
    import shutil
    import subprocess

    fake = tmp_path / "pause"  # the adopted name: reap_zombie_children would take it
    shutil.copy("/bin/false", fake)
    # The session's reaper (the same rules) is held off throughout: /bin/false can be a zombie before
    # the claim below, and in one CI run that reaper took it there, so it never showed as a zombie.
    with orphan_reaper.paused():
        child = subprocess.Popen([str(fake)])
        procs.claim(child.pid)
        try:
            wait_for("the child a zombie", lambda: procs.state(child.pid) == "Z", 5)
            assert child.pid not in procs.reap_zombie_children()
            assert child.wait(5) == 1, "the real exit status, read by its own Popen"
        finally:
            procs.release(child.pid)
        unclaimed = subprocess.Popen([str(fake)])
        wait_for("the child a zombie", lambda: procs.state(unclaimed.pid) == "Z", 5)
        assert unclaimed.pid in procs.reap_zombie_children(), "an unclaimed one is reaped as adopted"


@pytest.mark.root
def test_an_orphan_from_a_nested_pid_namespace_is_reaped_whatever_its_name(
    orphan_reaper: OrphanReaper,
) -> None:
    """A container's process or a `runc init`, orphaned to us when its conmon died, is no Popen's: its
    zombie is reaped though its name is neither pause nor conmon (in a shared-PID pod it would keep pause
    from exiting: a stop then waited 10 s and reported "pause survives SIGKILL")."""
    before = set(procs.children())
    # A single-threaded Python of its own founds the namespace and leaves its child (PID 1 there) to us:
    # no fork of this multi-threaded test process.
    middle = (
        "import os; from podhost import linux; linux.unshare(linux.CLONE_NEWPID)\n"
        "if os.fork() == 0: os.execv('/bin/sleep', ['sleep', '0.3'])"
    )
    with orphan_reaper.paused():  # the session's reaper (the same rules) must not take it first
        subprocess.run([sys.executable, "-c", middle], check=True)
        (orphan,) = set(procs.children()) - before
        wait_for("the orphan a zombie", lambda: procs.state(orphan) == "Z", 5)
        assert orphan in procs.reap_zombie_children()
    assert orphan not in procs.children()
