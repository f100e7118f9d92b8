"""The pod IP host-local would pick, handed to it as CNI_ARGS `IP=`, so its ADD reads one file, not all.

host-local (containernetworking-plugins 1.1) reads every reservation in its store on each ADD that names
no address, to refuse a second address for the same container id: ~11 us a pod, 11 ms of each pod start
at 1,000 pods. Given an address it reserves only that one (an exclusive create under its lock) and
refuses it when taken. podhost never ADDs a sandbox id twice (a stale attachment is DELeted first), so it
picks the address as host-local's iterator would: the first free one after the last reserved
(`last_reserved_ip.0`), skipping each range's gateway and the addresses other ADDs of this daemon are
about to reserve. host-local stays the judge: if another writer of the store took the address first,
that ADD fails and the caller repeats it without a hint.

Only for the simple case: exactly one plugin with an IPAM, host-local, one IPv4 range set, no addresses
requested in the config already. Anything else gets no hint and host-local's own search.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.runtime.network.conflist import NetworkConfigList

#: host-local's store when the config names no dataDir.
DEFAULT_DATA_DIR = Path("/var/lib/cni/networks")
#: How many taken addresses a pick steps over before it leaves the search to host-local.
MAX_PROBES = 256


@dataclass(frozen=True)
class _Range:
    start: int
    end: int  # inclusive
    gateway: int


def _ranges(ipam: dict[str, Any]) -> list[_Range] | None:
    """host-local's one range set with its defaults (allocator.Range.Canonicalize): the gateway is the
    subnet's first address, the range runs from there to the last address before the broadcast."""
    range_sets = ipam.get("ranges")
    if range_sets is None:
        range_set: Any = [{k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}]
    elif isinstance(range_sets, list) and len(range_sets) == 1 and isinstance(range_sets[0], list):
        range_set = range_sets[0]
    else:
        return None
    ranges = []
    try:
        for r in range_set:
            subnet = ipaddress.IPv4Network(r["subnet"], strict=False)
            first, last = int(subnet.network_address), int(subnet.broadcast_address)
            start = int(ipaddress.IPv4Address(r["rangeStart"])) if "rangeStart" in r else first + 1
            end = int(ipaddress.IPv4Address(r["rangeEnd"])) if "rangeEnd" in r else last - 1
            gateway = int(ipaddress.IPv4Address(r["gateway"])) if "gateway" in r else first + 1
            if not first < start <= end < last:
                return None
            ranges.append(_Range(start, end, gateway))
    except (KeyError, TypeError, ValueError):
        return None
    return ranges or None


def _host_local(netlist: NetworkConfigList) -> tuple[Path, list[_Range]] | None:
    """The store directory and range set when the list is the simple case (module docstring)."""
    with_ipam = [p for p in netlist.plugins if "ipam" in p]
    if len(with_ipam) != 1:
        return None
    plugin, ipam = with_ipam[0], with_ipam[0]["ipam"]
    if not isinstance(ipam, dict) or ipam.get("type") != "host-local":
        return None
    if "args" in plugin or plugin.get("capabilities", {}).get("ips"):
        return None  # addresses may be requested there; host-local takes those
    ranges = _ranges(ipam)
    if ranges is None:
        return None
    return Path(ipam.get("dataDir") or DEFAULT_DATA_DIR) / netlist.name, ranges


def _after(ranges: list[_Range], last: int | None) -> Iterator[int]:
    """Every address of the range set once, from the one after `last` (if it is in the set) round to
    it, without the gateways: host-local's RangeIter order."""
    at = None
    if last is not None:
        at = next(((i, last) for i, r in enumerate(ranges) if r.start <= last <= r.end), None)
    index, address = at if at is not None else (0, ranges[0].start - 1)
    for _ in range(sum(r.end - r.start + 1 for r in ranges)):
        address += 1
        if address > ranges[index].end:
            index = (index + 1) % len(ranges)
            address = ranges[index].start
        if address != ranges[index].gateway:
            yield address


class IPHints:
    """Picks for concurrent ADDs of one daemon: an address stays claimed until its ADD has ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: set[tuple[Path, int]] = set()

    @contextmanager
    def claim(self, netlist: NetworkConfigList) -> Iterator[str | None]:
        """The address to request for one ADD (None: let host-local search), held while it runs."""
        found = _host_local(netlist)
        key: tuple[Path, int] | None = None
        if found is not None:
            store, ranges = found
            with self._lock:
                key = self._pick(store, ranges)
                if key is not None:
                    self._claimed.add(key)
        try:
            yield None if key is None else str(ipaddress.IPv4Address(key[1]))
        finally:
            if key is not None:
                with self._lock:
                    self._claimed.discard(key)

    def _pick(self, store: Path, ranges: list[_Range]) -> tuple[Path, int] | None:
        try:
            last: int | None = int(ipaddress.IPv4Address((store / "last_reserved_ip.0").read_text().strip()))
        except (OSError, ValueError):
            last = None
        for probes, address in enumerate(_after(ranges, last)):
            if probes >= MAX_PROBES:
                return None
            key = (store, address)
            if key not in self._claimed and not (store / str(ipaddress.IPv4Address(address))).exists():
                return key
        return None
