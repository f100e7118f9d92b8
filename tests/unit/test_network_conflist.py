"""Pure tests of the CNI config: what containerd would load, and each plugin's stdin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podhost.config import Config
from podhost.errors import InvalidArgument
from podhost.runtime.model import PortMapping
from podhost.runtime.network import conflist


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config.load(root=tmp_path, bridge="phnet0", subnet="10.231.0.0/24")


def write(cfg: Config, name: str, content: object) -> Path:
    cfg.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.cni_conf_dir / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_default_when_dir_missing_or_empty(cfg: Config) -> None:
    netlist = conflist.load(cfg)
    assert netlist.source == conflist.BUILTIN_SOURCE
    assert netlist.name == "podhost" and netlist.cni_version == "1.0.0"
    assert netlist.plugin_types == ["bridge", "portmap"]
    bridge = netlist.plugins[0]
    assert bridge["bridge"] == "phnet0"
    assert bridge["isGateway"] is True and bridge["hairpinMode"] is True
    assert bridge["ipMasq"] is False, "the default never masquerades"
    assert bridge["ipam"] == {
        "type": "host-local",
        "ranges": [[{"subnet": "10.231.0.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(cfg.cni_state_dir / "ipam"),
    }
    assert netlist.plugins[1] == {"type": "portmap", "capabilities": {"portMappings": True}}
    cfg.cni_conf_dir.mkdir(parents=True)
    (cfg.cni_conf_dir / "README").write_text("not a config")
    assert conflist.load(cfg).source == conflist.BUILTIN_SOURCE


def test_no_masquerade_anywhere_in_default(cfg: Config) -> None:
    for p in conflist.default_conflist(cfg)["plugins"]:
        assert p.get("ipMasq", False) is False
        assert "masq" not in p["type"]


def test_lexically_first_file_wins(cfg: Config) -> None:
    write(cfg, "20-b.conflist", {"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]})
    write(cfg, "10-a.json", {"cniVersion": "0.4.0", "name": "a", "type": "ptp"})
    write(cfg, "05-skip.txt", "ignored")
    (cfg.cni_conf_dir / "00-dir.conf").mkdir()
    netlist = conflist.load(cfg)
    assert netlist.name == "a"
    assert netlist.source.endswith("10-a.json")


def test_single_conf_is_wrapped_into_a_list(cfg: Config) -> None:
    write(cfg, "10-x.conf", {"cniVersion": "0.4.0", "name": "x", "type": "bridge", "bridge": "phnet0"})
    netlist = conflist.load(cfg)
    assert netlist.name == "x" and netlist.cni_version == "0.4.0"
    assert netlist.plugins == [{"cniVersion": "0.4.0", "name": "x", "type": "bridge", "bridge": "phnet0"}]


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("10-bad.conflist", "{not json", "malformed JSON"),
        ("10-bad.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}, "'name'"),
        ("10-bad.conflist", {"cniVersion": "1.0.0", "name": "n"}, "'plugins'"),
        ("10-bad.conflist", {"cniVersion": "1.0.0", "name": "n", "plugins": []}, "'plugins'"),
        ("10-bad.conflist", {"cniVersion": "1.0.0", "name": "n", "plugins": [{"bridge": "x"}]}, "'type'"),
        ("10-bad.conflist", {"name": "n", "plugins": [{"type": "../evil"}]}, "'type'"),
        ("10-bad.conflist", {"name": "a/b", "plugins": [{"type": "bridge"}]}, "'name'"),
        ("10-bad.conf", {"cniVersion": "1.0.0", "name": "n"}, "'type'"),
        ("10-bad.conf", {"name": "n", "plugins": [{"type": "bridge"}]}, ".conflist"),
        ("10-bad.json", "[1, 2]", "JSON object"),
    ],
)
def test_invalid_configs_name_file_and_field(cfg: Config, name: str, content: object, field: str) -> None:
    path = write(cfg, name, content)
    with pytest.raises(InvalidArgument) as err:
        conflist.load(cfg)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_plugin_config_injects_name_version_prev_and_declared_capabilities_only() -> None:
    netlist = conflist.parse_conflist(
        {
            "cniVersion": "1.0.0",
            "name": "net",
            "plugins": [
                {"type": "bridge", "bridge": "phnet0"},
                {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
            ],
        },
        "test",
    )
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}], "bandwidth": {"x": 1}}
    first = conflist.plugin_config(netlist, 0, None, caps)
    assert first == {"type": "bridge", "bridge": "phnet0", "name": "net", "cniVersion": "1.0.0"}
    prev = {"cniVersion": "1.0.0", "ips": []}
    second = conflist.plugin_config(netlist, 1, prev, caps)
    assert second["prevResult"] == prev
    assert second["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert second["name"] == "net" and second["cniVersion"] == "1.0.0"
    # The stored list itself is never modified.
    assert "prevResult" not in netlist.plugins[1] and "name" not in netlist.plugins[0]


def test_port_mappings_in_containerd_format() -> None:
    got = conflist.port_mappings_capability(
        [
            PortMapping(protocol="TCP", container_port=80, host_port=8080, host_ip="127.0.0.1"),
            PortMapping(protocol="UDP", container_port=53, host_port=5353),
            PortMapping(protocol="SCTP", container_port=9, host_port=0),  # no host port: skipped
        ]
    )
    assert got == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    ]


def test_check_support_follows_version_and_disable_check() -> None:
    def make(**kw: object) -> conflist.NetworkConfigList:
        return conflist.parse_conflist({"name": "n", "plugins": [{"type": "bridge"}], **kw}, "t")

    assert conflist.supports_check(make(cniVersion="1.0.0"))
    assert conflist.supports_check(make(cniVersion="0.4.0"))
    assert not conflist.supports_check(make(cniVersion="0.3.1"))
    assert not conflist.supports_check(make())
    assert not conflist.supports_check(make(cniVersion="1.0.0", disableCheck=True))


def test_loopback_network() -> None:
    netlist = conflist.parse_conflist(conflist.loopback_conflist(), "lo")
    assert netlist.plugin_types == ["loopback"]


def test_a_pod_without_port_mappings_skips_portmap_and_its_record_says_so() -> None:
    netlist = conflist.parse_conflist(conflist.default_conflist(Config()), "builtin")
    assert netlist.plugin_types == ["bridge", "portmap"]
    bare = conflist.for_pod(netlist, has_port_mappings=False)
    assert bare.plugin_types == ["bridge"]
    assert [p["type"] for p in bare.raw["plugins"]] == ["bridge"]  # what DEL replays
    assert conflist.parse_conflist(bare.raw, "recorded").plugin_types == ["bridge"]
    assert conflist.for_pod(netlist, has_port_mappings=True) is netlist


def test_ipv4_only_when_every_ipam_is_host_local_with_ipv4_subnets(cfg: Config) -> None:
    def netlist(*plugins: dict[str, object]) -> conflist.NetworkConfigList:
        return conflist.parse_conflist({"cniVersion": "1.0.0", "name": "n", "plugins": list(plugins)}, "t")

    def host_local(**ipam: object) -> dict[str, object]:
        return {"type": "bridge", "ipam": {"type": "host-local", **ipam}}

    assert conflist.ipv4_only(conflist.load(cfg))  # the built-in default
    assert conflist.ipv4_only(netlist(host_local(ranges=[[{"subnet": "10.1.0.0/16"}]]), {"type": "portmap"}))
    assert conflist.ipv4_only(netlist(host_local(subnet="10.2.0.0/24")))  # the pre-ranges form
    dual = host_local(ranges=[[{"subnet": "10.1.0.0/16"}], [{"subnet": "fd00::/64"}]])
    assert not conflist.ipv4_only(netlist(dual))
    assert not conflist.ipv4_only(netlist({"type": "bridge", "ipam": {"type": "dhcp"}}))
    assert not conflist.ipv4_only(netlist({"type": "ptp"}))  # no IPAM anywhere: nothing is known
    assert not conflist.ipv4_only(netlist(host_local(ranges=[[{"subnet": "not a subnet"}]])))
    assert not conflist.ipv4_only(netlist(host_local(ranges="10.0.0.0/8")))
