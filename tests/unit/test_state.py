"""Records survive a round trip through disk, and writes are atomic."""

import json
import os
from pathlib import Path

from podhost.atomicfile import write_atomic
from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerState,
    DNSConfig,
    LinuxContainerResources,
    NamespaceMode,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxMetadata,
    PortMapping,
    from_dict,
    to_dict,
)
from podhost.runtime.state import RecordStore


def sandbox() -> PodSandbox:
    cfg = PodSandboxConfig(
        metadata=PodSandboxMetadata("web", "u", "ns", 1),
        dns_config=DNSConfig(servers=["1.2.3.4"]),
        port_mappings=[PortMapping("TCP", 80, 8080)],
        resources=LinuxContainerResources(cpu_shares=512),
    )
    cfg.namespace_options.pid = NamespaceMode.POD
    return PodSandbox(id="a" * 64, config=cfg, pid=42, ns_paths={"net": "/run/x/net"})


def test_records_round_trip_with_nested_types_and_enums() -> None:
    s = sandbox()
    back = from_dict(PodSandbox, json.loads(json.dumps(to_dict(s))))
    assert back == s
    assert back.config.namespace_options.pid is NamespaceMode.POD
    c = Container(
        id="c",
        sandbox_id="s",
        config=ContainerConfig(envs=[("A", "1")]),
        state=ContainerState.CONTAINER_RUNNING,
    )
    assert from_dict(Container, json.loads(json.dumps(to_dict(c)))) == c


def test_store_reloads_records_and_sets_aside_corrupt_ones(tmp_path: Path) -> None:
    records, aside = tmp_path / "records", tmp_path / "corrupt"
    store = RecordStore(records, PodSandbox, aside)
    store.put("a" * 64, sandbox())
    (records / "broken.json").write_text("{not json")
    (records / ("b" * 64 + ".json")).write_text(json.dumps(to_dict(sandbox())))  # names another id
    (records / ".x.json.1.2.tmp").write_text("half a write")
    again = RecordStore(records, PodSandbox, aside)
    assert again.ids() == ["a" * 64]
    assert sorted(again.corrupt) == ["b" * 64, "broken"]  # recovery cleans up after these from the run dir
    assert sorted(p.name.split("-")[1] for p in aside.iterdir()) == ["b" * 64, "broken"]
    assert sorted(p.name for p in records.iterdir()) == ["a" * 64 + ".json"]
    again.delete("a" * 64)
    assert RecordStore(records, PodSandbox, aside).ids() == []


def test_write_atomic_replaces_whole_files_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["r.json"]


def test_a_volatile_field_stays_out_of_the_records_directory(tmp_path: Path) -> None:
    """A container's environment (a Secret's value, say) is written to the volatile directory (the run
    dir, a tmpfs), never to the records on disk; a reload puts it back, a reboot (no volatile file) leaves
    it empty, and a volatile file whose record never got written, or half-written, is removed."""
    disk, run = tmp_path / "records", tmp_path / "run"
    volatile = (run, ("config", "envs"))
    c = Container(id="c" * 64, sandbox_id="s", config=ContainerConfig(envs=[("PASSWORD", "s3cr3t-value")]))
    store: RecordStore[Container] = RecordStore(disk, Container, volatile=volatile)
    store.put(c.id, c)
    assert "s3cr3t-value" not in (disk / f"{c.id}.json").read_text()
    assert "s3cr3t-value" in (run / f"{c.id}.json").read_text()
    assert (run / f"{c.id}.json").stat().st_mode & 0o777 == 0o600
    assert store.get(c.id) == c, "the cache keeps the whole record"
    (run / ("o" * 64 + ".json")).write_text("[]")  # a crash between the two writes
    half_written = run / f".{'p' * 64}.json.27294.140603312555712.tmp"  # a crash inside write_atomic
    half_written.write_text('{"config": {"envs"')
    again: RecordStore[Container] = RecordStore(disk, Container, volatile=volatile)
    assert again.get(c.id) == c
    assert not (run / ("o" * 64 + ".json")).exists()
    assert not half_written.exists(), "found by `python -m bench.crash`: a SIGKILL inside the write left it"
    (run / f"{c.id}.json").unlink()  # a reboot empties the tmpfs
    rebooted: RecordStore[Container] = RecordStore(disk, Container, volatile=volatile)
    back = rebooted.get(c.id)
    assert back is not None and back.config.envs == [] and back.sandbox_id == "s"
    store.put(c.id, c)
    store.delete(c.id)
    assert not (disk / f"{c.id}.json").exists() and not (run / f"{c.id}.json").exists()
