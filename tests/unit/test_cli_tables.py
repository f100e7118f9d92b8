"""podhost.cli.tables renders CRI messages the way crictl prints them."""

from __future__ import annotations

import json

import pytest
import yaml

from podhost.cli import tables
from podhost.cri import api_pb2 as pb

NOW = 1_700_000_000 * 10**9
SEC = 10**9


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * 60 + 59, "59 minutes"),
        (3600, "About an hour"),
        (5399, "About an hour"),
        (5400, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (14 * 86400, "2 weeks"),
        (60 * 86400, "2 months"),
        (2 * 365 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, words: str) -> None:
    assert tables.human_duration(seconds) == words


@pytest.mark.parametrize(
    ("size", "precision", "text"),
    [
        (0, 4, "0B"),
        (999, 3, "999B"),
        (4_860_000, 3, "4.86MB"),
        (744_000, 3, "744kB"),
        (1_234_567, 4, "1.235MB"),
        (2_500_000_000, 3, "2.5GB"),
    ],
)
def test_human_size(size: int, precision: int, text: str) -> None:
    assert tables.human_size(size, precision) == text


def test_truncate_id() -> None:
    assert tables.truncate_id("0123456789abcdef") == "0123456789abc"
    assert tables.truncate_id("sha256:" + "ab" * 32, "sha256:") == "abababababababa"[:13]
    assert tables.truncate_id("short") == "short"


def test_render_pads_like_tabwriter() -> None:
    text = tables.render([["A", "LONGER HEADER", "Z"], ["a-very-long-cell-value-here", "b", "last"]])
    lines = text.splitlines()
    # every column but the last is at least 20 wide and 3 wider than its longest cell
    assert lines[0] == "A" + " " * 29 + "LONGER HEADER" + " " * 7 + "Z"
    assert lines[1] == "a-very-long-cell-value-here" + " " * 3 + "b" + " " * 19 + "last"
    assert tables.render([]) == ""


def pod(
    pid: str, name: str, created_ago_s: float, state: int = pb.SANDBOX_READY, handler: str = ""
) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=pid,
        metadata=pb.PodSandboxMetadata(name=name, namespace="default", attempt=1),
        state=state,  # type: ignore[arg-type]
        created_at=NOW - int(created_ago_s * SEC),
        runtime_handler=handler,
    )


def test_pods_table() -> None:
    rows = tables.pod_rows(
        [pod("a" * 64, "old", 90, pb.SANDBOX_NOTREADY, "runc"), pod("b" * 64, "new", 5)], NOW
    )
    assert rows[0] == ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
    assert rows[1] == ["b" * 13, "5 seconds ago", "Ready", "new", "default", "1", "(default)"]
    assert rows[2] == ["a" * 13, "About a minute ago", "NotReady", "old", "default", "1", "runc"]
    assert tables.pod_rows([pod("a" * 64, "x", 1)], NOW, no_trunc=True)[1][0] == "a" * 64
    text = tables.pods_table([pod("b" * 64, "new", 5)], NOW)
    assert text.splitlines()[0].startswith("POD ID" + " " * 14 + "CREATED")
    assert text.splitlines()[1].startswith("b" * 13 + " " * 7 + "5 seconds ago")


def test_containers_table() -> None:
    c = pb.Container(
        id="c" * 64,
        pod_sandbox_id="d" * 64,
        metadata=pb.ContainerMetadata(name="app", attempt=2),
        image=pb.ImageSpec(image="sha256:" + "e" * 64),
        state=pb.CONTAINER_EXITED,
        created_at=NOW - 3 * 60 * SEC,
        labels={"io.kubernetes.pod.name": "web"},
    )
    named = pb.Container(
        id="f" * 64,
        image=pb.ImageSpec(image="docker.io/library/busybox:1.36"),
        state=pb.CONTAINER_RUNNING,
        created_at=NOW - SEC,
    )
    rows = tables.container_rows([c, named], NOW)
    assert rows[0] == ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"]
    assert rows[1] == [
        "f" * 13,
        "docker.io/library/busybox:1.36",
        "1 second ago",
        "Running",
        "",
        "0",
        "",
        "unknown",
    ]
    assert rows[2] == ["c" * 13, "e" * 13, "3 minutes ago", "Exited", "app", "2", "d" * 13, "web"]
    assert tables.container_rows([c], NOW, no_trunc=True)[1][1] == "sha256:" + "e" * 64
    assert tables.CONTAINER_STATES[pb.CONTAINER_CREATED] == "Created"


def test_images_table() -> None:
    busybox = pb.Image(
        id="sha256:" + "1" * 64,
        repo_tags=["docker.io/library/busybox:1.36", "localhost:5000/busybox:latest"],
        repo_digests=["docker.io/library/busybox@sha256:" + "2" * 64],
        size=4_860_000,
    )
    untagged = pb.Image(
        id="sha256:" + "3" * 64, repo_digests=["quay.io/x/y@sha256:" + "4" * 64], size=744_000
    )
    rows = tables.image_rows([untagged, busybox])
    assert rows == [
        ["IMAGE", "TAG", "IMAGE ID", "SIZE"],
        ["docker.io/library/busybox", "1.36", "1" * 13, "4.86MB"],
        ["localhost:5000/busybox", "latest", "1" * 13, "4.86MB"],
        ["quay.io/x/y", "<none>", "3" * 13, "744kB"],
    ]
    with_digests = tables.image_rows([busybox], digests=True)
    assert (
        with_digests[0] == ["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE"] and with_digests[1][2] == "2" * 13
    )
    assert tables.split_repo_tag("localhost:5000/busybox") == ("localhost:5000/busybox", "<none>")


def test_stats_table() -> None:
    def sample(ts: int, cpu: int) -> pb.ContainerStats:
        return pb.ContainerStats(
            attributes=pb.ContainerAttributes(id="c" * 64, metadata=pb.ContainerMetadata(name="app")),
            cpu=pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=pb.UInt64Value(value=cpu)),
            memory=pb.MemoryUsage(working_set_bytes=pb.UInt64Value(value=1_500_000)),
            writable_layer=pb.FilesystemUsage(
                used_bytes=pb.UInt64Value(value=4096), inodes_used=pb.UInt64Value(value=3)
            ),
        )

    old, new = sample(0, 1_000_000_000), sample(SEC, 1_250_000_000)
    assert tables.cpu_percent(old, new) == pytest.approx(25.0)
    rows = tables.stats_rows([new], {old.attributes.id: old})
    assert rows == [
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES", "SWAP"],
        ["c" * 13, "app", "25.00", "1.5MB", "4.096kB", "3", "0B"],
    ]


def test_documents() -> None:
    v = pb.VersionResponse(
        version="0.1.0", runtime_name="podhost", runtime_version="0.1.0", runtime_api_version="v1"
    )
    assert tables.version_text(v) == (
        "Version:  0.1.0\nRuntimeName:  podhost\nRuntimeVersion:  0.1.0\nRuntimeApiVersion:  v1\n"
    )
    status = pb.PodSandboxStatus(id="x", created_at=5, state=pb.SANDBOX_NOTREADY)
    doc = tables.status_document(status, {"info": '{"pid": 7}', "raw": "not json"})
    assert doc == {
        "status": {"id": "x", "createdAt": "5", "state": "SANDBOX_NOTREADY"},
        "info": {"info": {"pid": 7}, "raw": "not json"},
    }
    assert json.loads(tables.dump(doc, "json")) == doc
    assert yaml.safe_load(tables.dump(doc, "yaml")) == doc
