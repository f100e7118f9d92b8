"""podhost.runtime.network.bridge: when a bridge is this instance's to remove (pure parts, no root)."""

from __future__ import annotations

import json
from pathlib import Path

from podhost.runtime.network import bridge

IP_JSON = json.dumps(
    [
        {
            "ifname": "ph2h0",
            "addr_info": [
                {"family": "inet", "local": "10.231.2.129", "prefixlen": 25},
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
            ],
        }
    ]
)


def test_addresses_from_ip_json() -> None:
    assert bridge.addresses_from_ip_json(IP_JSON) == ["10.231.2.129", "fe80::1"]
    assert bridge.addresses_from_ip_json("") == []
    assert bridge.addresses_from_ip_json("not json") == []


def test_a_bridge_is_ours_when_it_holds_the_gateway_of_our_subnet() -> None:
    addresses = bridge.addresses_from_ip_json(IP_JSON)
    assert bridge.is_ours(addresses, "10.231.2.128/25")
    assert not bridge.is_ours(addresses, "10.231.2.0/25"), "someone else's bridge of the same name"
    assert not bridge.is_ours([], "10.231.2.128/25"), "no address: not made by the bridge plugin for us"


def test_delete_argv_only_deletes_bridges() -> None:
    assert bridge.delete_argv("ph2h0") == ["ip", "link", "del", "dev", "ph2h0", "type", "bridge"]


def test_missing_non_bridge_or_busy_devices_are_kept(tmp_path: Path) -> None:
    assert not bridge.remove_if_unused("ph2h0", "10.231.2.128/25", tmp_path), "no such device"
    (tmp_path / "eth9").mkdir()
    assert not bridge.remove_if_unused("eth9", "10.231.2.128/25", tmp_path), "not a bridge"
    (tmp_path / "ph2h0" / "bridge").mkdir(parents=True)
    (tmp_path / "ph2h0" / "brif" / "veth1234").mkdir(parents=True)
    assert not bridge.remove_if_unused("ph2h0", "10.231.2.128/25", tmp_path), "a port is still on it"
