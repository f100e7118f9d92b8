"""The pod IP podhost hands host-local: host-local's own order, its defaults, and only in the simple case."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from podhost.runtime.network import conflist, ip_hint


def netlist(store: Path, *plugins: dict[str, Any], name: str = "net") -> conflist.NetworkConfigList:
    return conflist.parse_conflist({"cniVersion": "1.0.0", "name": name, "plugins": list(plugins)}, "test")


def bridge(store: Path, **ipam: Any) -> dict[str, Any]:
    return {"type": "bridge", "ipam": {"type": "host-local", "dataDir": str(store), **ipam}}


def claim(hints: ip_hint.IPHints, nets: conflist.NetworkConfigList) -> str | None:
    with hints.claim(nets) as ip:
        return ip


def test_first_pick_is_after_the_gateway_then_after_the_last_reserved(tmp_path: Path) -> None:
    nets = netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "10.9.0.0/29"}]]))
    hints = ip_hint.IPHints()
    assert claim(hints, nets) == "10.9.0.2"
    store = tmp_path / "net"
    store.mkdir()
    (store / "last_reserved_ip.0").write_text("10.9.0.4")
    assert claim(hints, nets) == "10.9.0.5"
    (store / "10.9.0.5").write_text("x")
    (store / "10.9.0.6").write_text("x")  # .7 is the broadcast: round to the start, past the gateway
    assert claim(hints, nets) == "10.9.0.2"


def test_a_full_range_leaves_the_search_and_its_error_to_host_local(tmp_path: Path) -> None:
    nets = netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "10.9.0.0/30"}]]))
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "10.9.0.2").write_text("x")
    assert claim(ip_hint.IPHints(), nets) is None


def test_range_bounds_gateway_and_several_ranges_follow_host_local(tmp_path: Path) -> None:
    ranges = [
        {
            "subnet": "10.9.0.0/24",
            "rangeStart": "10.9.0.250",
            "rangeEnd": "10.9.0.251",
            "gateway": "10.9.0.251",
        },
        {"subnet": "10.9.1.0/24", "rangeStart": "10.9.1.10"},
    ]
    nets = netlist(tmp_path, bridge(tmp_path, ranges=[ranges]))
    store = tmp_path / "net"
    store.mkdir()
    assert claim(ip_hint.IPHints(), nets) == "10.9.0.250"
    (store / "last_reserved_ip.0").write_text("10.9.0.250")
    assert claim(ip_hint.IPHints(), nets) == "10.9.1.10", "the gateway .251 is never handed out"
    legacy = netlist(tmp_path, bridge(tmp_path, subnet="10.9.2.0/24", gateway="10.9.2.2"))
    assert claim(ip_hint.IPHints(), legacy) == "10.9.2.1"


def test_concurrent_adds_never_get_the_same_address(tmp_path: Path) -> None:
    nets = netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "10.9.0.0/24"}]]))
    hints = ip_hint.IPHints()
    held: list[str | None] = []
    release = threading.Event()
    entered = threading.Barrier(9)

    def add() -> None:
        with hints.claim(nets) as ip:
            held.append(ip)
            entered.wait(5)
            release.wait(5)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    entered.wait(5)
    assert sorted(held) == [f"10.9.0.{n}" for n in range(2, 10)]
    release.set()
    for t in threads:
        t.join(5)
    assert claim(hints, nets) == "10.9.0.2", "an ended ADD's claim is dropped (host-local's file counts then)"


def test_no_hint_unless_the_simple_case(tmp_path: Path) -> None:
    v4 = {"subnet": "10.9.0.0/24"}
    not_simple = [
        netlist(tmp_path, bridge(tmp_path, ranges=[[v4], [{"subnet": "10.9.1.0/24"}]])),  # two range sets
        netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "fd00::/64"}]])),
        netlist(tmp_path, {"type": "bridge", "ipam": {"type": "dhcp"}}),
        netlist(tmp_path, {"type": "ptp"}),
        netlist(tmp_path, bridge(tmp_path, ranges=[[v4]]), bridge(tmp_path, ranges=[[v4]])),
        netlist(tmp_path, {**bridge(tmp_path, ranges=[[v4]]), "capabilities": {"ips": True}}),
        netlist(tmp_path, {**bridge(tmp_path, ranges=[[v4]]), "args": {"cni": {"ips": ["10.9.0.7"]}}}),
        netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.5.1"}]])),
        netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "bogus"}]])),
    ]
    for nets in not_simple:
        assert claim(ip_hint.IPHints(), nets) is None, nets.plugins


def test_the_store_is_data_dir_and_network_name_with_host_locals_default(tmp_path: Path) -> None:
    nets = netlist(tmp_path, bridge(tmp_path, ranges=[[{"subnet": "10.9.0.0/24"}]]), name="other")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "10.9.0.2").write_text("x")
    assert claim(ip_hint.IPHints(), nets) == "10.9.0.3"
    no_dir = {"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}}
    found = ip_hint._host_local(netlist(tmp_path, no_dir, name="n"))
    assert found is not None and found[0] == ip_hint.DEFAULT_DATA_DIR / "n"
