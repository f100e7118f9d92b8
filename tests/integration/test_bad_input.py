"""Bad input through the CRI socket (issue 9, findings 8 and 10): one row per input, each answered with
INVALID_ARGUMENT at once, nothing new listed, and nothing left behind (the `podhost` fixture's leak
check runs after every row). The rules themselves are tested row by row in tests/unit/test_validation.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import InvalidArgument
from tests.instance import Instance

pytestmark = pytest.mark.root

MB = "x" * (1 << 20)
ESCAPE = Path("/tmp/ph2-bad-input-escape.log")

PodEdit = Callable[[pb.PodSandboxConfig], object]
CtrEdit = Callable[[pb.ContainerConfig], object]


def _dns(p: pb.PodSandboxConfig, **fields: list[str]) -> None:
    p.dns_config.CopyFrom(
        pb.DNSConfig(servers=["127.0.0.1"], searches=["cluster.local"], options=["ndots:5"])
    )
    for name, values in fields.items():
        getattr(p.dns_config, name).extend(values)


# (row, edit, what the error names)
POD_ROWS: list[tuple[str, PodEdit, str]] = [
    ("NUL in the pod name", lambda p: setattr(p.metadata, "name", "bad\0name"), "metadata.name"),
    ("NUL in the namespace", lambda p: setattr(p.metadata, "namespace", "te\0st"), "metadata.namespace"),
    ("NUL in a label", lambda p: p.labels.update({"app": "a\0b"}), "labels"),
    ("NUL in an annotation key", lambda p: p.annotations.update({"a\0": "b"}), "annotations"),
    (
        "NUL in a sysctl value",
        lambda p: p.linux.sysctls.update({"net.ipv4.tcp_syncookies": "1\0"}),
        "sysctls",
    ),
    ("megabyte pod name", lambda p: setattr(p.metadata, "name", MB), "metadata.name"),
    ("megabyte uid", lambda p: setattr(p.metadata, "uid", MB), "metadata.uid"),
    ("megabyte sysctl value", lambda p: p.linux.sysctls.update({"net.ipv4.tcp_syncookies": MB}), "sysctls"),
    ("megabyte label", lambda p: p.labels.update({"big": MB}), "labels"),
    (
        "';' in the pod name (CNI_ARGS)",
        lambda p: setattr(p.metadata, "name", "a;K8S_POD_UID=x"),
        "metadata.name",
    ),
    ("newline in the hostname", lambda p: setattr(p, "hostname", "pod\n10.0.0.1 kubernetes"), "hostname"),
    ("newline in a DNS server", lambda p: _dns(p, servers=["127.0.0.2\nnameserver 8.8.8.8"]), "servers[1]"),
    ("newline in a DNS search", lambda p: _dns(p, searches=["svc\nnameserver 8.8.8.8"]), "searches[1]"),
    ("newline in a DNS option", lambda p: _dns(p, options=["ndots:1\nnameserver 8.8.8.8"]), "options[1]"),
    ("relative log_directory", lambda p: setattr(p, "log_directory", "logs"), "log_directory"),
    (
        "host_ip not an address",
        lambda p: p.port_mappings.add(container_port=80, host_port=18080, host_ip="x"),
        "host_ip",
    ),
    (
        "cgroup_parent with ..",
        lambda p: setattr(p.linux, "cgroup_parent", "/../../ph2-escape"),
        "cgroup_parent",
    ),
]


CTR_ROWS: list[tuple[str, CtrEdit, str]] = [
    ("absolute log_path", lambda c: setattr(c, "log_path", str(ESCAPE)), "log_path"),
    ("log_path with ..", lambda c: setattr(c, "log_path", "../" * 20 + str(ESCAPE)[1:]), "log_path"),
    ("log_path with .. inside", lambda c: setattr(c, "log_path", "c/../../x.log"), "log_path"),
    ("NUL in the container name", lambda c: setattr(c.metadata, "name", "c\0"), "metadata.name"),
    ("NUL in an argument", lambda c: c.args.append("a\0b"), "args[0]"),
    ("NUL in an env value", lambda c: c.envs.add(key="A", value=b"b\0c"), "envs[0]"),
    ("NUL in a mount path", lambda c: c.mounts.add(container_path="/data", host_path="/tmp\0x"), "host_path"),
    ("megabyte container name", lambda c: setattr(c.metadata, "name", MB), "metadata.name"),
    ("megabyte env value", lambda c: c.envs.add(key="A", value=MB.encode()), "envs[0]"),
    ("'=' in an env name", lambda c: c.envs.add(key="A=B", value=b"c"), "envs[0].key"),
]


def snapshot(inst: Instance) -> tuple[list[str], list[str]]:
    return (
        sorted(p.id for p in inst.client.list_pod_sandbox()),
        sorted(c.id for c in inst.client.list_containers()),
    )


def refused(call: Callable[[], object], field: str) -> str:
    """Run `call`; it must fail with INVALID_ARGUMENT, quickly, naming `field`. Returns the message."""
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as err:
        call()
    assert err.value.grpc_code == "INVALID_ARGUMENT"
    assert time.monotonic() - started < 10
    assert field in str(err.value), str(err.value)[:300]
    assert len(str(err.value)) < 1000, "a megabyte value must not come back as a megabyte message"
    return str(err.value)


@pytest.mark.parametrize(("row", "edit", "field"), POD_ROWS, ids=[r[0] for r in POD_ROWS])
def test_run_pod_sandbox_refuses(podhost: Instance, row: str, edit: PodEdit, field: str) -> None:
    before = snapshot(podhost)
    config = podhost.pod_config("badinput")
    edit(config)
    refused(lambda: podhost.client.run_pod_sandbox(config), field)
    assert snapshot(podhost) == before


@pytest.mark.parametrize(("row", "edit", "field"), CTR_ROWS, ids=[r[0] for r in CTR_ROWS])
def test_create_container_refuses(podhost: Instance, row: str, edit: CtrEdit, field: str) -> None:
    pod = podhost.pod_config("badinput-ctr")
    pod_id = podhost.client.run_pod_sandbox(pod)
    before = snapshot(podhost)
    config = podhost.container_config("c", ["sleep", "3600"])
    edit(config)
    refused(lambda: podhost.client.create_container(pod_id, config, pod), field)
    assert snapshot(podhost) == before
    assert not ESCAPE.exists(), "nothing was written outside the pod's log directory"


def test_load_image_refuses_what_is_not_a_regular_file(podhost: Instance) -> None:
    """LoadImage("/dev/zero") never returned, burnt a core, and then SIGTERM no longer ended the daemon."""
    fifo = podhost.root / "image.fifo"
    os.mkfifo(fifo)
    try:
        images = [i.id for i in podhost.client.list_images()]
        message = refused(lambda: podhost.client.load_image("/dev/zero"), "/dev/zero")
        assert "not a regular file (a character device)" in message
        message = refused(lambda: podhost.client.load_image(str(fifo)), str(fifo))
        assert "not a regular file (a FIFO)" in message
        assert [i.id for i in podhost.client.list_images()] == images
    finally:
        fifo.unlink()
