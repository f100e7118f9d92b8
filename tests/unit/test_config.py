"""One setting isolates an instance; TOML carries every field; mistakes are named."""

from pathlib import Path

import pytest

from podhost.config import DEFAULT_BRIDGE, DEFAULT_SUBNET, Config
from podhost.errors import InvalidArgument


def test_defaults_are_the_node_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODHOST_ROOT", raising=False)
    c = Config.load()
    assert c.socket == Path("/run/podhost/podhost.sock") and c.state_dir == Path("/var/lib/podhost")
    assert (c.bridge, c.subnet, c.cgroup_parent) == (DEFAULT_BRIDGE, DEFAULT_SUBNET, "/podhost")
    assert c.cni_conf_dir == Path("/etc/cni/net.d") and c.pod_egress == "node-only"


def test_root_moves_everything_instance_specific(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PODHOST_ROOT", str(tmp_path))
    c = Config.load()
    assert c.socket == tmp_path / "podhost.sock"
    for path in (c.state_dir, c.run_dir, c.cni_conf_dir, c.image_dir, c.cni_state_dir):
        assert tmp_path in path.parents
    assert (
        c.cgroup_parent.startswith("/podhost-")
        and c.cgroup_parent != Config.load(root="/elsewhere").cgroup_parent
    )
    assert Config.load(root=tmp_path / "x").socket == tmp_path / "x" / "podhost.sock"  # the argument wins


def test_toml_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('bridge = "br9"\nsubnet = "10.9.0.0/16"\npod_egress = "allow"\ncni_bin_dirs = ["/x"]\n')
    c = Config.load(root=tmp_path, config_file=f, subnet="10.8.0.0/16")
    assert (c.bridge, c.subnet, c.pod_egress, c.cni_bin_dirs) == ("br9", "10.8.0.0/16", "allow", [Path("/x")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bridg = 'x'\n", "unknown setting"),
        ("pod_egress = 'everywhere'\n", "pod_egress must be"),
        ("default_runtime = 'kata'\n", "default_runtime"),
        ("bridge = \n", "config file"),
    ],
)
def test_config_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        Config.load(root=tmp_path, config_file=f)


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.77.6.0/22", r"'10.77.6.0/22' has host bits set; the network is 10.77.4.0/22"),
        ("fd00::1/64", r"has host bits set; the network is fd00::/64"),
        ("10.77.0.0/33", "is not a network"),
        ("podnet", "is not a network"),
        ("", "is not a network"),
        ("10.77.0.1", "needs a prefix length"),
        ("10.77.0.0/31", "too small for a gateway and a pod"),
    ],
)
def test_subnet_must_be_a_network(tmp_path: Path, subnet: str, message: str) -> None:
    """A subnet with host bits set was accepted, and then every RunPodSandbox failed in CNI."""
    with pytest.raises(InvalidArgument, match=message):
        Config.load(root=tmp_path, subnet=subnet)


def test_subnets_that_are_networks_are_kept(tmp_path: Path) -> None:
    assert Config.load(root=tmp_path, subnet="10.77.4.0/22").subnet == "10.77.4.0/22"
    assert Config.load(root=tmp_path, subnet="10.231.1.0/30").subnet == "10.231.1.0/30"
    assert Config.load(root=tmp_path, subnet="fd00:0::/64").subnet == "fd00::/64"


@pytest.mark.parametrize("bridge", ["", "a" * 16, "br/0", "br 0", ".."])
def test_bridge_must_be_an_interface_name(tmp_path: Path, bridge: str) -> None:
    with pytest.raises(InvalidArgument, match="not a network interface name"):
        Config.load(root=tmp_path, bridge=bridge)


def test_shutdown_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="shutdown_timeout"):
        Config.load(root=tmp_path, shutdown_timeout=0)
