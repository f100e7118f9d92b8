"""Pure parts of the container layer: runtime CLI args and logs, conmon args and sync, exit events, cgroups."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from podhost import linux
from podhost.errors import InvalidArgument
from podhost.runtime.cgroups import child, normalize, parse_mountinfo
from podhost.runtime.container import conmon, exits, ocirt
from podhost.runtime.container.service import exit_reason
from podhost.runtime.container.signals import parse_signal

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def test_parse_mountinfo() -> None:
    version, h = parse_mountinfo(HYBRID)
    assert version == 1
    assert h == {
        "cpu,cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "name=systemd": Path("/sys/fs/cgroup/systemd"),
        "unified": Path("/sys/fs/cgroup/unified"),
    }
    assert parse_mountinfo(PURE_V2) == (2, {"unified": Path("/sys/fs/cgroup")})


def test_cgroup_paths() -> None:
    assert normalize("podhost//pod-1/") == "/podhost/pod-1"
    assert child("/podhost/pod-1/", "abc") == "/podhost/pod-1/abc"
    from podhost.runtime.cgroups import Cgroups

    cg = Cgroups(HYBRID)
    assert cg.controller_dir("cpuacct", "/p/c") == Path("/sys/fs/cgroup/cpu,cpuacct/p/c")
    assert cg.procs_files("/p")[1] == Path("/sys/fs/cgroup/memory/p/cgroup.procs")


def test_cgroup_kill_writes_cgroup_kill_on_v2_only(tmp_path: Path) -> None:
    """One write of "1" to cgroup.kill kills a cgroup's processes (v2); elsewhere the caller kills."""
    from podhost.runtime.cgroups import Cgroups

    v2 = Cgroups(f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "pod" / "ctr").mkdir(parents=True)
    assert v2.kill("/pod/ctr") and (tmp_path / "pod" / "ctr" / "cgroup.kill").read_text() == "1"
    assert not v2.kill("/pod/gone"), "no such cgroup: nothing written, the caller falls back"
    assert not v2.kill("/"), "never the root cgroup"
    assert not Cgroups(HYBRID).kill("/pod/ctr")


def test_poststop_hooks_keep_the_runtime_delete(tmp_path: Path) -> None:
    from podhost.runtime.container.spec import declares_hooks

    def _poststop_hooks(bundle: Path) -> bool:
        return declares_hooks(bundle / "config.json", "poststop")

    assert not _poststop_hooks(tmp_path), "no config.json: no hooks"
    (tmp_path / "config.json").write_text(json.dumps({"hooks": {"poststart": [{"path": "/x"}]}}))
    assert not _poststop_hooks(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hooks": {"poststop": [{"path": "/x"}]}}))
    assert _poststop_hooks(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    assert _poststop_hooks(tmp_path), "an unreadable spec counts as having hooks"


def test_runtime_args(tmp_path: Path) -> None:
    rt = ocirt.OciRuntime("runc", "/usr/sbin/runc", ocirt.runtime_root(Path("/run/ph"), "runc"))
    assert rt.command(ocirt.kill_args("c1", 9, True), Path("/l")) == [
        "/usr/sbin/runc", "--root", "/run/ph/runc-root/runc", "--log", "/l", "--log-format", "json",
        "kill", "--all", "c1", "9",
    ]  # fmt: skip
    assert ocirt.delete_args("c1", force=True) == ["delete", "--force", "c1"]
    assert ocirt.exec_args("c1", Path("/p.json"), Path("/p.pid")) == [
        "exec", "--process", "/p.json", "--pid-file", "/p.pid", "c1",
    ]  # fmt: skip
    assert ocirt.update_args("c1", Path("/r.json")) == ["update", "--resources", "/r.json", "c1"]


def test_parse_runtime_log() -> None:
    text = (
        json.dumps({"level": "info", "msg": "noise"}) + "\n"
        + json.dumps({"level": "error", "msg": 'exec: "x": executable file not found in $PATH'}) + "\n"
    )  # fmt: skip
    assert ocirt.parse_log(text) == 'exec: "x": executable file not found in $PATH'
    assert ocirt.parse_log("plain words\n") == "plain words"


def test_conmon_args() -> None:
    spec = conmon.ConmonSpec(
        container_id="c1", name="web", bundle=Path("/b"), runtime_binary="/usr/sbin/runc",
        runtime_args=["--root=/r"], container_pid_file=Path("/b/pidfile"), conmon_pid_file=Path("/b/conmon.pid"),
        exit_dir=Path("/x"), socket_dir=Path("/s"), persist_dir=Path("/b"), log_path="/logs/web.log",
    )  # fmt: skip
    args = conmon.conmon_args("/usr/bin/conmon", spec)
    assert args[0] == "/usr/bin/conmon"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["-c"] == "c1" and pairs["-b"] == "/b" and pairs["-l"] == "k8s-file:/logs/web.log"
    assert pairs["--exit-dir"] == "/x" and pairs["-0"] == "/b" and pairs["-p"] == "/b/pidfile"
    assert args[-2:] == ["--runtime-arg", "--root=/r"]
    assert "--sync" not in args and "--syslog" not in args and "-t" not in args


def test_conmon_args_without_log_path_name_no_path_outside_the_containers_dirs() -> None:
    """Finding 3: a container without log_path must not get `k8s-file:/dev/null` (reopen-log would rename
    a file over the host's /dev/null). Every path in the argv lies in the bundle, exit, socket or persist
    dir, or the runtime's root; the log driver is `none`, which names no file."""
    dirs = [
        Path("/run/ph/bundles/c1"),
        Path("/run/ph/exits"),
        Path("/run/ph/attach"),
        Path("/run/ph/runc-root"),
    ]
    spec = conmon.ConmonSpec(
        container_id="c1", name="web", bundle=dirs[0], runtime_binary="/usr/sbin/runc",
        runtime_args=["--root=/run/ph/runc-root/runc", "--log=/run/ph/runc-root/runc/c1.log"],
        container_pid_file=dirs[0] / "pidfile", conmon_pid_file=dirs[0] / "conmon.pid", exit_dir=dirs[1],
        socket_dir=dirs[2], persist_dir=dirs[0] / "persist",
    )  # fmt: skip
    args = conmon.conmon_args("/usr/bin/conmon", spec)
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["-l"] == "none:"
    paths = [a.split("=", 1)[-1].split(":", 1)[-1] for a in args[1:] if "/" in a and a != spec.runtime_binary]
    assert len(paths) == 8 and "/dev/null" not in paths
    for path in paths:
        assert any(Path(path).is_relative_to(d) for d in dirs), path


def test_conmon_sync_messages() -> None:
    assert conmon.parse_sync(b'{"pid": 42}\n') == (42, "")
    assert conmon.parse_sync(b'{"pid": -1, "message": "runc create failed: boom\\n"}\n') == (
        -1,
        "runc create failed: boom",
    )
    assert conmon.parse_sync(b"") == (-1, "")


def test_inotify_event_parsing() -> None:
    def event(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16)
        return struct.pack("iIII", 1, mask, 0, len(padded)) + padded

    buf = event(linux.IN_CLOSE_WRITE, b"c1.AB12CD") + event(linux.IN_MOVED_TO, b"c1")
    assert linux.inotify_events(buf) == [(linux.IN_CLOSE_WRITE, "c1.AB12CD"), (linux.IN_MOVED_TO, "c1")]
    assert not exits.is_exit_file_name("c1.AB12CD") and exits.is_exit_file_name("c1")


def test_exit_reason_and_signal() -> None:
    assert exit_reason(0, False) == "Completed"
    assert exit_reason(3, False) == "Error"
    assert exit_reason(137, True) == "OOMKilled"
    assert parse_signal("") == 15 and parse_signal("SIGQUIT") == 3 and parse_signal("int") == 2
    assert parse_signal("9") == 9


def test_stop_signals_by_name_number_and_cri_enum() -> None:
    import signal as sig

    from podhost.runtime.container import signals

    assert signals.parse_signal("SIGRTMIN+1") == sig.SIGRTMIN + 1
    assert signals.parse_signal("rtmax-2") == sig.SIGRTMAX - 2
    assert signals.signal_name(sig.SIGRTMIN + 3) == "SIGRTMIN+3" and signals.signal_name(3) == "SIGQUIT"
    assert signals.to_cri("QUIT") == signals.to_cri("3") == "SIGNAL_SIGQUIT"
    assert signals.to_cri("") == "SIGNAL_SIGTERM"  # what a container without one is stopped with
    assert signals.to_cri("SIGRTMAX-1") == "SIGNAL_SIGRTMAXMINUS1"
    assert (
        signals.from_cri("SIGNAL_SIGRTMINPLUS4") == "SIGRTMIN+4"
        and signals.from_cri("SIGNAL_RUNTIME_DEFAULT") == ""
    )
    with pytest.raises(InvalidArgument, match="unknown stop signal"):
        signals.parse_signal("SIGRTMIN+999")
