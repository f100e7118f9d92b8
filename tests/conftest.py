"""Shared fixtures. Integration tests (marked `root`) need root; they are skipped, loudly, without it."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instance import IP_FORWARD_ENV, Instance, OrphanReaper, leak_checked
from tests.leaks import remove_idle_portmap_chains


def worker_index() -> int:
    """This pytest-xdist worker's number (gw2 -> 2); 0 without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def per_worker(bridge: str, subnet: str, n: int) -> tuple[str, str]:
    """Worker `n`'s bridge and subnet: the next ones after worker 0's (phit0 10.233.0.0/24 -> phit1
    10.233.1.0/24), so the workers' shared instances never share a bridge or an address."""
    stem = bridge.rstrip("0123456789")
    number = int(bridge[len(stem) :] or 0) + n
    net = ipaddress.ip_network(subnet)
    shifted = ipaddress.ip_network((int(net.network_address) + n * net.num_addresses, net.prefixlen))
    return f"{stem}{number}", str(shifted)


# Test instances use their own bridges and subnets, never podhost's defaults. Two test runs on one
# machine at once give each run its own (PODHOST_TEST_BRIDGE, PODHOST_TEST_SUBNET); each xdist worker of a
# run takes the next ones after them (per_worker).
TEST_BRIDGE, TEST_SUBNET = per_worker(
    os.environ.get("PODHOST_TEST_BRIDGE", "phit0"),
    os.environ.get("PODHOST_TEST_SUBNET", "10.233.0.0/24"),
    worker_index(),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates real namespaces, mounts and cgroups")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def pytest_configure(config: pytest.Config) -> None:
    """The CNI bridge plugin turns forwarding on at every ADD (podhost's node-only policy turns it off
    again just after; a containerd peer leaves it on until it stops), and instances overlap, in a session
    and across xdist workers: one may read another's 1 as "the original". So the value is read once, here,
    by the process that starts the workers (or the only one), before any instance exists; the workers
    inherit it (IP_FORWARD_ENV, what every Instance puts back), and pytest_unconfigure restores it after
    all of them ended. A caller running pytest twice (test.sh) sets it once for both."""
    if os.geteuid() == 0 and not hasattr(config, "workerinput"):
        os.environ.setdefault(IP_FORWARD_ENV, IP_FORWARD.read_text().strip())


def pytest_unconfigure(config: pytest.Config) -> None:
    """After every worker ended: ip_forward as it was found, and portmap's shared nat chains gone once no
    mapping uses them (a worker must not remove them while another's pod may be adding a mapping)."""
    if os.geteuid() == 0 and not hasattr(config, "workerinput") and IP_FORWARD_ENV in os.environ:
        IP_FORWARD.write_text(os.environ[IP_FORWARD_ENV] + "\n")
        remove_idle_portmap_chains()


@pytest.fixture(scope="session")
def orphan_reaper() -> Iterator[OrphanReaper]:
    reaper = OrphanReaper()
    yield reaper
    reaper.close()


@pytest.fixture(scope="session")
def session_instance(orphan_reaper: OrphanReaper) -> Iterator[Instance]:
    inst = Instance(Path(f"/tmp/ph-it-{secrets.token_hex(4)}"), TEST_BRIDGE, TEST_SUBNET)
    try:
        inst.start()
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def podhost(session_instance: Instance) -> Iterator[Instance]:
    """The shared instance; after the test its pods are removed, and the test fails if that leaves anything."""
    yield from leak_checked(session_instance)
