"""The CNI execution protocol: CNI_ARGS, environment and marks, result/error parsing (pure), and running a
fake plugin: the call ends at its exit, and a timeout kills it and all it started (no root needed)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.network import plugin
from podhost.runtime.network.cni import netns_for_del
from tests.instance import OrphanReaper
from tests.wait import wait_for


def test_cni_args_carry_ignore_unknown_and_k8s_keys() -> None:
    args = plugin.build_cni_args("default", "web-0", "abc123", "uid-1")
    assert args == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;"
        "K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1"
    )


@pytest.mark.parametrize("bad", ["a;b", "a=b"])
def test_cni_args_reject_separators(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        plugin.build_cni_args("default", bad, "id", "uid")


def test_env_has_protocol_variables_and_only_needed_host_ones() -> None:
    inv = plugin.Invocation(
        command="ADD",
        container_id="sb1",
        netns="/run/netns/x",
        ifname="eth0",
        cni_args="IgnoreUnknown=1",
        cni_path=(Path("/usr/lib/cni"), Path("/opt/cni/bin")),
    )
    env = plugin.build_env(inv, {"PATH": "/usr/sbin:/usr/bin", "SECRET": "x", "HOME": "/root"})
    assert env == {
        "PATH": "/usr/sbin:/usr/bin",
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "sb1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1",
        "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
    }
    assert plugin.build_env(inv, {})["PATH"]  # portmap needs PATH to find iptables


def test_parse_success_and_empty() -> None:
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.231.0.2/24"}]}
    assert plugin.parse_output("bridge", "ADD", 0, json.dumps(result).encode(), b"") == result
    assert plugin.parse_output("bridge", "DEL", 0, b"\n", b"") is None
    with pytest.raises(RuntimeFailure, match="unreadable result"):
        plugin.parse_output("bridge", "ADD", 0, b"{oops", b"")


def test_parse_error_json_keeps_code_and_msg() -> None:
    out = json.dumps({"cniVersion": "1.0.0", "code": 11, "msg": "try later", "details": "busy"}).encode()
    with pytest.raises(plugin.PluginError) as err:
        plugin.parse_output("host-local", "ADD", 1, out, b"")
    assert isinstance(err.value, RuntimeFailure)
    assert (err.value.code, err.value.msg, err.value.details) == (11, "try later", "busy")
    assert "host-local" in str(err.value) and "code 11" in str(err.value) and "try later" in str(err.value)


def test_parse_error_without_json_uses_stderr() -> None:
    with pytest.raises(plugin.PluginError) as err:
        plugin.parse_output("bridge", "ADD", 2, b"", b"panic: boom")
    assert err.value.code == 0 and "panic: boom" in str(err.value)


def test_find_plugin(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "bridge").write_text("not executable")
    exe = second / "bridge"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    assert plugin.find_plugin("bridge", [first, second]) == exe
    with pytest.raises(RuntimeFailure, match="'phnet-none' not found"):
        plugin.find_plugin("phnet-none", [first, second])
    with pytest.raises(InvalidArgument):
        plugin.find_plugin("../bridge", [first])


def test_netns_for_del(tmp_path: Path) -> None:
    assert netns_for_del("") == ""
    assert netns_for_del(str(tmp_path / "gone")) == ""
    stale = tmp_path / "pin"
    stale.write_text("")
    assert netns_for_del(str(stale)) == "", "a pin file whose mount is gone is not a netns"
    assert netns_for_del("/proc/self/ns/net") == "/proc/self/ns/net"


# --- running a plugin: marks, no EOF wait, and what a failed call leaves (nothing) -------------------------

PLUGIN = """\
#!/bin/sh
# A CNI plugin that forks children holding its stdout: one in its group, one that left its session.
cat > {root}/conf.json
env > {root}/env
sleep 1000 &
echo $! >> {root}/pids
sh -c 'setsid sleep 1000 & echo $! >> {root}/pids'
[ "$CNI_COMMAND" = ADD ] && exec sleep 1000
echo '{{"cniVersion": "1.0.0", "ips": []}}'
"""


def fake_plugin(tmp_path: Path) -> Path:
    path = tmp_path / "ph5-hold"
    path.write_text(PLUGIN.format(root=tmp_path))
    path.chmod(0o755)
    return path


def invocation(command: str) -> plugin.Invocation:
    return plugin.Invocation(command, "sb1", "", "eth0", "IgnoreUnknown=1", (Path("/usr/lib/cni"),))


@pytest.fixture
def instance(orphan_reaper: OrphanReaper) -> Iterator[str]:
    """A fresh instance id; afterwards nothing may carry its mark."""
    name = f"ph5-plugin-{secrets.token_hex(4)}"
    yield name
    left = procs.kill_owner(name, "sb1")
    assert left == [], f"processes marked {name} left: {left}"


def reap(pids: set[int]) -> None:
    """Reap killed orphans re-parented to this process (a subreaper through `orphan_reaper`)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_env_carries_the_marks() -> None:
    marks = procs.mark_env("inst", "sb1", "call1")
    env = plugin.build_env(invocation("ADD"), {}, marks)
    assert env["PODHOST_OWNER"] == "inst/sb1" and env["PODHOST_CALL"] == "call1"


def test_run_returns_at_the_plugins_exit_not_at_eof(tmp_path: Path, instance: str) -> None:
    """DEL answers and exits while two children keep its stdout open: the call returns at once, with the
    answer, and the plugin and its children ran marked for the sandbox."""
    started = time.monotonic()
    out = plugin.run(
        "ph5-hold", fake_plugin(tmp_path), invocation("DEL"), {"cniVersion": "1.0.0", "name": "n"},
        timeout=10, instance=instance, owner="sb1",
    )  # fmt: skip
    assert time.monotonic() - started < 3
    assert out == {"cniVersion": "1.0.0", "ips": []}
    assert json.loads((tmp_path / "conf.json").read_text()) == {"cniVersion": "1.0.0", "name": "n"}
    assert f"PODHOST_OWNER={instance}/sb1" in (tmp_path / "env").read_text().splitlines()
    expected = set(map(int, (tmp_path / "pids").read_text().split()))

    def marked() -> set[int]:
        return {p.pid for p in procs.marked(instance).get("sb1", [])}

    # A child the plugin just forked may be mid-exec, its environment unreadable for an instant.
    left = wait_for(
        "the plugin's children seen with their mark", lambda: marked() == expected and marked(), 5
    )
    assert {p.pid for p in procs.kill_owner(instance, "sb1")} == left  # a DEL's leftovers: the pod's stop
    reap(left)


def test_run_timeout_kills_the_plugin_and_all_it_started(tmp_path: Path, instance: str) -> None:
    bystander = subprocess.Popen(["sleep", "1000"], env=procs.mark_env(instance, "sb1"))  # the pod's pause
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeFailure, match=r"CNI plugin ph5-hold ADD timed out after 0.5s"):
            plugin.run(
                "ph5-hold", fake_plugin(tmp_path), invocation("ADD"), {"cniVersion": "1.0.0"},
                timeout=0.5, instance=instance, owner="sb1",
            )  # fmt: skip
        assert time.monotonic() - started < 3
        for pid in map(int, (tmp_path / "pids").read_text().split()):
            assert procs.state(pid) == "", f"pid {pid} survived (or was left a zombie)"
        assert [p.pid for p in procs.marked(instance)["sb1"]] == [bystander.pid]
    finally:
        bystander.kill()
        bystander.wait()


def test_run_without_an_instance_still_kills_its_group(tmp_path: Path, orphan_reaper: OrphanReaper) -> None:
    with pytest.raises(RuntimeFailure, match="timed out"):
        plugin.run("ph5-hold", fake_plugin(tmp_path), invocation("ADD"), {}, timeout=0.5)
    group_child, escapee = map(int, (tmp_path / "pids").read_text().split())
    assert procs.state(group_child) == ""  # killed and reaped
    assert procs.state(escapee) == "S"  # unmarked, out of the group and the tree: only a mark finds it
    os.kill(escapee, 9)
    reap({escapee})
