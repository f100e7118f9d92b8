"""PodNetwork against the real Debian CNI plugins, real netns, veths, bridges and iptables.

Every test works under its own /tmp/ph-net-* root with a phnetN bridge and a 10.231.N.0/24 subnet (or a
bridge and subnet it names, as the ph2n0 tests of a failing plugin do) and phnet-* / ph2-* namespaces,
and the fixture removes all of it (plus ip_forward back to its original value).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podhost.config import Config
from podhost.errors import InvalidArgument, RuntimeFailure
from podhost.runtime import procs
from podhost.runtime.model import PortMapping
from podhost.runtime.network import PodNetwork
from tests.instance import OrphanReaper
from tests.leaks import remove_idle_portmap_chains
from tests.wait import wait_for

# alone: checks machine-wide state that any other test run at the same time changes (the ip_forward value right after a bridge ADD, and portmap's shared nat chains),
# so test.sh runs it after the parallel part, by itself.
pytestmark = [pytest.mark.root, pytest.mark.alone]

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def sh(*argv: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def nat_rules() -> str:
    return sh("iptables", "-w", "-t", "nat", "-S").stdout


class NetEnv:
    """One isolated podhost network: root dir, bridge, subnet, and the namespaces/processes a test made."""

    def __init__(
        self,
        n: int,
        prefix: int = 24,
        bridge: str = "",
        subnet: str = "",
        root_prefix: str = "ph-net-",
        **overrides: Any,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=root_prefix, dir="/tmp"))
        self.bridge = bridge or f"phnet{n}"
        self.subnet = subnet or f"10.231.{n}.0/{prefix}"
        self.config = Config.load(root=self.root, bridge=self.bridge, subnet=self.subnet, **overrides)
        self.net = PodNetwork(self.config)
        self.netns: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def add_netns(self, suffix: str) -> str:
        name = f"phnet-{suffix}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return f"/run/netns/{name}"

    def setup(self, netns: str, ports: list[PortMapping] | None = None) -> tuple[str, dict[str, Any]]:
        sandbox_id = uuid.uuid4().hex * 2
        return sandbox_id, self.net.setup(
            sandbox_id, netns, "default", "pod", "uid-" + sandbox_id[:8], ports or []
        )

    @property
    def ipam_dir(self) -> Path:
        return self.config.cni_state_dir / "ipam" / "podhost"

    def reservations(self) -> dict[str, str]:
        """host-local's reservation files: address -> the container id it was given to."""
        if not self.ipam_dir.exists():
            return {}
        return {
            p.name: p.read_text().splitlines()[0]
            for p in self.ipam_dir.iterdir()
            if p.name[0].isdigit() and not p.name.startswith("last_reserved")
        }

    def spawn_in(self, netns: str, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", Path(netns).name, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        for sandbox_id in self.net.attachments():
            with contextlib.suppress(RuntimeFailure):
                self.net.teardown(sandbox_id, None)
        for name in self.netns:
            sh("ip", "netns", "del", name, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def netns_links(netns: str) -> dict[str, dict[str, Any]]:
    out = sh("ip", "-n", Path(netns).name, "-j", "addr", "show").stdout
    return {link["ifname"]: link for link in json.loads(out)}


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", name, check=False).returncode == 0


@pytest.fixture
def make_env() -> Iterator[Any]:
    original_forward = IP_FORWARD.read_text()
    portmap_existed = "CNI-HOSTPORT-DNAT" in nat_rules()
    envs: list[NetEnv] = []

    def make(n: int, prefix: int = 24, **overrides: Any) -> NetEnv:
        env = NetEnv(n, prefix, **overrides)
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            env.cleanup()
        IP_FORWARD.write_text(original_forward)
        if not portmap_existed:
            remove_idle_portmap_chains()
    for env in envs:
        assert not link_exists(env.bridge)
        assert not env.root.exists()


# --- setup, check, teardown -----------------------------------------------------------------------------


def test_setup_check_teardown(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("a")
    sandbox_id, got = env.setup(netns)

    assert got["ip"].startswith("10.231.0.") and got["ips"] == [got["ip"]]
    links = netns_links(netns)
    assert [a["local"] for a in links["eth0"]["addr_info"] if a["family"] == "inet"] == [got["ip"]]
    assert "UP" in links["lo"]["flags"]
    assert env.reservations() == {got["ip"]: sandbox_id}
    veth = next(i["name"] for i in got["interfaces"] if i["name"].startswith("veth"))
    assert link_exists(veth)
    assert IP_FORWARD.read_text().strip() == "0", "node-only puts ip_forward back after the bridge ADD"

    record = json.loads((env.config.cni_state_dir / "results" / f"{sandbox_id}.json").read_text())
    assert record["state"] == "added" and record["netns"] == netns and record["ifname"] == "eth0"
    assert record["network"]["plugins"][0]["bridge"] == "phnet0"
    assert "K8S_POD_INFRA_CONTAINER_ID=" + sandbox_id in record["cni_args"]
    assert record["result"] == got["result"]
    assert env.net.attachments() == [sandbox_id]
    assert env.net.status()[0] is True

    env.net.check(sandbox_id, netns)

    env.net.teardown(sandbox_id, netns)
    assert env.reservations() == {}
    assert "eth0" not in netns_links(netns)
    assert not link_exists(veth)
    assert env.net.attachments() == []
    env.net.teardown(sandbox_id, netns)  # second call: no-op
    env.net.teardown("never-set-up", None)


def test_two_pods_reach_each_other(make_env: Any) -> None:
    env = make_env(0)
    ns_a, ns_b = env.add_netns("a"), env.add_netns("b")
    id_a, got_a = env.setup(ns_a)
    id_b, got_b = env.setup(ns_b)
    assert got_a["ip"] != got_b["ip"]
    assert env.reservations() == {got_a["ip"]: id_a, got_b["ip"]: id_b}

    ping = sh(
        "ip", "netns", "exec", "phnet-a", "busybox", "ping", "-c", "1", "-W", "2", got_b["ip"], check=False
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr

    server = env.spawn_in(ns_b, "busybox", "nc", "-l", "-p", "7000", "-e", "busybox", "echo", "hello-from-b")
    nc = ["ip", "netns", "exec", "phnet-a", "busybox", "nc", "-w", "2", got_b["ip"], "7000"]
    wait_for("B's reply in A", lambda: "hello-from-b" in sh(*nc, check=False).stdout, 5, interval=0.05)
    server.wait(timeout=5)

    env.net.check(id_a, ns_a)
    env.net.check(id_b, ns_b)
    env.net.teardown(id_a, ns_a)
    env.net.teardown(id_b, ns_b)
    assert env.reservations() == {}


def test_teardown_after_netns_is_gone_releases_the_ip(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("gone")
    sandbox_id, got = env.setup(netns)
    veth = next(i["name"] for i in got["interfaces"] if i["name"].startswith("veth"))
    sh("ip", "netns", "del", "phnet-gone")
    assert not os.path.exists(netns)

    env.net.teardown(sandbox_id, netns)  # the stale path
    assert env.reservations() == {}
    assert env.net.attachments() == []
    wait_for("the veth to die with its netns", lambda: not link_exists(veth), 5)
    env.net.teardown(sandbox_id, None)


def test_reused_sandbox_id_and_unreadable_record(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("again")
    env.net.setup("samepod", netns, "default", "pod", "uid", [])
    got = env.net.setup("samepod", netns, "default", "pod", "uid", [])  # old attachment released first
    assert env.reservations() == {got["ip"]: "samepod"}
    # A record that cannot be read still leads to DEL, with the current config list.
    (env.config.cni_state_dir / "results" / "samepod.json").write_text("{garbage")
    assert env.net.attachments() == ["samepod"]
    env.net.teardown("samepod", netns)
    assert env.reservations() == {}
    assert "eth0" not in netns_links(netns)
    assert env.net.attachments() == []


# --- port mappings ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_host_port_on_localhost_reaches_the_pod(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("web")
    host_port = free_port()
    sandbox_id, got = env.setup(
        netns, [PortMapping(protocol="TCP", container_port=8080, host_port=host_port, host_ip="127.0.0.1")]
    )
    assert f'id: \\"{sandbox_id}\\"' in nat_rules()
    # portmap sets route_localnet on the bridge so 127.0.0.1 may be DNATed across it (and SNATs it).
    assert Path(f"/proc/sys/net/ipv4/conf/{env.bridge}/route_localnet").read_text().strip() == "1"

    env.spawn_in(netns, "busybox", "nc", "-ll", "-p", "8080", "-e", "busybox", "echo", "hello-from-pod")

    def reply() -> bytes:
        with socket.create_connection(("127.0.0.1", host_port), timeout=2) as conn:
            return conn.recv(100)

    wait_for("the pod's reply on the host port", lambda: b"hello-from-pod" in reply(), 5, interval=0.05)

    env.net.check(sandbox_id, netns)  # portmap's IPv4-only CHECK bug is tolerated, nothing else
    env.net.teardown(sandbox_id, netns)
    assert sandbox_id not in nat_rules()
    assert env.reservations() == {}


# --- failures -----------------------------------------------------------------------------------------


def write_conflist(env: NetEnv, name: str, content: Any) -> Path:
    env.config.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    path = env.config.cni_conf_dir / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_broken_conflist_is_invalid_argument(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("bad")
    path = write_conflist(env, "10-broken.conflist", '{"cniVersion": "1.0.0", "name": ')
    with pytest.raises(InvalidArgument, match=str(path)):
        env.setup(netns)
    ready, message = env.net.status()
    assert not ready and str(path) in message
    write_conflist(env, "10-broken.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]})
    with pytest.raises(InvalidArgument, match="'name'"):
        env.setup(netns)
    assert env.net.attachments() == []
    assert "eth0" not in netns_links(netns)


def test_missing_plugin_is_runtime_failure(make_env: Any) -> None:
    env = make_env(0)
    netns = env.add_netns("nop")
    write_conflist(
        env,
        "10-x.conflist",
        {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "phnet-no-such-plugin"}]},
    )
    with pytest.raises(RuntimeFailure, match="phnet-no-such-plugin"):
        env.setup(netns)
    ready, message = env.net.status()
    assert not ready and "phnet-no-such-plugin" in message
    assert env.net.attachments() == [], "nothing was ADDed, so nothing is recorded"


def test_failed_add_leaves_no_reservation_and_no_veth(make_env: Any) -> None:
    env = make_env(1, prefix=30)  # 10.231.1.0/30: .1 is the gateway, .2 the only pod address
    ns_a, ns_b = env.add_netns("full-a"), env.add_netns("full-b")
    id_a, got_a = env.setup(ns_a)
    assert got_a["ip"] == "10.231.1.2"
    with pytest.raises(RuntimeFailure, match="no IP addresses available"):
        env.setup(ns_b)
    assert env.reservations() == {"10.231.1.2": id_a}
    assert "eth0" not in netns_links(ns_b), (
        "the bridge plugin made the veth before IPAM failed; DEL removed it"
    )
    ports = json.loads(sh("ip", "-j", "link", "show", "master", env.bridge).stdout)
    assert len(ports) == 1
    assert env.net.attachments() == [id_a]
    assert IP_FORWARD.read_text().strip() == "0"


def test_podhost_names_host_locals_next_free_address_and_repeats_an_add_it_lost(
    make_env: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """host-local is given the address its own search would find (so it skips reading every
    reservation); one another writer holds is stepped over; and when another writer takes it between
    the pick and the reservation (a race forced here by handing out a taken address), the ADD is undone
    and repeated with host-local's own search."""
    env = make_env(2)
    ns = [env.add_netns(f"hint-{i}") for i in range(3)]
    id_a, got_a = env.setup(ns[0])
    assert got_a["ip"] == "10.231.2.2", "the gateway .1 is skipped, as host-local does"
    assert (env.ipam_dir / "last_reserved_ip.0").read_text() == "10.231.2.2"

    (env.ipam_dir / "10.231.2.3").write_text("another-writer\r\neth0")
    id_b, got_b = env.setup(ns[1])
    assert got_b["ip"] == "10.231.2.4"

    real_pick = env.net._ip_hints._pick
    env.net._ip_hints._pick = lambda store, ranges: (store, int(ipaddress.IPv4Address("10.231.2.3")))
    try:
        id_c, got_c = env.setup(ns[2])
    finally:
        env.net._ip_hints._pick = real_pick
    assert got_c["ip"] == "10.231.2.5", "host-local's own search, after the last reserved"
    assert "requested IP address 10.231.2.3 is not available; repeating the ADD" in caplog.text
    assert env.reservations() == {
        "10.231.2.2": id_a,
        "10.231.2.3": "another-writer",
        "10.231.2.4": id_b,
        "10.231.2.5": id_c,
    }
    assert sorted(env.net.attachments()) == sorted([id_a, id_b, id_c])
    ports = json.loads(sh("ip", "-j", "link", "show", "master", env.bridge).stdout)
    assert len(ports) == 3, "the veth of the lost ADD was deleted with it"
    for sandbox_id, netns in zip((id_a, id_b, id_c), ns, strict=True):
        env.net.teardown(sandbox_id, netns)
    assert env.reservations() == {"10.231.2.3": "another-writer"}


# --- the chain protocol, seen by a plugin ----------------------------------------------------------------

SPY = """\
#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open("{log}", "a") as f:
    f.write(json.dumps({{"conf": conf, "env": env, "t": time.monotonic()}}) + "\\n")
cmd = env["CNI_COMMAND"]
if cmd == "ADD" and conf.get("mode") == "crash":
    os.kill(os.getppid(), 9)
    sys.exit(0)
if cmd == "ADD" and conf.get("mode") == "fail":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7, "msg": "spy refuses", "details": "by design"}}))
    sys.exit(1)
if cmd == "ADD":
    print(json.dumps(conf["prevResult"]))
"""


def install_spy(env: NetEnv, mode: str) -> tuple[Path, Path]:
    bindir = env.root / "bin"
    bindir.mkdir(exist_ok=True)
    log = env.root / "spy.log"
    spy = bindir / "phnet-spy"
    spy.write_text(SPY.format(python=sys.executable, log=log))
    spy.chmod(spy.stat().st_mode | stat.S_IXUSR)
    env.config.cni_bin_dirs = [bindir, *env.config.cni_bin_dirs]
    write_conflist(
        env,
        "10-spy.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "podhost",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": env.bridge,
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": env.subnet}]],
                        "dataDir": str(env.config.cni_state_dir / "ipam"),
                    },
                },
                {"type": "phnet-spy", "mode": mode, "capabilities": {"portMappings": True}},
            ],
        },
    )
    return spy, log


def spy_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_chain_passes_prev_result_runtime_config_and_env(make_env: Any) -> None:
    env = make_env(2)
    _, log = install_spy(env, "pass")
    netns = env.add_netns("spy")
    ports = [PortMapping(protocol="UDP", container_port=53, host_port=5353, host_ip="127.0.0.1")]
    sandbox_id, got = env.setup(netns, ports)

    (add,) = spy_calls(log)
    assert add["conf"]["name"] == "podhost" and add["conf"]["cniVersion"] == "1.0.0"
    assert add["conf"]["prevResult"] == got["result"], "the spy echoed the bridge result it was given"
    assert add["conf"]["runtimeConfig"] == {
        "portMappings": [{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]
    }
    assert add["env"]["CNI_COMMAND"] == "ADD" and add["env"]["CNI_IFNAME"] == "eth0"
    assert add["env"]["CNI_CONTAINERID"] == sandbox_id and add["env"]["CNI_NETNS"] == netns
    pod_args = (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod;"
        f"K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID=uid-{sandbox_id[:8]}"
    )
    assert add["env"]["CNI_ARGS"] == pod_args + f";IP={got['ip']}", "the address picked for host-local"
    assert add["env"]["CNI_PATH"].split(":")[0] == str(env.root / "bin")

    env.net.check(sandbox_id, netns)
    check = spy_calls(log)[1]
    assert check["env"]["CNI_COMMAND"] == "CHECK" and check["conf"]["prevResult"] == got["result"]
    assert check["env"]["CNI_ARGS"] == pod_args

    env.net.teardown(sandbox_id, netns)
    delete = spy_calls(log)[2]
    assert delete["env"]["CNI_COMMAND"] == "DEL" and delete["env"]["CNI_ARGS"] == pod_args
    assert delete["conf"]["prevResult"] == got["result"] and delete["conf"]["runtimeConfig"]
    assert env.reservations() == {}, "bridge DEL ran after the spy's (reverse order) and released"


def test_plugin_error_json_becomes_runtime_failure_and_chain_is_deleted(make_env: Any) -> None:
    env = make_env(2)
    _, log = install_spy(env, "fail")
    netns = env.add_netns("spyfail")
    with pytest.raises(RuntimeFailure) as err:
        env.setup(netns)
    assert "phnet-spy" in str(err.value) and "code 7" in str(err.value) and "spy refuses" in str(err.value)
    assert [c["env"]["CNI_COMMAND"] for c in spy_calls(log)] == ["ADD", "DEL"]
    assert env.reservations() == {}, "the bridge had allocated; the DEL after the failed ADD released it"
    assert "eth0" not in netns_links(netns)
    assert env.net.attachments() == []


def test_daemon_killed_mid_add_is_torn_down_later(make_env: Any) -> None:
    """The record is written before the first ADD, so an ADD interrupted by SIGKILL still ends in DEL."""
    env = make_env(2)
    install_spy(env, "crash")
    netns = env.add_netns("crash")
    child = textwrap.dedent(
        f"""
        from podhost.config import Config
        from podhost.runtime.network import PodNetwork
        cfg = Config.load(root={str(env.root)!r}, bridge={env.bridge!r}, subnet={env.subnet!r},
                          cni_bin_dirs={[str(p) for p in env.config.cni_bin_dirs]!r})
        PodNetwork(cfg).setup("crashpod", {netns!r}, "default", "pod", "uid", [])
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=30, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert env.net.attachments() == ["crashpod"]
    assert list(env.reservations().values()) == ["crashpod"], "the bridge ADD had allocated"
    assert "eth0" in netns_links(netns)

    env.net.teardown("crashpod", netns)
    assert env.reservations() == {}
    assert "eth0" not in netns_links(netns)
    assert env.net.attachments() == []


# --- a plugin failing ADD and DEL ---------------------------------------------------------------------

FLAKY = """\
#!/bin/sh
# The bridge plugin, except while {flag} exists: then ADD fails after the real ADD allocated (as a
# plugin failing halfway does) and DEL fails before releasing anything.
fail() {{ echo '{{"cniVersion":"1.0.0","code":999,"msg":"ph2-flaky: '"$1"' refused"}}'; exit 1; }}
if [ -e {flag} ]; then
    case "$CNI_COMMAND" in
        ADD) {bridge} >/dev/null; fail ADD ;;
        DEL) fail DEL ;;
    esac
fi
exec {bridge}
"""


def install_flaky(env: NetEnv) -> Path:
    """A conflist whose only plugin wraps the real bridge plugin; returns the flag file (created)."""
    from podhost.runtime.network import plugin

    bindir = env.root / "bin"
    bindir.mkdir(exist_ok=True)
    flag = env.root / "flaky.flag"
    flag.touch()
    wrapper = bindir / "ph2-flaky"
    wrapper.write_text(FLAKY.format(flag=flag, bridge=plugin.find_plugin("bridge", env.config.cni_bin_dirs)))
    wrapper.chmod(0o755)
    env.config.cni_bin_dirs = [bindir, *env.config.cni_bin_dirs]
    write_conflist(
        env,
        "10-flaky.conflist",
        {
            "cniVersion": "1.0.0",
            "name": "podhost",
            "plugins": [
                {
                    "type": "ph2-flaky",
                    "bridge": env.bridge,
                    "isGateway": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": env.subnet}]],
                        "dataDir": str(env.config.cni_state_dir / "ipam"),
                    },
                }
            ],
        },
    )
    return flag


def attachment_record(env: NetEnv, sandbox_id: str) -> dict[str, Any]:
    return dict(json.loads((env.config.cni_state_dir / "results" / f"{sandbox_id}.json").read_text()))


def test_failing_add_and_del_reports_the_add_error_and_is_retried(make_env: Any) -> None:
    env = make_env(0, bridge="ph2n0", subnet="10.231.2.64/27")
    flag = install_flaky(env)
    netns = env.add_netns("ph2-flaky")
    try:
        with pytest.raises(RuntimeFailure) as err:
            env.setup(netns)
        text = str(err.value)
        print("RunPodSandbox's error:", text)
        assert "pod network setup failed: CNI plugin ph2-flaky ADD failed (code 999)" in text
        assert text.index("ADD refused") < text.index("DEL refused"), "the cause first, the DEL appended"
        (sandbox_id,) = env.net.attachments()
        assert list(env.reservations().values()) == [sandbox_id], "the failed ADD had allocated"
        record = attachment_record(env, sandbox_id)
        assert record["state"] == "adding" and record["del_attempts"] == 1
        assert "DEL refused" in record["del_error"]

        # A retry while the plugin still fails keeps the record (and counts); the ADD error was the one
        # to report, so this teardown of a never-completed attachment does not raise.
        env.net.teardown(sandbox_id, netns)
        assert env.net.attachments() == [sandbox_id]
        assert attachment_record(env, sandbox_id)["del_attempts"] == 2

        flag.unlink()
        env.net.teardown(sandbox_id, netns)
        assert env.reservations() == {}, "the retried DEL released the address"
        assert env.net.attachments() == []
        assert not (env.config.cni_state_dir / "results" / f"{sandbox_id}.json").exists()
        assert "eth0" not in netns_links(netns)
    finally:
        flag.unlink(missing_ok=True)


def test_failing_del_of_a_complete_attachment_is_raised_and_kept(make_env: Any) -> None:
    env = make_env(0, bridge="ph2n0", subnet="10.231.2.64/27")
    flag = install_flaky(env)
    flag.unlink()
    netns = env.add_netns("ph2-flakydel")
    sandbox_id, got = env.setup(netns)
    try:
        flag.touch()
        with pytest.raises(
            RuntimeFailure, match="teardown failed .1 failed DELs, kept for retry.*DEL refused"
        ):
            env.net.teardown(sandbox_id, netns)
        assert env.net.attachments() == [sandbox_id]
        assert env.reservations() == {got["ip"]: sandbox_id}
        flag.unlink()
        env.net.teardown(sandbox_id, netns)
        assert env.reservations() == {}
        assert env.net.attachments() == []
    finally:
        flag.unlink(missing_ok=True)


# --- a plugin that hangs, with children holding its pipes ------------------------------------------------

HANGING = """\
#!/bin/sh
# ADD: fork a child that holds stdout (in the plugin's group), one that leaves its session and tree
# (found only by its mark), then hang. DEL: succeed at once (there is nothing to release).
if [ "$CNI_COMMAND" = ADD ]; then
    sleep 1000 &
    echo $! >> {pids}
    sh -c 'setsid sleep 1000 & echo $! >> {pids}'
    echo $$ >> {pids}
    exec sleep 1000
fi
"""


def test_hung_plugin_fails_add_promptly_and_leaves_nothing(
    make_env: Any, orphan_reaper: OrphanReaper
) -> None:
    """Finding 7 for CNI: at the plugin timeout ADD fails with the plugin named, without waiting for the
    EOF its children withhold; the plugin and everything it started are gone (reaped, too: the test is
    a child subreaper, as the daemon is), and the DEL after the failure removed the attachment."""
    env = make_env(0, bridge="ph5n0", subnet="10.231.5.64/27", root_prefix="ph5-net-")
    env.net.plugin_timeout = 1.0
    bindir = env.root / "bin"
    bindir.mkdir()
    pids = env.root / "pids"
    hang = bindir / "ph5-hang"
    hang.write_text(HANGING.format(pids=pids))
    hang.chmod(0o755)
    env.config.cni_bin_dirs = [bindir, *env.config.cni_bin_dirs]
    write_conflist(
        env, "10-hang.conflist", {"cniVersion": "1.0.0", "name": "ph5", "plugins": [{"type": "ph5-hang"}]}
    )
    netns = env.add_netns("ph5-hang")

    started = time.monotonic()
    with pytest.raises(
        RuntimeFailure, match=r"pod network setup failed: CNI plugin ph5-hang ADD timed out after 1s"
    ):
        env.setup(netns)
    assert time.monotonic() - started < 4
    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) == 3
    assert [procs.state(pid) for pid in started_pids] == ["", "", ""]
    assert procs.marked(env.config.instance_id) == {}
    assert env.net.attachments() == []
