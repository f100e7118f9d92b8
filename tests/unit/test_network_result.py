"""Pure tests of reading CNI results and of the egress guard's iptables text."""

from __future__ import annotations

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.network import egress
from podhost.runtime.network.cni import known_false_check_failure
from podhost.runtime.network.plugin import PluginError
from podhost.runtime.network.result import host_interfaces, pod_ips, summarize

BRIDGE_RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "phnet0", "mac": "aa"},
        {"name": "veth1234", "mac": "bb"},
        {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/phnet-a"},
    ],
    "ips": [
        {"interface": 2, "address": "fd00::2/64"},
        {"interface": 2, "address": "10.231.0.2/24", "gateway": "10.231.0.1"},
        {"interface": 0, "address": "10.231.0.1/24"},  # host side: not the pod's
    ],
}


def test_pod_ips_v4_first_and_only_sandbox_interfaces() -> None:
    assert pod_ips(BRIDGE_RESULT_100) == ["10.231.0.2", "fd00::2"]
    summary = summarize(BRIDGE_RESULT_100)
    assert summary["ip"] == "10.231.0.2"
    assert summary["ips"] == ["10.231.0.2", "fd00::2"]
    assert summary["interfaces"] == BRIDGE_RESULT_100["interfaces"]
    assert summary["result"] is BRIDGE_RESULT_100
    assert host_interfaces(BRIDGE_RESULT_100) == ["phnet0", "veth1234"]


def test_pod_ips_040_and_legacy() -> None:
    r040 = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.231.0.3/24"}]}
    assert pod_ips(r040) == ["10.231.0.3"]
    legacy = {"cniVersion": "0.2.0", "ip4": {"ip": "10.231.0.4/24"}}
    assert pod_ips(legacy) == ["10.231.0.4"]
    assert summarize(None) == {"ip": "", "ips": [], "interfaces": [], "result": {}}


def test_portmap_ipv6_check_bug_only_ignored_for_ipv4_pods() -> None:
    bug = PluginError("portmap", "CHECK", 999, "could not check ipv6 dnat: chain X not found")
    v4 = {"ips": [{"address": "10.231.0.2/24"}]}
    assert known_false_check_failure("portmap", bug, v4)
    assert not known_false_check_failure("portmap", bug, BRIDGE_RESULT_100)
    other = PluginError("portmap", "CHECK", 999, "could not check ipv4 dnat: chain X not found")
    assert not known_false_check_failure("portmap", other, v4)
    assert not known_false_check_failure("bridge", bug, v4)


def test_egress_restore_text_and_argv() -> None:
    text = egress.restore_input("phnet0")
    assert text.splitlines() == [
        "*filter",
        ":PODHOST-FWD-phnet0 - [0:0]",
        "-A PODHOST-FWD-phnet0 -i phnet0 ! -o phnet0 -m comment --comment podhost-node-only -j DROP",
        "-A PODHOST-FWD-phnet0 ! -i phnet0 -o phnet0 -m comment --comment podhost-node-only -j DROP",
        "COMMIT",
    ]
    assert "NAT" not in text.upper().replace("NODE", "")
    assert egress.restore_argv("/sbin/iptables-restore") == ["/sbin/iptables-restore", "-w", "--noflush"]
    assert egress.jump_argv("ipt", "-I", "phnet0") == [
        "ipt",
        "-w",
        "-I",
        "FORWARD",
        "1",
        "-j",
        "PODHOST-FWD-phnet0",
    ]
    assert egress.jump_argv("ipt", "-C", "phnet0") == [
        "ipt",
        "-w",
        "-C",
        "FORWARD",
        "-j",
        "PODHOST-FWD-phnet0",
    ]
    assert egress.chain_argv("ipt", "-X", "phnet0") == ["ipt", "-w", "-X", "PODHOST-FWD-phnet0"]


@pytest.mark.parametrize("bridge", ["", "a-very-long-bridge-name", "bad name"])
def test_egress_chain_name_rejects_unusable_bridges(bridge: str) -> None:
    with pytest.raises(InvalidArgument):
        egress.chain_name(bridge)
