"""The registry client's pure parts: manifests and platforms, endpoints, credentials, challenges, GC choice."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest

from bench import push
from podhost.cli.cri import pull_auth, pull_progress_line, unused_images
from podhost.config import Config, RegistryConfig
from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.errors import InvalidArgument
from podhost.runtime.image import reference
from podhost.runtime.image.gc import candidates
from podhost.runtime.image.registry import auth, hosts, manifest
from podhost.runtime.image.registry.manifest import Platform
from podhost.runtime.image.registry.puller import _KeyedLocks, config_diff_ids, pull_names
from podhost.runtime.model import Image

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def _index(*platforms: Platform) -> bytes:
    return push.index_json([(json.dumps({"n": i}).encode(), p) for i, p in enumerate(platforms)])


# --- manifests -------------------------------------------------------------------------------------


def test_index_resolves_to_this_platform_with_arm64_variant_equivalence() -> None:
    data = _index(Platform("linux", "arm64", "v8"), Platform("linux", "amd64"), Platform("windows", "amd64"))
    index = manifest.parse(data, "", "idx")
    assert isinstance(index, manifest.Index) and len(index.manifests) == 3
    assert manifest.choose(index, Platform("linux", "amd64"), "idx") is index.manifests[1]
    assert manifest.choose(index, Platform("linux", "arm64", "v8"), "idx") is index.manifests[0]
    bare = manifest.parse(_index(Platform("linux", "arm64")), "", "idx")
    assert isinstance(bare, manifest.Index)
    assert manifest.choose(bare, Platform("linux", "arm64", "v8"), "idx") is bare.manifests[0]
    with pytest.raises(InvalidArgument, match=r"no manifest for linux/s390x .*linux/arm64/v8, linux/amd64"):
        manifest.choose(index, Platform("linux", "s390x"), "idx")
    with pytest.raises(InvalidArgument):
        manifest.choose(index, Platform("linux", "arm", "v6"), "idx")


def test_manifest_kinds_and_refusals() -> None:
    img = push.PushImage(b"{}", [b"\x1f\x8b rest", b"plain tar"], docker=True)
    doc = manifest.parse(img.manifest(), "", "m")
    assert isinstance(doc, manifest.Manifest) and doc.media_type == manifest.DOCKER_MANIFEST
    assert [d.media_type.rsplit(".", 2)[-1] for d in doc.layers] == ["gzip", "tar"]
    # media type from Content-Type when the document has none
    bare = json.dumps({"schemaVersion": 2, "config": json.loads(img.manifest())["config"], "layers": []})
    assert (
        manifest.media_type_of(bare.encode(), manifest.OCI_MANIFEST + "; charset=utf-8")
        == manifest.OCI_MANIFEST
    )
    with pytest.raises(InvalidArgument, match="schema 1"):
        manifest.parse(json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "", "m")
    zstd = json.loads(img.manifest())
    zstd["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    parsed = manifest.parse(json.dumps(zstd).encode(), "", "m")
    assert isinstance(parsed, manifest.Manifest)
    manifest.check_supported(parsed, "m")  # zstd layers are pulled, as containerd does
    bzip2 = json.loads(img.manifest())
    bzip2["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+bzip2"
    with pytest.raises(InvalidArgument, match="unsupported layer media type"):
        manifest.check_supported(manifest.parse(json.dumps(bzip2).encode(), "", "m"), "m")  # type: ignore[arg-type]
    artifact = json.loads(img.manifest())
    artifact["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(InvalidArgument, match="not a container image"):
        manifest.parse(json.dumps(artifact).encode(), "", "m")
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        manifest.verify(b"x", D1, "blob")


# --- endpoints -------------------------------------------------------------------------------------


def test_endpoints_mirrors_first_each_with_its_own_settings() -> None:
    regs = {
        "docker.io": RegistryConfig(
            mirrors=["http://10.0.0.1:5000", "mirror.local"], ca_file=Path("/hub.pem")
        ),
        "10.0.0.1:5000": RegistryConfig(insecure=True),
        "mirror.local": RegistryConfig(ca_file=Path("/m.pem")),
    }
    eps = hosts.endpoints("docker.io", regs)
    assert [str(e) for e in eps] == [
        "http://10.0.0.1:5000",
        "https://mirror.local",
        "https://registry-1.docker.io",
    ]
    assert eps[0].insecure and eps[0].mirror and eps[1].ca_file == Path("/m.pem")
    assert eps[2].ca_file == Path("/hub.pem") and not eps[2].mirror
    assert [str(e) for e in hosts.endpoints("127.0.0.1:5100", {})] == ["https://127.0.0.1:5100"]
    with pytest.raises(InvalidArgument, match="insecure = true"):
        hosts.endpoints("quay.io", {"quay.io": RegistryConfig(mirrors=["http://plain:80"])})
    with pytest.raises(InvalidArgument, match="want host"):
        hosts.parse_endpoint("https://a/b/c", {}, mirror=True)


def test_config_registries_tables(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[registries."registry.k8s.io"]\nmirrors = ["127.0.0.1:5100"]\n'
        '[registries."127.0.0.1:5100"]\ninsecure = true\nca_file = "/ca.pem"\n'
        "image_gc_high_threshold_percent = 90\n"
    )
    with pytest.raises(InvalidArgument, match="unknown setting"):
        Config.load(root=tmp_path, config_file=toml)  # the gc key landed in the table above it
    toml.write_text(
        "image_gc_high_threshold_percent = 90\nmax_concurrent_downloads = 5\n"
        '[registries."registry.k8s.io"]\nmirrors = ["127.0.0.1:5100"]\n'
        '[registries."127.0.0.1:5100"]\ninsecure = true\nca_file = "/ca.pem"\n'
    )
    cfg = Config.load(root=tmp_path, config_file=toml)
    assert cfg.registries["127.0.0.1:5100"] == RegistryConfig(insecure=True, ca_file=Path("/ca.pem"))
    assert cfg.registries["registry.k8s.io"].mirrors == ["127.0.0.1:5100"]
    assert cfg.image_gc_high_threshold_percent == 90 and cfg.max_concurrent_downloads == 5
    toml.write_text("image_gc_low_threshold_percent = 95\n")
    with pytest.raises(InvalidArgument, match="threshold"):
        Config.load(root=tmp_path, config_file=toml)
    toml.write_text('[registries."x"]\nmirrors = "one"\n')
    with pytest.raises(InvalidArgument, match="mirrors"):
        Config.load(root=tmp_path, config_file=toml)


# --- credentials and challenges --------------------------------------------------------------------


def test_credentials_precedence_cri_then_config_then_docker_config(tmp_path: Path) -> None:
    b64 = base64.b64encode(b"hub:hubpw").decode()
    docker_cfg = tmp_path / "config.json"
    docker_cfg.write_text(
        json.dumps({"auths": {auth.DOCKER_HUB_LEGACY_KEY: {"auth": b64}, "https://q.io": {"auth": b64}}})
    )
    regs = {"r.io": RegistryConfig(username="cfg", password="cfgpw")}
    cri = auth.AuthConfig(username="cri", password="cripw")
    assert auth.credentials_for("r.io", cri, regs, docker_cfg) == auth.Credentials("cri", "cripw")
    assert auth.credentials_for("r.io", None, regs, docker_cfg) == auth.Credentials("cfg", "cfgpw")
    assert auth.credentials_for("registry-1.docker.io", None, {}, docker_cfg) == auth.Credentials(
        "hub", "hubpw"
    )
    assert auth.credentials_for("q.io", None, {}, docker_cfg) == auth.Credentials("hub", "hubpw")
    assert auth.credentials_for("other.io", None, {}, docker_cfg) is None
    # CRI credentials for another server are not sent here.
    other = auth.AuthConfig(username="x", password="y", server_address="https://elsewhere.io/v1/")
    assert auth.credentials_for("r.io", other, regs, docker_cfg) == auth.Credentials("cfg", "cfgpw")
    by_auth = auth.AuthConfig(auth=base64.b64encode(b"u:p:with:colons").decode(), server_address="r.io")
    assert auth.from_cri(by_auth, "r.io") == auth.Credentials("u", "p:with:colons")
    with pytest.raises(InvalidArgument, match="base64"):
        auth.from_cri(auth.AuthConfig(auth="!!"), "r.io")
    assert "pw" not in repr(auth.Credentials("u", "pw"))


def test_parse_challenges() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:library/busybox:pull,push", Basic realm="a \\"quoted\\" realm"'
    )
    bearer, basic = auth.parse_challenges(header)
    assert bearer.scheme == "bearer" and bearer.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:library/busybox:pull,push",
    }
    assert basic.scheme == "basic" and basic.params == {"realm": 'a "quoted" realm'}
    assert auth.parse_challenges("Basic") == [auth.Challenge("basic", {})]
    fields = auth.token_request_params(bearer, ["repository:x:pull"], auth.Credentials(identity_token="rt"))
    assert fields["scope"] == ["repository:library/busybox:pull,push", "repository:x:pull"]
    assert fields["grant_type"] == "refresh_token" and fields["refresh_token"] == "rt"
    assert auth.token_from_response(b'{"access_token":"t","expires_in":30}', "r") == ("t", 30)
    with pytest.raises(InvalidArgument, match="without a token"):
        auth.token_from_response(b"{}", "r")


def test_cri_auth_config_conversion() -> None:
    assert convert.auth_config(pb.PullImageRequest(image=pb.ImageSpec(image="x"))) is None
    req = pb.PullImageRequest(auth=pb.AuthConfig(username="u", password="p", server_address="r.io"))
    assert convert.auth_config(req) == auth.AuthConfig(username="u", password="p", server_address="r.io")


# --- puller and gc choices -------------------------------------------------------------------------


def test_pull_names_and_diff_ids() -> None:
    assert pull_names(reference.parse("busybox")) == ["docker.io/library/busybox:latest"]
    assert pull_names(reference.parse(f"r.io/a:t@{D1}")) == [f"r.io/a@{D1}"]
    assert config_diff_ids(json.dumps({"rootfs": {"diff_ids": [D1]}}).encode(), "c") == [D1]
    with pytest.raises(InvalidArgument, match="diff_ids"):
        config_diff_ids(b"{}", "c")


def test_keyed_locks_in_any_order_never_deadlock() -> None:
    locks = _KeyedLocks()
    done = []

    def worker(keys: list[str]) -> None:
        for _ in range(200):
            with locks.hold(keys):
                pass
        done.append(keys)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (["a", "b"], ["b", "a"], ["b"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(done) == 3 and locks._locks == {}


def test_gc_candidates_oldest_first_skipping_pinned_in_use_and_young() -> None:
    now = 1_000 * 10**9
    images = [
        Image(id=D1, created_at=now - 500 * 10**9),
        Image(id=D2, created_at=now - 900 * 10**9),
        Image(id=D3, created_at=now - 10 * 10**9),
        Image(id="sha256:" + "4" * 64, created_at=0, pinned=True),
        Image(id="sha256:" + "5" * 64, created_at=0),
    ]
    assert [i.id for i in candidates(images, {"sha256:" + "5" * 64}, now, 120)] == [D2, D1]
    assert [i.id for i in candidates(images, set(), now, 0)][-1] == D3


# --- cli -------------------------------------------------------------------------------------------


def test_cli_pull_auth_progress_and_prune_choice() -> None:
    assert pull_auth("u:p:q", None) == pb.AuthConfig(username="u", password="p:q")
    assert pull_auth(None, "dTpw") == pb.AuthConfig(auth="dTpw")
    assert pull_auth(None, None) is None
    with pytest.raises(InvalidArgument):
        pull_auth("u:p", "dTpw")
    line = pull_progress_line("busybox", 3.25, 12_400_000, 1)
    assert line.startswith("Pulling busybox / ") and "3.2s" in line and "+12.4MB" in line
    images = [
        pb.Image(id=D1, repo_tags=["a:1"]),
        pb.Image(id=D2, repo_tags=["b:1"], pinned=True),
        pb.Image(id=D3, repo_digests=["c@" + D1]),
        pb.Image(id="sha256:" + "4" * 64),
    ]
    containers = [pb.Container(image_ref="a:1"), pb.Container(image_id=D3)]
    assert [i.id for i in unused_images(images, containers)] == ["sha256:" + "4" * 64]
