"""Pull benchmark (issue: images from real registries): `python -m bench.pull [--runs 3]`.

One multi-layer image (busybox, many small files, incompressible data, compressible text; gzip layers)
is pushed to a local Debian docker-registry on 127.0.0.1 over TLS (a throwaway CA). Then the same image
is pulled and unpacked through CRI PullImage by a private podhost daemon and by a private containerd 1.6
(`bench.containerd_peer`, told to trust the registry's CA through a hosts.toml `config_path`), each run
starting from nothing (the image is removed through CRI after each pull, and both runtimes then delete
its content and layers). Prints the median wall time of each and the ratio; asserts nothing.
Nothing here contacts any registry but the local one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import tarfile
import time
from pathlib import Path
from typing import cast

from bench import push
from bench.containerd_peer import ContainerdPeer
from bench.local_registry import LocalRegistry, free_port
from podhost.cri import api_pb2 as pb
from podhost.runtime.image import build
from podhost.runtime.image.archive import sha256_digest
from podhost.runtime.image.registry.client import RegistryClient
from podhost.runtime.image.registry.hosts import Endpoint
from tests.instance import Instance

BRIDGE, SUBNET = "phreg0", "10.239.0.0/24"
REPO = "bench/multi"
#: What a runtime's store may hold beyond its size before the first pull once a pulled image is removed
#: (containerd's metadata database grows a little).
SETTLED_SLACK = 8 << 20


def bench_layers(seed: int = 7) -> list[bytes]:
    """Five layer tars, about 30 MB unpacked, 3000 files: the shape of a small application image."""
    rnd = __import__("random").Random(seed)
    words = [f"word{i}" for i in range(500)]

    def text(n: int) -> bytes:
        return " ".join(rnd.choice(words) for _ in range(n // 6)).encode()[:n]

    small = [build.Entry("app", tarfile.DIRTYPE, 0o755)]
    small += [
        build.Entry(f"app/mod{i:04d}.py", tarfile.REGTYPE, 0o644, data=text(rnd.randint(500, 8000)))
        for i in range(2500)
    ]
    blobs = [build.Entry("data", tarfile.DIRTYPE, 0o755)]
    blobs += [
        build.Entry(f"data/blob{i}.bin", tarfile.REGTYPE, 0o644, data=os.urandom(1 << 20)) for i in range(6)
    ]
    docs = [build.Entry("docs", tarfile.DIRTYPE, 0o755)]
    docs += [build.Entry(f"docs/page{i}.txt", tarfile.REGTYPE, 0o644, data=text(200_000)) for i in range(40)]
    mixed = [build.Entry("lib", tarfile.DIRTYPE, 0o755)]
    mixed += [
        build.Entry(f"lib/f{i:03d}", tarfile.REGTYPE, 0o755, data=os.urandom(4000) + text(20_000))
        for i in range(400)
    ]
    # A marker in every layer makes each run's blobs unique: no run finds content a previous one left.
    marker = build.Entry(f".bench-run-{seed}", tarfile.REGTYPE, 0o644, data=b"")
    return [build.tar_entries([*e, marker]) for e in (build.busybox_entries(), small, blobs, docs, mixed)]


def push_bench_image(registry: LocalRegistry, seed: int) -> tuple[str, int, int]:
    """Push run `seed`'s image; returns (reference, gzip bytes, unpacked tar bytes)."""
    tars = bench_layers(seed)
    config = build.config_json([sha256_digest(t) for t in tars], cmd=["sh"])
    image = push.PushImage(config, [push.gzip_layer(t) for t in tars])
    endpoint = Endpoint(registry.host, "https", ca_file=registry.ca_file)
    with RegistryClient(endpoint, None) as client:
        push.push_image(client, REPO, f"run{seed}", image)
    return f"{registry.host}/{REPO}:run{seed}", sum(len(b) for b in image.layers), sum(len(t) for t in tars)


def hosts_toml(registry: LocalRegistry) -> str:
    """containerd's hosts.toml (docs/hosts.md) for the local registry: its own CA, pull and resolve."""
    return (
        f'server = "https://{registry.host}"\n\n'
        f'[host."https://{registry.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{registry.ca_file}"\n'
    )


class RegistryPeer(ContainerdPeer):
    """The containerd peer, with its CRI registry `config_path` pointing at our hosts.toml directory."""

    def __init__(self, root: Path, registry: LocalRegistry) -> None:
        super().__init__(root, BRIDGE, SUBNET, cgroup_parent="/podhost-ctrd-regbench")
        self.registry = registry

    def _prepare(self) -> None:
        super()._prepare()
        certs = self.root / "certs.d"
        (certs / self.registry.host).mkdir(parents=True, exist_ok=True)
        (certs / self.registry.host / "hosts.toml").write_text(hosts_toml(self.registry))
        with open(self.config_path, "a") as f:
            f.write(f'\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{certs}"\n')


def stored_bytes(root: Path) -> int:
    """Disk blocks (in bytes) of every file under `root`."""
    total = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def settle(root: Path, baseline: int, timeout: float = 120.0) -> None:
    """Wait until a runtime has really deleted a removed image (containerd's RemoveImage leaves the
    deletion to its garbage collector, podhost deletes before answering), then flush the disk: each
    timed pull starts on a quiet disk, not under the other runtime's deletions and writeback."""
    deadline = time.monotonic() + timeout
    while stored_bytes(root) > baseline + SETTLED_SLACK and time.monotonic() < deadline:
        time.sleep(0.2)
    os.sync()


def timed_pull(pull, remove, ref: str, root: Path, baseline: int) -> float:  # type: ignore[no-untyped-def]
    settle(root, baseline)
    t0 = time.perf_counter()
    image_id = pull(ref)
    elapsed = time.perf_counter() - t0
    remove(image_id)
    settle(root, baseline)
    return elapsed


def run(runs: int) -> dict[str, object]:
    """Both runtimes run side by side and take turns, so a busy machine slows both alike."""
    base = Path(f"/tmp/ph-reg-bench-{secrets.token_hex(3)}")
    registry = LocalRegistry(base / "registry", free_port(5100, 5199), tls=True)
    results: dict[str, object] = {"runs": runs}
    inst: Instance | None = None
    peer: RegistryPeer | None = None
    try:
        registry.start()
        # Each runtime pulls its own copy of each run's image (same shape, unique blobs).
        pushed = [push_bench_image(registry, seed) for seed in range(2 * runs)]
        ref, gz, raw = pushed[0]
        refs = [p[0] for p in pushed]
        results.update(image=ref.rpartition(":")[0], compressed_mb=gz / 1e6, unpacked_mb=raw / 1e6, layers=5)

        inst = Instance(base / "podhost", BRIDGE, SUBNET)
        with open(inst.config_file, "a") as f:
            f.write(f'\n[registries."{registry.host}"]\nca_file = "{registry.ca_file}"\n')
        inst.start()
        peer = RegistryPeer(base / "containerd", registry)
        peer.start()
        ctrd = peer.images

        def ctrd_pull(ref: str) -> str:
            return str(
                ctrd.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=300).image_ref
            )

        def ctrd_remove(image_id: str) -> None:
            ctrd.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)), timeout=60)

        ph_times: list[float] = []
        ct_times: list[float] = []
        ph_root, ct_root = inst.config.image_dir, peer.root
        podhost = (ph_times, inst.client.pull_image, inst.client.remove_image, refs[:runs], ph_root)
        containerd = (ct_times, ctrd_pull, ctrd_remove, refs[runs:], ct_root)
        baselines = {ph_root: stored_bytes(ph_root), ct_root: stored_bytes(ct_root)}
        for i in range(runs):  # taking turns, each first every other run
            for times, pull, remove, own, root in (
                (podhost, containerd) if i % 2 == 0 else (containerd, podhost)
            ):
                times.append(timed_pull(pull, remove, own[i], root, baselines[root]))
        results["podhost"], results["containerd"] = ph_times, ct_times
    finally:
        if peer is not None:
            peer.stop()
        if inst is not None:
            inst.cleanup()
        registry.stop()
        shutil.rmtree(base, ignore_errors=True)
    return results


def print_table(r: dict[str, object]) -> None:
    runs = {name: cast(list[float], r[name]) for name in ("podhost", "containerd")}
    print(
        f"image {r['image']}: {r['layers']} gzip layers, {r['compressed_mb']:.1f} MB compressed, "
        f"{r['unpacked_mb']:.1f} MB unpacked; median of {r['runs']} cold pulls (CRI PullImage, pull + unpack)"
    )
    print(f"{'runtime':<12}{'median s':>10}   runs (s)")
    for name, times in runs.items():
        print(f"{name:<12}{statistics.median(times):>10.3f}   {' '.join(f'{t:.3f}' for t in times)}")
    ratio = statistics.median(runs["podhost"]) / statistics.median(runs["containerd"])
    print(f"ratio podhost/containerd (median): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args()
    results = run(args.runs)
    print_table(results)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
