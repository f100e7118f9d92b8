"""NRI without a daemon: the framing of the mux and of ttrpc, and what adjustments do to an OCI spec."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from podhost.runtime.nri import api_pb2 as nri
from podhost.runtime.nri.objects import Adjuster, AdjustmentRefused
from podhost.runtime.nri.protocol import (
    MAX_MESSAGE,
    TYPE_REQUEST,
    MuxReader,
    ProtocolError,
    TtrpcReader,
    event_bit,
    mux_frame,
    ttrpc_frame,
)
from podhost.runtime.nri.transport import MUX_CHUNK, UNKNOWN, ConnectionClosed, Trunk, TtrpcError


def test_frames_survive_any_chunking() -> None:
    frames = ttrpc_frame(1, TYPE_REQUEST, b"a" * 5000) + ttrpc_frame(3, TYPE_REQUEST, b"")
    wire = mux_frame(1, frames[:4096]) + mux_frame(2, b"x") + mux_frame(1, frames[4096:])
    mux, ttrpc, got = MuxReader(), TtrpcReader(), []
    for i in range(0, len(wire), 7):  # the trunk delivers bytes in arbitrary pieces
        for conn_id, payload in mux.feed(wire[i : i + 7]):
            if conn_id == 1:
                got += ttrpc.feed(payload)
    assert [(f.stream_id, len(f.data)) for f in got] == [(1, 5000), (3, 0)]


def test_oversized_frames_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        ttrpc_frame(1, TYPE_REQUEST, b"a" * (MAX_MESSAGE + 1))
    with pytest.raises(ProtocolError):
        TtrpcReader().feed((MAX_MESSAGE + 1).to_bytes(4, "big") + b"\0" * 6)


def test_event_bits_match_nri() -> None:
    assert event_bit(nri.RUN_POD_SANDBOX) == 1
    assert event_bit(nri.CREATE_CONTAINER) == 8
    assert event_bit(nri.VALIDATE_CONTAINER_ADJUSTMENT) == 1 << 13


def test_trunk_round_trip_with_large_messages() -> None:
    """A call and its answer across a socket pair, far bigger than one mux frame; errors carry their code."""
    left, right = socket.socketpair()

    def echo(service: str, method: str, payload: bytes) -> bytes:
        if method == "Fail":
            raise TtrpcError(UNKNOWN, "refused")
        return payload

    server, client = Trunk(right, {1: echo}, lambda: None, "server"), Trunk(left, {}, lambda: None, "client")
    server.start()
    client.start()
    try:
        pod = nri.PodSandbox(id="p", name="x" * 20000)
        assert client.call(1, "svc", "Echo", pod, nri.PodSandbox(), 5).name == pod.name
        with pytest.raises(TtrpcError, match="refused") as err:
            client.call(1, "svc", "Fail", pod, nri.PodSandbox(), 5)
        assert err.value.code == UNKNOWN
    finally:
        client.close()
        server.close()


def test_mux_frames_stay_within_what_the_upstream_reader_takes() -> None:
    """The Go side reads a mux frame into ttrpc's 4 KiB buffer: a message goes out in frames that fit."""
    left, right = socket.socketpair()
    client = Trunk(left, {}, lambda: None, "client")
    client.start()
    sizes: list[int] = []
    reader, ttrpc = MuxReader(), TtrpcReader()

    def peer() -> None:
        while True:
            frames = reader.feed(right.recv(65536))
            sizes.extend(len(payload) for _, payload in frames)
            if any(ttrpc.feed(payload) for _, payload in frames):
                right.close()  # the whole request arrived: hang up
                return

    thread = threading.Thread(target=peer)
    thread.start()
    with pytest.raises(ConnectionClosed):
        client.call(1, "svc", "Big", nri.PodSandbox(name="y" * 20000), nri.PodSandbox(), 5)
    thread.join(5)
    assert len(sizes) >= 5 and max(sizes) <= MUX_CHUNK


def test_a_call_unanswered_times_out() -> None:
    left, right = socket.socketpair()
    release = threading.Event()

    def slow(service: str, method: str, payload: bytes) -> bytes:
        release.wait(5)
        return payload

    server, client = Trunk(right, {1: slow}, lambda: None, "s"), Trunk(left, {}, lambda: None, "c")
    server.start()
    client.start()
    try:
        with pytest.raises(TimeoutError):
            client.call(1, "svc", "Slow", nri.Empty(), nri.Empty(), 0.2)
    finally:
        release.set()
        client.close()
        server.close()


def spec() -> dict[str, Any]:
    return {
        "process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "KEEP=1", "DROP=1"], "rlimits": []},
        "mounts": [{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}],
        "annotations": {"a": "1", "gone": "x"},
        "linux": {"resources": {}},
    }


def test_adjustments_add_replace_and_remove() -> None:
    s, annotations = spec(), {"gone": "x"}
    adjust = nri.ContainerAdjustment()
    adjust.env.add(key="NEW", value="v")
    adjust.env.add(key="-DROP")
    adjust.annotations["b"] = "2"
    adjust.annotations["-gone"] = ""
    adjust.mounts.add(destination="-/data")
    adjust.mounts.add(destination="/cache", type="tmpfs", source="tmpfs", options=["size=1m"])
    adjust.rlimits.add(type="RLIMIT_NOFILE", hard=100, soft=50)
    adjust.args.extend(["", "sh", "-c", "true"])  # an update: replaces without claiming
    adjust.linux.resources.memory.limit.value = 1 << 26
    adjust.linux.resources.cpu.cpus = "0"
    adjust.linux.oom_score_adj.value = 500
    Adjuster(s, annotations).apply(adjust, "p")
    assert s["process"]["env"] == ["PATH=/bin", "KEEP=1", "NEW=v"]
    assert s["annotations"] == {"a": "1", "b": "2"} and annotations == {"b": "2"}
    assert [m["destination"] for m in s["mounts"]] == ["/cache"]
    assert s["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 100, "soft": 50}]
    assert s["process"]["args"] == ["sh", "-c", "true"] and s["process"]["oomScoreAdj"] == 500
    assert s["linux"]["resources"] == {"memory": {"limit": 1 << 26}, "cpu": {"cpus": "0"}}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda a: a.CDI_devices.add(name="vendor.com/gpu=0"), "adjust.CDI_devices"),
        (lambda a: a.linux.namespaces.add(type="network", path="/x"), "adjust.linux.namespaces"),
        (lambda a: a.linux.scheduler.SetInParent(), "adjust.linux.scheduler"),
        (lambda a: setattr(a.linux, "cgroups_path", "/elsewhere"), "adjust.linux.cgroups_path"),
        (lambda a: a.linux.resources.hugepage_limits.add(page_size="2MB", limit=1), "hugepage_limits"),
        (lambda a: a.linux.resources.memory.swappiness.SetInParent(), "memory.swappiness"),
        (lambda a: a.linux.resources.blockio_class.SetInParent(), "blockio_class"),
    ],
)
def test_adjustments_podhost_cannot_apply_are_refused_by_name(setup: Any, message: str) -> None:
    adjust = nri.ContainerAdjustment()
    setup(adjust)
    with pytest.raises(AdjustmentRefused, match=message):
        Adjuster(spec(), {}).apply(adjust, "p")


def test_two_plugins_claiming_one_thing_conflict_one_plugin_twice_does_not() -> None:
    adjuster = Adjuster(spec(), {})
    first = nri.ContainerAdjustment()
    first.env.add(key="MODE", value="a")
    adjuster.apply(first, "10-a")
    adjuster.apply(first, "10-a")
    with pytest.raises(AdjustmentRefused, match="plugins 10-a and 20-b both adjust env MODE"):
        adjuster.apply(first, "20-b")


def test_a_mount_needs_an_absolute_destination_and_a_type() -> None:
    adjust = nri.ContainerAdjustment()
    adjust.mounts.add(destination="relative", type="bind", source="/x")
    with pytest.raises(AdjustmentRefused, match="absolute destination"):
        Adjuster(spec(), {}).apply(adjust, "p")
