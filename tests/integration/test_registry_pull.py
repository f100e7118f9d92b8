"""Pulling from real registries: Debian's docker-registry on 127.0.0.1, driven through a real daemon.

The module starts (and stops) its own registries and its own podhost instance (bridge phrgt0, subnet
10.231.52.0/24, root /tmp/ph-reg-*):
- `secure`: TLS with a throwaway CA and htpasswd (bcrypt) Basic auth; images are pushed to it as an OCI
  index with two platforms (amd64 and arm64/v8), by this package's own push code;
- `plain` + a token front (`BearerFront`): plain HTTP behind a distribution-style Bearer token service,
  reached only as the second mirror of a registry that does not exist;
- `ThrottledProxy`: a TCP relay to `secure` that slows the bytes down, to kill the daemon mid-pull.
Every test checks the store afterwards: no stray work files, no image left by a failed pull.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
import zstandard

from bench import push
from bench.local_registry import LocalRegistry, free_port
from podhost.cri import api_pb2 as pb
from podhost.errors import FailedPrecondition, InvalidArgument, PodhostError
from podhost.runtime.image import build
from podhost.runtime.image.archive import sha256_digest
from podhost.runtime.image.gc import ImageGC
from podhost.runtime.image.registry.auth import Credentials
from podhost.runtime.image.registry.client import RegistryClient
from podhost.runtime.image.registry.hosts import Endpoint
from podhost.runtime.image.registry.manifest import Platform
from podhost.runtime.image.store import ImageStore
from tests.instance import Instance, OrphanReaper
from tests.leaks import find_leaks
from tests.wait import wait_for

pytestmark = pytest.mark.root

# Not bench/pull.py's phreg0 and 10.239.0.0/24: a pull benchmark may run on the machine at the same time.
BRIDGE = "phrgt0"
SUBNET = "10.231.52.0/24"
USER, PASSWORD = "podhost", "reg-" + secrets.token_hex(4)
TOKEN_USER, TOKEN_PASSWORD = "bob", "tok-" + secrets.token_hex(4)
AUTH = pb.AuthConfig(username=USER, password=PASSWORD)
SLEEP = ["sleep", "3600"]


# --- helpers: images -------------------------------------------------------------------------------


def layer(entries: list[build.Entry]) -> bytes:
    return build.tar_entries(entries)


def image(
    tars: list[bytes], platform: Platform | None = None, cmd: list[str] | None = None
) -> push.PushImage:
    """An image of gzip layers whose config names the tars' diff_ids (and `platform`)."""
    cfg = json.loads(build.config_json([sha256_digest(t) for t in tars], cmd=cmd or ["sh"]))
    if platform is not None:
        cfg["architecture"] = platform.architecture
        if platform.variant:
            cfg["variant"] = platform.variant
    config = json.dumps(cfg, sort_keys=True).encode()
    return push.PushImage(config, [push.gzip_layer(t) for t in tars], platform)


def busybox_for(arch: str) -> bytes:
    """busybox plus /etc/arch, so each platform's single layer is its own (and not the local busybox)."""
    marker = build.Entry("etc/arch", tarfile.REGTYPE, 0o644, data=f"{arch}\n".encode())
    return layer([*build.busybox_entries(), marker])


def random_layer(name: str, size: int) -> bytes:
    return layer([build.Entry(name, tarfile.REGTYPE, 0o644, data=os.urandom(size))])


# --- helpers: network fixtures -----------------------------------------------------------------------


class ThrottledProxy:
    """A TCP relay on 127.0.0.1 that sends the server's bytes at `rate` bytes/s (0: full speed)."""

    def __init__(self, port: int, backend: int, rate: int = 0) -> None:
        self.backend, self.rate, self.relayed = backend, rate, 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.backend))
            self._socks += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, throttled: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(16384 if throttled and self.rate else 65536):
                if throttled:
                    self.relayed += len(data)
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        # close() alone does not wake the thread blocked in accept() (its join then waited out its 5 s):
        # shutdown() does, and accept fails with EINVAL.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(5)


class BearerFront:
    """A distribution-style token service in front of a plain registry: /token hands out bearer tokens
    for Basic credentials; /v2/ answers 401 with a Bearer challenge unless a token it issued is sent."""

    def __init__(self, port: int, backend: int) -> None:
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, list[str]]] = []
        front = self
        pool = urllib3.PoolManager()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/token":
                    query = urllib.parse.parse_qs(url.query)
                    front.token_requests.append(query)
                    want = "Basic " + base64.b64encode(f"{TOKEN_USER}:{TOKEN_PASSWORD}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self._send(401, b'{"details":"bad credentials"}', {})
                        return
                    token = secrets.token_hex(16)
                    front.tokens.add(token)
                    self._send(200, json.dumps({"token": token, "expires_in": 300}).encode(), {})
                    return
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in front.tokens:
                    name = url.path.removeprefix("/v2/").partition("/manifests/")[0].partition("/blobs/")[0]
                    challenge = (
                        f'Bearer realm="http://127.0.0.1:{port}/token",service="podhost-test",'
                        f'scope="repository:{name}:pull"'
                    )
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                    return
                upstream = pool.request(
                    self.command,
                    f"http://127.0.0.1:{backend}{self.path}",
                    headers={"Accept": self.headers.get("Accept", "*/*")},
                )
                keep = ("Content-Type", "Docker-Content-Digest")
                self._send(
                    upstream.status,
                    upstream.data,
                    {k: upstream.headers[k] for k in keep if k in upstream.headers},
                )

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- module fixture ------------------------------------------------------------------------------------


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = iter(sorted(set(free_port(5100, 5199) for _ in range(40))))
        self.secure = LocalRegistry(root / "secure", next(ports), tls=True, users={USER: PASSWORD})
        self.plain = LocalRegistry(root / "plain", next(ports), tls=False)
        self.proxy_port, self.front_port = next(ports), next(ports)
        self.nowhere, self.dead_mirror = next(ports), next(ports)  # nothing listens on these
        self.outside = root / "outside"
        self.outside.mkdir(parents=True)
        self.inst: Instance | None = None
        self.proxy: ThrottledProxy | None = None
        self.front: BearerFront | None = None

    @property
    def inst_(self) -> Instance:
        assert self.inst is not None
        return self.inst

    def daemon_config(self) -> str:
        s, ca = self.secure, self.secure.ca_file
        return f"""
[registries."{s.host}"]
ca_file = "{ca}"

[registries."127.0.0.1:{self.proxy_port}"]
ca_file = "{ca}"
username = "{USER}"
password = "{PASSWORD}"

[registries."127.0.0.1:{self.nowhere}"]
mirrors = ["http://127.0.0.1:{self.dead_mirror}", "http://127.0.0.1:{self.front_port}"]

[registries."127.0.0.1:{self.dead_mirror}"]
insecure = true

[registries."127.0.0.1:{self.front_port}"]
insecure = true
auth = "{base64.b64encode(f"{TOKEN_USER}:{TOKEN_PASSWORD}".encode()).decode()}"
"""

    def pusher(self) -> RegistryClient:
        return RegistryClient(
            Endpoint(self.secure.host, "https", ca_file=self.secure.ca_file), Credentials(USER, PASSWORD)
        )

    def ref(self, path: str) -> str:
        return f"{self.secure.host}/{path}"

    @property
    def store_dir(self) -> Path:
        return self.inst_.config.image_dir

    def work_files(self) -> list[str]:
        """What pulls left in the daemon's store work area (must be nothing between pulls)."""
        tmp = self.store_dir / "tmp"
        return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.is_dir() else []

    def layer_dirs(self) -> set[str]:
        return {p.name for p in (self.store_dir / "layers").iterdir()}


@pytest.fixture(scope="module")
def env(orphan_reaper: OrphanReaper) -> Iterator[Env]:
    e = Env(Path(f"/tmp/ph-reg-{secrets.token_hex(4)}"))
    try:
        e.secure.start()
        e.plain.start()
        e.proxy = ThrottledProxy(e.proxy_port, e.secure.port)
        e.front = BearerFront(e.front_port, e.plain.port)
        e.inst = Instance(e.root / "podhost", BRIDGE, SUBNET)
        with open(e.inst.config_file, "a") as f:
            f.write(e.daemon_config())
        e.inst.start()
        yield e
    finally:
        if e.inst is not None:
            e.inst.cleanup()
        for closer in (e.proxy, e.front):
            if closer is not None:
                closer.close()
        e.secure.stop()
        e.plain.stop()
        subprocess.run(["rm", "-rf", str(e.root)], check=False)


@pytest.fixture
def reg(env: Env) -> Iterator[Env]:
    """The module's environment; after each test its pods are removed and nothing may be left."""
    yield env
    inst = env.inst_
    if inst.daemon is None or inst.daemon.poll() is not None:
        inst.start()
    inst.remove_all_pods()
    problems = find_leaks(inst.root, inst.bridge, inst.config.cgroup_parent)
    problems += [f"store work files: {env.work_files()}"] if env.work_files() else []
    problems += [f"written outside: {os.listdir(env.outside)}"] if os.listdir(env.outside) else []
    if problems:
        pytest.fail("leaked: " + "; ".join(problems) + "\n" + inst.log_tail(15))


@pytest.fixture(scope="module")
def multi(env: Env) -> dict[str, str]:
    """busybox pushed as an OCI index of linux/amd64 and linux/arm64/v8: {"index": digest, ...}."""
    images = [
        image([busybox_for("amd64")], Platform("linux", "amd64")),
        image([busybox_for("arm64")], Platform("linux", "arm64", "v8")),
    ]
    with env.pusher() as c:
        index = push.push_index(c, "test/busybox", "multi", images)
    return {
        "index": index,
        "amd64": sha256_digest(images[0].manifest()),
        "amd64_config": sha256_digest(images[0].config),
        "arm64_config": sha256_digest(images[1].config),
    }


# --- tests -------------------------------------------------------------------------------------------


def test_pull_index_by_tag_and_digest_then_run_a_pod(reg: Env, multi: dict[str, str]) -> None:
    inst, client = reg.inst_, reg.inst_.client
    tag_ref, digest_ref = reg.ref("test/busybox:multi"), reg.ref(f"test/busybox@{multi['index']}")
    used_before = client.image_fs_info().image_filesystems[0].used_bytes.value

    with pytest.raises(FailedPrecondition, match="requires credentials"):
        client.pull_image(tag_ref)  # no AuthConfig, and the daemon config has none for this host
    image_id = client.pull_image(tag_ref, AUTH)
    assert image_id == multi["amd64_config"]  # the amd64 entry of the index, not arm64
    status = client.image_status(tag_ref).image
    assert status.id == image_id and status.repo_tags == [tag_ref]
    # Found by the index digest it can be pulled by, and by its platform manifest's digest.
    assert set(status.repo_digests) == {
        reg.ref(f"test/busybox@{multi['index']}"),
        reg.ref(f"test/busybox@{multi['amd64']}"),
    }
    used_after = client.image_fs_info().image_filesystems[0].used_bytes.value
    assert used_after - used_before > 1_000_000  # ImageFsInfo sees the unpacked busybox layer

    # By digest, through the CLI: the layer is stored, so nothing is downloaded again.
    gets = len(reg.secure.blob_gets())
    cli = [sys.executable, "-m", "podhost.cli.main", "--root", str(inst.root), "cri", "pull"]
    out = subprocess.run([*cli, "--creds", f"{USER}:{PASSWORD}", digest_ref], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Image is up to date for {image_id}"
    assert len(reg.secure.blob_gets()) - gets <= 1  # at most the config, never a layer
    assert client.image_status(digest_ref).image.id == image_id

    pod = inst.pod_config("pulled")
    pod_id = client.run_pod_sandbox(pod)
    cid = inst.run_container(pod_id, pod, "app", SLEEP, image=digest_ref)
    assert inst.exec(cid, "cat", "/etc/arch")[1] == "amd64\n"
    assert inst.exec(cid, "sh", "-c", "echo $((6*7))")[1] == "42\n"
    with pytest.raises(FailedPrecondition, match="in use"):
        client.remove_image(image_id)


def test_zstd_layers_pull_and_run(reg: Env) -> None:
    """OCI tar+zstd layers (containerd pulls them): a zstd busybox layer under a gzip one, run in a pod."""
    extra = layer([build.Entry("etc/zstd-was-here", tarfile.REGTYPE, 0o644, data=b"yes\n")])
    tars = [busybox_for("amd64"), extra]
    img = image(tars)
    img.layers = [zstandard.ZstdCompressor(level=3).compress(tars[0]), push.gzip_layer(tars[1])]
    assert json.loads(img.manifest())["layers"][0]["mediaType"] == push.ZSTD_LAYER
    with reg.pusher() as c:
        push.push_image(c, "test/zstd", "v1", img)
    inst, client = reg.inst_, reg.inst_.client
    image_id = client.pull_image(reg.ref("test/zstd:v1"), AUTH)
    assert image_id == sha256_digest(img.config)
    pod = inst.pod_config("zstd")
    pod_id = client.run_pod_sandbox(pod)
    cid = inst.run_container(pod_id, pod, "app", SLEEP, image=reg.ref("test/zstd:v1"))
    assert inst.exec(cid, "cat", "/etc/zstd-was-here")[1] == "yes\n"
    assert inst.exec(cid, "cat", "/etc/arch")[1] == "amd64\n"


def test_tampered_blob_fails_the_pull_and_leaves_nothing(reg: Env) -> None:
    tar = random_layer("data.bin", 300_000)
    img = image([busybox_for("amd64"), tar])
    with reg.pusher() as c:
        push.push_image(c, "test/tampered", "v1", img)
    blob = reg.secure.blob_path(sha256_digest(img.layers[1]))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    layers_before = reg.layer_dirs()

    with pytest.raises(InvalidArgument) as err:
        reg.inst_.client.pull_image(reg.ref("test/tampered:v1"), AUTH)
    assert sha256_digest(img.layers[1]) in str(err.value)
    assert "failed verification" in str(err.value) or "digest mismatch" in str(err.value)
    assert not reg.inst_.client.image_status(reg.ref("test/tampered:v1")).HasField("image")
    assert reg.work_files() == []
    assert reg.layer_dirs() == layers_before  # not even the intact busybox layer was committed


@pytest.mark.parametrize(
    "case",
    ["dotdot", "symlink-then-write", "hardlink-outside", "hardlink-dotdot", "device", "absolute-symlink"],
)
def test_hostile_layer_is_refused_or_contained(reg: Env, case: str) -> None:
    out = str(reg.outside)
    E = build.Entry
    entries = {
        "dotdot": [E(f"../../../../../..{out}/pwned", tarfile.REGTYPE, 0o644, data=b"x")],
        "symlink-then-write": [
            E("escape", tarfile.SYMTYPE, 0o777, linkname=out),
            E("escape/pwned", tarfile.REGTYPE, 0o644, data=b"x"),
        ],
        "hardlink-outside": [E("passwd", tarfile.LNKTYPE, 0o644, linkname="/etc/passwd")],
        "hardlink-dotdot": [E("passwd", tarfile.LNKTYPE, 0o644, linkname="../../../../etc/passwd")],
        "device": [E("dev/mem", tarfile.CHRTYPE, 0o600)],
        "absolute-symlink": [E("escape", tarfile.SYMTYPE, 0o777, linkname=out)],
    }[case]
    tar = layer(entries)
    if case == "device":  # tar_entries has no device numbers: patch them in
        info = tarfile.TarInfo("dev/mem")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 1
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.addfile(info)
        tar = buf.getvalue()
    ref = reg.ref(f"test/hostile:{case}")
    with reg.pusher() as c:
        push.push_image(c, "test/hostile", case, image([tar]))
    layers_before = reg.layer_dirs()
    if case == "absolute-symlink":
        # Legitimate in an image (it resolves inside the container): stored as a symlink, never followed.
        image_id = reg.inst_.client.pull_image(ref, AUTH)
        store = reg.store_dir / "layers" / sha256_digest(tar).removeprefix("sha256:")
        assert os.readlink(store / "escape") == out
        reg.inst_.client.remove_image(image_id)
    else:
        with pytest.raises(InvalidArgument, match="layer entry"):
            reg.inst_.client.pull_image(ref, AUTH)
        assert not reg.inst_.client.image_status(ref).HasField("image")
        assert reg.layer_dirs() == layers_before
    assert os.listdir(reg.outside) == []
    assert reg.work_files() == []


def test_kill_the_daemon_mid_pull_then_pull_again(reg: Env) -> None:
    img = image([busybox_for("amd64"), random_layer("big.bin", 3_000_000)])
    with reg.pusher() as c:
        push.push_image(c, "test/slow", "v1", img)
    assert reg.proxy is not None
    ref = f"127.0.0.1:{reg.proxy_port}/test/slow:v1"  # credentials and CA from the daemon config
    reg.proxy.rate, reg.proxy.relayed = 400_000, 0
    inst = reg.inst_
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            inst.client.pull_image(ref)
        except PodhostError as e:
            errors.append(e)

    t = threading.Thread(target=pull)
    t.start()
    try:
        wait_for(
            "the pull half-way, its work files on disk",
            lambda: reg.proxy is not None and reg.proxy.relayed > 600_000 and reg.work_files(),
            10,
        )
        inst.kill()  # SIGKILL mid-download: the work dir stays behind until the next start
        t.join(10)
        assert errors and not t.is_alive()
        assert reg.work_files() != []
    finally:
        reg.proxy.rate = 0
        t.join(10)
    inst.start()  # the store's startup sweep removes the half-made pull
    assert reg.work_files() == []
    assert not inst.client.image_status(ref).HasField("image")
    with ImageStore(reg.store_dir) as store:  # every image the index names has all its layers
        for i in store.list():
            assert store.layer_dirs(i)
    image_id = inst.client.pull_image(ref)
    assert image_id == sha256_digest(img.config)


def test_two_pulls_at_once_download_each_layer_once(reg: Env) -> None:
    img = image([random_layer("a.bin", 400_000), random_layer("b.bin", 400_000)])
    with reg.pusher() as c:
        push.push_image(c, "test/twice", "v1", img)
    ref = reg.ref("test/twice:v1")
    before = reg.secure.blob_gets()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(reg.inst_.client.pull_image(ref, AUTH)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [sha256_digest(img.config)] * 2
    gets = reg.secure.blob_gets()[len(before) :]
    for blob in img.layers:
        assert gets.count(("test/twice", sha256_digest(blob))) == 1, gets


def test_bearer_token_mirror_after_a_dead_one(reg: Env) -> None:
    """A Docker schema 2 manifest list, from the second mirror (plain HTTP, Bearer token auth)."""
    images = [
        image([random_layer("m.bin", 50_000)], Platform("linux", arch), ["true"])
        for arch in ("arm64", "amd64")
    ]
    for i in images:
        i.docker = True
    img = images[1]
    plain = RegistryClient(Endpoint(reg.plain.host, "http", insecure=True), None)
    with plain:
        push.push_index(plain, "test/mirrored", "v1", images, docker=True)
    ref = f"127.0.0.1:{reg.nowhere}/test/mirrored:v1"  # no registry there: only its mirrors serve it
    assert reg.front is not None
    image_id = reg.inst_.client.pull_image(ref)
    assert image_id == sha256_digest(img.config)
    assert reg.inst_.client.image_status(ref).image.repo_tags == [ref]
    assert reg.front.token_requests  # the client went through the Bearer challenge
    assert reg.front.token_requests[0]["scope"] == ["repository:test/mirrored:pull"]
    assert reg.front.token_requests[0]["service"] == ["podhost-test"]


def test_prune_keeps_images_in_use_and_pinned(reg: Env, multi: dict[str, str]) -> None:
    inst, client = reg.inst_, reg.inst_.client
    unused = image([random_layer("u.bin", 10_000)])
    with reg.pusher() as c:
        push.push_image(c, "test/unused", "v1", unused)
    unused_id = client.pull_image(reg.ref("test/unused:v1"), AUTH)
    busy_id = client.pull_image(reg.ref("test/busybox:multi"), AUTH)
    pod = inst.pod_config("user")
    pod_id = client.run_pod_sandbox(pod)
    inst.run_container(pod_id, pod, "app", SLEEP, image=busy_id)

    cli = [sys.executable, "-m", "podhost.cli.main", "--root", str(inst.root), "cri", "rmi", "--prune"]
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"Deleted: {reg.ref('test/unused:v1')}" in out.stdout
    ids = {i.id for i in client.list_images()}
    assert unused_id not in ids and busy_id in ids
    assert any(i.pinned for i in client.list_images())  # the pause image stays


def test_gc_by_disk_usage_thresholds() -> None:
    """On a real 48 MiB tmpfs: above `high` %, unused images go (oldest first) until below `low` %."""
    base = Path(f"/tmp/ph-reg-gc-{secrets.token_hex(4)}")
    fs = base / "fs"
    fs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(fs)], check=True)
    store = None
    try:
        store = ImageStore(fs / "images")
        ids = []
        for n in range(4):
            tar = random_layer(f"f{n}.bin", 8 << 20)
            cfg = build.config_json([sha256_digest(tar)], cmd=["sh"])
            ids.append(
                store.add_image(build.manifest_json(cfg, [tar]), cfg, [tar], [f"localhost/gc/{n}:v1"]).id
            )
            time.sleep(0.01)  # distinct created_at: the order GC removes them in
        store.set_pinned(ids[1], True)
        in_use = {ids[0]}
        gc = ImageGC(store, lambda: in_use, high_percent=55, low_percent=52, min_age=0)
        assert gc.usage().percent > 60
        assert gc.collect() == [ids[2]]  # 0 in use, 1 pinned; 2 is the oldest that may go, and enough
        assert gc.usage().percent <= 52
        assert gc.collect() == []  # below the high threshold now
        assert gc.prune() == [ids[3]]
        assert {i.id for i in store.list()} == {ids[0], ids[1]}
    finally:
        if store is not None:
            store.close()
        subprocess.run(["umount", str(fs)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)
