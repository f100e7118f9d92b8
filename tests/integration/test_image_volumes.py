"""Image volumes (CRI `Mount.image`, Kubernetes `volumes[].image`) in real pods: the image's files at the
container path, read-only but executable, `image_sub_path` showing only that directory (symlinks resolved
inside the image), ContainerStatus reporting the image, bad combinations refused as INVALID_ARGUMENT with
the field named and nothing left behind, and no mount left after RemoveContainer."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator

import pytest

from podhost.cri import api_pb2 as pb
from podhost.errors import FailedPrecondition, InvalidArgument, PodhostError
from podhost.runtime.image import build
from podhost.runtime.image.archive import sha256_digest
from podhost.runtime.image.store import ImageStore
from podhost.runtime.stages import KILL_AT_ENV
from tests.instance import BUSYBOX, Instance
from tests.leaks import mounts_under

pytestmark = pytest.mark.root

TREE = "localhost/podhost/image-volume-tree:latest"
PATH = "/mnt/image-volume"


@pytest.fixture(scope="module")
def tree_image(session_instance: Instance) -> Iterator[str]:
    """A two-layer image with a known tree: the upper layer adds data/c.txt and whites out data/gone.txt;
    `abs` and `escape` are symlinks (one absolute, one climbing out of the image)."""
    lower = build.tar_entries(
        [
            build.Entry("data", tarfile.DIRTYPE),
            build.Entry("data/sub", tarfile.DIRTYPE),
            build.Entry("data/a.txt", tarfile.REGTYPE, 0o644, data=b"a\n"),
            build.Entry("data/gone.txt", tarfile.REGTYPE, 0o644, data=b"gone\n"),
            build.Entry("data/sub/b.txt", tarfile.REGTYPE, 0o644, data=b"b\n"),
            build.Entry("file.txt", tarfile.REGTYPE, 0o644, data=b"f\n"),
            build.Entry("abs", tarfile.SYMTYPE, 0o777, linkname="/data/sub"),
            build.Entry("escape", tarfile.SYMTYPE, 0o777, linkname="../../../../.."),
        ]
    )
    upper = build.tar_entries(
        [
            build.Entry("data", tarfile.DIRTYPE),
            build.Entry("data/c.txt", tarfile.REGTYPE, 0o644, data=b"c\n"),
            build.Entry("data/.wh.gone.txt", tarfile.REGTYPE, 0o644),
        ]
    )
    layers = [lower, upper]
    cfg = build.config_json([sha256_digest(layer) for layer in layers], cmd=["sh"])
    with ImageStore(session_instance.config.image_dir) as store:
        store.add_image(build.manifest_json(cfg, layers), cfg, layers, [TREE])
    yield TREE
    session_instance.client.remove_image(TREE)


def image_mount(image: str, path: str = PATH, sub_path: str = "", readonly: bool = True) -> pb.Mount:
    return pb.Mount(
        container_path=path, readonly=readonly, image=pb.ImageSpec(image=image), image_sub_path=sub_path
    )


def create(podhost: Instance, name: str, mounts: list[pb.Mount]) -> tuple[str, str]:
    """A pod and, in it, a created container with `mounts`; (pod id, container id)."""
    pod = podhost.pod_config(name)
    pod_id = podhost.client.run_pod_sandbox(pod)
    cfg = podhost.container_config("c", ["sleep", "600"])
    cfg.mounts.extend(mounts)
    return pod_id, podhost.client.create_container(pod_id, cfg, pod)


def container_mounts(podhost: Instance) -> list[str]:
    return mounts_under(podhost.config.run_dir / "containers")


def test_image_volume_is_the_image_read_only(podhost: Instance) -> None:
    pod_id, cid = create(podhost, "iv-ro", [image_mount(BUSYBOX)])
    podhost.client.start_container(cid)

    code, out, _ = podhost.exec(cid, "ls", "-A", f"{PATH}/bin/sh")
    assert code == 0, out
    code, out, _ = podhost.exec(cid, f"{PATH}/bin/ls", f"{PATH}/etc")  # executable: not noexec
    assert (code, out.split()) == (0, ["group", "passwd"])
    code, _, err = podhost.exec(cid, "touch", f"{PATH}/x")
    assert code != 0 and "Read-only file system" in err
    code, out, _ = podhost.exec(cid, "grep", f" {PATH} ", "/proc/self/mounts")
    assert code == 0 and " ro," in out, out

    status = podhost.client.container_status(cid).status
    (mount,) = [m for m in status.mounts if m.container_path == PATH]
    image_id = podhost.client.image_status(BUSYBOX).image.id
    assert (mount.image.image, mount.image.image_ref, mount.readonly) == (BUSYBOX, image_id, True)

    assert len(container_mounts(podhost)) == 1  # the image volume (the rootfs left once runc pivoted)
    podhost.client.stop_container(cid, 0)
    podhost.client.remove_container(cid)
    assert container_mounts(podhost) == []
    podhost.client.stop_pod_sandbox(pod_id)
    podhost.client.remove_pod_sandbox(pod_id)


def test_sub_path_shows_only_that_directory(podhost: Instance, tree_image: str) -> None:
    mounts = [
        image_mount(tree_image, "/v/whole"),
        image_mount(tree_image, "/v/data", "data"),
        image_mount(tree_image, "/v/sub", "./data//sub/"),
        image_mount(tree_image, "/v/abs", "abs"),  # /data/sub, inside the image
        image_mount(tree_image, "/v/escape", "escape"),  # `..` stops at the image's root
    ]
    _, cid = create(podhost, "iv-sub", mounts)
    podhost.client.start_container(cid)

    def ls(path: str) -> list[str]:
        code, out, err = podhost.exec(cid, "ls", "-A", path)
        assert code == 0, err
        return sorted(out.split())

    assert ls("/v/whole") == ["abs", "data", "escape", "file.txt"]
    assert ls("/v/data") == ["a.txt", "c.txt", "sub"]  # both layers, the whiteout applied
    assert ls("/v/sub") == ["b.txt"]
    assert ls("/v/abs") == ["b.txt"]
    assert ls("/v/escape") == ["abs", "data", "escape", "file.txt"]
    code, _, err = podhost.exec(cid, "touch", "/v/data/new")
    assert code != 0 and "Read-only file system" in err

    status = podhost.client.container_status(cid).status
    tree_id = podhost.client.image_status(tree_image).image.id
    reported = {m.container_path: (m.image.image_ref, m.image_sub_path) for m in status.mounts}
    assert reported["/v/data"] == (tree_id, "data")
    assert reported["/v/whole"] == (tree_id, "")
    with pytest.raises(FailedPrecondition, match="in use"):  # an image volume keeps its image from rmi
        podhost.client.remove_image(tree_image)


BAD = [
    ("unknown image", image_mount("localhost/podhost/no-such-image:latest"), "mounts[0].image"),
    ("'..' in sub_path", image_mount(BUSYBOX, sub_path="etc/../.."), "mounts[0].image_sub_path"),
    ("absolute sub_path", image_mount(BUSYBOX, sub_path="/etc"), "mounts[0].image_sub_path"),
    ("missing sub_path", image_mount(BUSYBOX, sub_path="no/such/dir"), "mounts[0].image_sub_path"),
    ("file sub_path", image_mount(BUSYBOX, sub_path="etc/passwd"), "mounts[0].image_sub_path"),
    ("read-write", image_mount(BUSYBOX, readonly=False), "mounts[0].readonly"),
    (
        "host_path too",
        pb.Mount(container_path=PATH, host_path="/tmp", readonly=True, image=pb.ImageSpec(image=BUSYBOX)),
        "mounts[0].host_path",
    ),
]


def test_bad_image_volumes_are_refused_and_leave_nothing(podhost: Instance) -> None:
    pod = podhost.pod_config("iv-bad")
    pod_id = podhost.client.run_pod_sandbox(pod)
    for what, mount, field in BAD:
        cfg = podhost.container_config("c", ["sleep", "600"])
        cfg.mounts.append(mount)
        with pytest.raises(InvalidArgument, match=re.escape(field)):  # the client's INVALID_ARGUMENT
            podhost.client.create_container(pod_id, cfg, pod)
        assert podhost.client.list_containers() == [], what
        assert container_mounts(podhost) == [], what
        containers = podhost.config.run_dir / "containers"
        assert not containers.is_dir() or list(containers.iterdir()) == [], what
    # The name was released each time: a good config with the same name is created.
    cfg = podhost.container_config("c", ["sleep", "600"])
    cfg.mounts.append(image_mount(BUSYBOX, sub_path="etc"))
    cid = podhost.client.create_container(pod_id, cfg, pod)
    podhost.client.start_container(cid)
    code, out, _ = podhost.exec(cid, "ls", PATH)
    assert (code, out.split()) == (0, ["group", "passwd"])


def test_a_daemon_killed_with_an_image_volume_mounted_leaves_nothing(podhost: Instance) -> None:
    """SIGKILL at the create stage "spec" (both image volumes mounted, the runtime not yet called): the
    restarted daemon's recovery unmounts them with the rest of the half-made container."""
    podhost.stop()
    podhost.start(env={KILL_AT_ENV: "CreateContainer:spec"})
    pod = podhost.pod_config("iv-crash")
    pod_id = podhost.client.run_pod_sandbox(pod)
    cfg = podhost.container_config("c", ["sleep", "600"])
    cfg.mounts.extend([image_mount(BUSYBOX, "/a"), image_mount(BUSYBOX, "/b", "etc")])
    with pytest.raises(PodhostError):
        podhost.client.create_container(pod_id, cfg, pod)
    assert podhost.wait_exited(10) == -9, podhost.log_tail()
    assert len(container_mounts(podhost)) == 3  # what the killed daemon left: the rootfs and two volumes
    podhost.start()
    assert container_mounts(podhost) == [], podhost.log_tail()
    cid = podhost.client.create_container(pod_id, cfg, pod)  # the name was not kept by the dead attempt
    podhost.client.start_container(cid)
    code, out, _ = podhost.exec(cid, "ls", "/b")
    assert (code, out.split()) == (0, ["group", "passwd"])
