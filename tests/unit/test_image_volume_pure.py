"""The pure parts of image volumes (CRI `Mount.image`): validation naming each field, the CRI conversion
both ways, the lower-only overlay options, `image_sub_path` resolved inside the image's root, and the pod
manager's `volumes[].image` in a manifest turned into CRI mounts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from podhost.cri import api_pb2 as pb
from podhost.cri import convert
from podhost.errors import InvalidArgument
from podhost.kubelet.manifest import ManifestError, parse_pod
from podhost.kubelet.podspec import container_mounts
from podhost.runtime import model
from podhost.runtime.image.rootfs import lower_only_options, resolve_in_root
from podhost.runtime.model import ContainerConfig, ContainerMetadata, Mount, PodSandboxConfig
from podhost.runtime.validation import validate_container_config

IMAGE = "docker.io/library/busybox:1.36"


def ctr(*mounts: Mount) -> ContainerConfig:
    return ContainerConfig(metadata=ContainerMetadata(name="c"), image=IMAGE, mounts=list(mounts))


def volume(**kw: object) -> Mount:
    fields: dict[str, object] = {"container_path": "/mnt/v", "readonly": True, "image": IMAGE}
    fields.update(kw)
    return Mount(**fields)  # type: ignore[arg-type]


def test_image_volumes_pass_validation() -> None:
    validate_container_config(ctr(volume(), volume(image_sub_path="etc/ssl")), PodSandboxConfig())
    validate_container_config(ctr(volume(image_sub_path="./a//b/")), PodSandboxConfig())


ROWS: list[tuple[str, Callable[[], Mount], str]] = [
    ("'..' in sub_path", lambda: volume(image_sub_path="etc/../.."), "mounts[0].image_sub_path"),
    ("'..' alone", lambda: volume(image_sub_path=".."), "mounts[0].image_sub_path"),
    ("absolute sub_path", lambda: volume(image_sub_path="/etc"), "mounts[0].image_sub_path"),
    ("control char in sub_path", lambda: volume(image_sub_path="a\nb"), "mounts[0].image_sub_path"),
    ("sub_path without image", lambda: volume(image="", image_sub_path="etc"), "mounts[0].image_sub_path"),
    ("read-write", lambda: volume(readonly=False), "mounts[0].readonly"),
    ("host_path and image", lambda: volume(host_path="/srv"), "mounts[0].host_path"),
    ("space in the image", lambda: volume(image="a b"), "mounts[0].image.image"),
]


@pytest.mark.parametrize(("rule", "make", "field"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_image_volumes_name_the_field(rule: str, make: Callable[[], Mount], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_container_config(ctr(make()), PodSandboxConfig())
    assert field in str(err.value), str(err.value)


def test_a_mount_without_an_image_still_needs_a_host_path() -> None:
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]\.host_path"):
        validate_container_config(ctr(Mount(container_path="/mnt/v")), PodSandboxConfig())


def test_conversion_both_ways() -> None:
    m = convert.mount(
        pb.Mount(container_path="/v", readonly=True, image=pb.ImageSpec(image=IMAGE), image_sub_path="etc")
    )
    assert (m.image, m.image_sub_path, m.host_path, m.image_ref) == (IMAGE, "etc", "", "")
    assert convert.mount(pb.Mount(container_path="/v", host_path="/srv")).image == ""

    m.image_ref, m.host_path = "sha256:" + "ab" * 32, "/run/podhost/containers/x/image-volumes/0/etc"
    back = convert.pb_mount(m)
    assert (back.image.image, back.image.image_ref, back.image_sub_path) == (IMAGE, m.image_ref, "etc")
    assert not convert.pb_mount(model.Mount("/v", "/srv")).HasField("image")


def test_a_record_with_image_volumes_round_trips() -> None:
    config = ctr(volume(image_ref="sha256:" + "cd" * 32, image_sub_path="etc"))
    assert model.from_dict(ContainerConfig, model.to_dict(config)) == config


def test_lower_only_options() -> None:
    assert lower_only_options(["/l/2", "/l/1"], index_off=True) == "lowerdir=/l/2:/l/1,index=off"
    assert lower_only_options(["2", "1"], index_off=False) == "lowerdir=2:1"
    with pytest.raises(InvalidArgument, match="at least two"):
        lower_only_options(["/l/1"], index_off=False)
    with pytest.raises(InvalidArgument):
        lower_only_options(["/l/a:b", "/l/1"], index_off=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "file.txt").write_text("f")
    os.symlink("/data/sub", root / "abs")
    os.symlink("../../../..", root / "escape")
    os.symlink("../data", root / "data" / "up")
    os.symlink("loop", root / "loop")
    os.symlink("/etc", root / "hostetc")  # /etc of the image, which has none
    os.symlink("file.txt", root / "tofile")
    return root


@pytest.mark.parametrize(
    ("sub_path", "expected"),
    [
        ("", ""),
        ("data", "data"),
        ("./data//sub/", "data/sub"),
        ("abs", "data/sub"),
        ("escape", ""),
        ("escape/data", "data"),
        ("data/up/sub", "data/sub"),
    ],
)
def test_sub_paths_resolve_inside_the_root(tree: Path, sub_path: str, expected: str) -> None:
    assert resolve_in_root(tree, sub_path, "f") == Path(os.path.join(tree, expected))


@pytest.mark.parametrize(
    ("sub_path", "words"),
    [
        ("missing", "does not exist"),
        ("file.txt", "not a directory"),
        ("tofile", "not a directory"),
        ("file.txt/x", "does not exist"),
        ("hostetc", "does not exist"),  # never the host's /etc
        ("loop", "too many levels"),
    ],
)
def test_bad_sub_paths_are_refused(tree: Path, sub_path: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as err:
        resolve_in_root(tree, sub_path, "ContainerConfig.mounts[3].image_sub_path")
    assert "mounts[3].image_sub_path" in str(err.value)


# --- the pod manager: Kubernetes `volumes[].image` to CRI ------------------------------------------------


def image_pod(mount: dict[str, object], volume: dict[str, object] | None = None) -> dict[str, object]:
    ctr = {"name": "a", "image": "busybox", "volumeMounts": [{"name": "v", "mountPath": "/v", **mount}]}
    vol = volume or {"name": "v", "image": {"reference": IMAGE, "pullPolicy": "IfNotPresent"}}
    spec = {"containers": [ctr], "volumes": [vol]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def test_a_pod_s_image_volume_becomes_a_cri_image_mount() -> None:
    pod = parse_pod(image_pod({"subPath": "etc"}))
    assert (pod.volumes[0].kind, pod.volumes[0].reference) == ("image", IMAGE)
    (mount,) = container_mounts(pod.containers[0], {}, {"v": IMAGE})
    assert (mount.container_path, mount.host_path, mount.readonly) == ("/v", "", True)
    assert (mount.image.image, mount.image_sub_path) == (IMAGE, "etc")
    (plain,) = container_mounts(pod.containers[0], {"v": "/srv"})  # not an image volume: a bind
    assert (plain.host_path, plain.HasField("image")) == ("/srv", False)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (image_pod({}, {"name": "v", "image": {}}), r"spec.volumes\[0\].image.reference: Required value"),
        (
            image_pod({}, {"name": "v", "image": {"reference": IMAGE, "pullPolicy": "Sometimes"}}),
            r"spec.volumes\[0\].image.pullPolicy: unsupported value",
        ),
        (image_pod({"subPath": "../x"}), r"volumeMounts\[0\].subPath: must be a relative path"),
        (image_pod({"subPath": "/etc"}), r"volumeMounts\[0\].subPath: must be a relative path"),
        (
            image_pod({"subPath": "x"}, {"name": "v", "emptyDir": {}}),
            r"volumeMounts\[0\].subPath: not supported on this node for emptyDir volumes",
        ),
    ],
)
def test_bad_image_volumes_in_a_manifest_name_the_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_pod(doc)
