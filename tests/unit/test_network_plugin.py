"""Pure tests of the CNI execution protocol pieces: CNI_ARGS, environment, result/error parsing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime.network import plugin
from podhost.runtime.network.cni import netns_for_del


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
