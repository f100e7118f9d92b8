"""The node-only egress guard, for real.

The first test checks the rules in this host's FORWARD chain (bridge phnet3). The second proves the
guard stops forwarded traffic without ever enabling forwarding on this host: it runs PodNetwork inside a
private "node" netns (phnet-eh, bridge phnet7), where ip_forward and iptables are that namespace's own,
with a "pod" netns on the bridge and an "outside" netns behind a veth.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from podhost.config import Config
from podhost.runtime.network import PodNetwork

# alone: checks machine-wide state that any other test run at the same time changes (the host's FORWARD chain, whose first rule must be the guard's jump),
# so test.sh runs it after the parallel part, by itself.
pytestmark = [pytest.mark.root, pytest.mark.alone]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=20)


def forward_rules() -> list[str]:
    return sh("iptables", "-w", "-S", "FORWARD").stdout.splitlines()


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ph-net-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_guard_rules_present_after_ensure_gone_after_remove(root: Path) -> None:
    net = PodNetwork(Config.load(root=root, bridge="phnet3", subnet="10.231.3.0/24"))
    try:
        net.ensure_egress_guard()
        net.ensure_egress_guard()  # idempotent: still one jump and two rules
        chain = sh("iptables", "-w", "-S", "PODHOST-FWD-phnet3").stdout.splitlines()
        assert chain[0] == "-N PODHOST-FWD-phnet3"
        drops = [r for r in chain if r.startswith("-A")]
        assert len(drops) == 2 and all(r.endswith("-j DROP") for r in drops)
        assert any("-i phnet3 ! -o phnet3" in r for r in drops)
        assert any("! -i phnet3 -o phnet3" in r for r in drops)
        assert forward_rules().count("-A FORWARD -j PODHOST-FWD-phnet3") == 1
        assert forward_rules().index("-A FORWARD -j PODHOST-FWD-phnet3") == 1, "first rule of FORWARD"
    finally:
        net.remove_egress_guard()
    assert not any("PODHOST-FWD-phnet3" in r for r in forward_rules())
    assert sh("iptables", "-w", "-S", "PODHOST-FWD-phnet3", check=False).returncode != 0
    net.remove_egress_guard()  # idempotent


def test_allow_policy_installs_nothing(root: Path) -> None:
    net = PodNetwork(Config.load(root=root, bridge="phnet3", subnet="10.231.3.0/24", pod_egress="allow"))
    net.ensure_egress_guard()
    assert not any("PODHOST-FWD-phnet3" in r for r in forward_rules())


NODE_SCRIPT = """
import sys
from podhost.config import Config
from podhost.runtime.network import PodNetwork
net = PodNetwork(Config.load(root={root!r}, bridge="phnet7", subnet="10.231.7.0/24"))
action = sys.argv[1]
if action == "setup":
    print(net.setup("egresspod", "/run/netns/phnet-ep", "default", "pod", "uid", [])["ip"])
elif action == "ensure":
    net.ensure_egress_guard()
elif action == "remove":
    net.remove_egress_guard()
elif action == "teardown":
    net.teardown("egresspod", "/run/netns/phnet-ep")
"""


def test_guard_drops_forwarded_traffic_but_not_pod_to_node(root: Path) -> None:
    script = root / "node.py"
    script.write_text(textwrap.dedent(NODE_SCRIPT.format(root=str(root))))

    def in_node(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", "phnet-eh", *argv, check=check)

    def node_py(action: str) -> str:
        return in_node(sys.executable, str(script), action).stdout.strip()

    def ping(netns: str, address: str) -> bool:
        cmd = ("ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "1", address)
        return sh(*cmd, check=False).returncode == 0

    try:
        for name in ("phnet-eh", "phnet-ep", "phnet-eo"):
            sh("ip", "netns", "add", name)
        # outside <-> node: a veth with 10.231.70.0/24, the outside routes everything via the node.
        in_node("ip", "link", "add", "phnet7o", "type", "veth", "peer", "name", "eth0", "netns", "phnet-eo")
        in_node("ip", "addr", "add", "10.231.70.1/24", "dev", "phnet7o")
        in_node("ip", "link", "set", "phnet7o", "up")
        in_node("ip", "link", "set", "lo", "up")
        sh("ip", "-n", "phnet-eo", "addr", "add", "10.231.70.2/24", "dev", "eth0")
        sh("ip", "-n", "phnet-eo", "link", "set", "eth0", "up")
        sh("ip", "-n", "phnet-eo", "route", "add", "default", "via", "10.231.70.1")

        pod_ip = node_py("setup")
        assert pod_ip.startswith("10.231.7.")
        assert in_node("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"
        assert ping("phnet-ep", "10.231.7.1"), "pod -> node works without forwarding"
        assert not ping("phnet-ep", "10.231.70.2"), "ip_forward=0: nothing is routed off the bridge"

        # Positive control: with forwarding on and no guard, the pod does reach the outside.
        in_node("busybox", "sysctl", "-w", "net.ipv4.ip_forward=1")
        assert ping("phnet-ep", "10.231.70.2")

        node_py("ensure")
        assert not ping("phnet-ep", "10.231.70.2"), "guard drops bridge -> other interface"
        assert not ping("phnet-eo", pod_ip), "guard drops other interface -> bridge"
        assert ping("phnet-ep", "10.231.7.1"), "pod -> node still works"
        assert ping("phnet-ep", "10.231.70.1"), "pod -> the node's other address is local, not forwarded"
        drops = in_node("iptables", "-w", "-L", "PODHOST-FWD-phnet7", "-v", "-n", "-x").stdout
        counters = [int(line.split()[0]) for line in drops.splitlines()[2:] if line.strip()]
        assert sum(counters) >= 2, drops

        node_py("remove")
        assert ping("phnet-ep", "10.231.70.2")
        node_py("teardown")
    finally:
        for name in ("phnet-ep", "phnet-eo", "phnet-eh"):  # the node's bridge, veths and rules die with it
            sh("ip", "netns", "del", name, check=False)
