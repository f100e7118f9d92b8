"""Shared fixtures. Integration tests (marked `root`) need root; they are skipped, loudly, without it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.instance import Instance, OrphanReaper, leak_checked
from tests.leaks import remove_idle_portmap_chains

# Test instances use their own bridges and subnets, never podhost's defaults. Two test runs on one
# machine at once give each run its own (PODHOST_TEST_BRIDGE, PODHOST_TEST_SUBNET).
TEST_BRIDGE = os.environ.get("PODHOST_TEST_BRIDGE", "phit0")
TEST_SUBNET = os.environ.get("PODHOST_TEST_SUBNET", "10.233.0.0/24")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates real namespaces, mounts and cgroups")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture(scope="session", autouse=True)
def ip_forward_restored() -> Iterator[None]:
    """The CNI bridge plugin turns forwarding on at every ADD, and instances overlap in a session (one may
    save another's 1 as "the original"): whatever happened, the session leaves the value it found. And
    portmap's shared nat chains go once no mapping uses them."""
    if os.geteuid() != 0:
        yield
        return
    original = IP_FORWARD.read_text()
    yield
    IP_FORWARD.write_text(original)
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
