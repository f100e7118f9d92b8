"""Image reference parsing and normalisation, as containerd (distribution/reference) does it."""

from __future__ import annotations

import pytest

from podhost.errors import InvalidArgument
from podhost.runtime.image import reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.28", "docker.io/library/busybox:1.28"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("foo/bar", "docker.io/foo/bar:latest"),
        ("foo/bar/baz:v1", "docker.io/foo/bar/baz:v1"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("docker.io/library/busybox:1.28", "docker.io/library/busybox:1.28"),
        ("localhost/podhost/pause:3.10", "localhost/podhost/pause:3.10"),
        ("localhost/busybox", "localhost/busybox:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("registry:5000/x/y", "registry:5000/x/y:latest"),
        (f"registry:5000/x/y@{DIGEST}", f"registry:5000/x/y@{DIGEST}"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1.28@{DIGEST}", f"docker.io/library/busybox:1.28@{DIGEST}"),
        ("quay.io/a/b-c_d.e__f:tag-1.0_x", "quay.io/a/b-c_d.e__f:tag-1.0_x"),
        ("Registry.Example/x", "Registry.Example/x:latest"),
        ("[::1]:5000/x:y", "[::1]:5000/x:y"),
        ("127.0.0.1:5000/test/busybox:1.28", "127.0.0.1:5000/test/busybox:1.28"),
    ],
)
def test_normalize(ref: str, want: str) -> None:
    assert reference.normalize(ref) == want
    assert reference.normalize(want) == want  # idempotent


@pytest.mark.parametrize(
    "ref",
    [
        "",
        " busybox",
        "busy box",
        "Busybox",
        "docker.io/Library/busybox",
        "busybox:",
        "busybox:-bad",
        "busybox:" + "x" * 129,
        "busybox@sha256:abc",
        "busybox@sha256:" + "AB" * 32,
        "busybox@",
        "/busybox",
        "busybox/",
        "a//b",
        "foo_/bar",
        "-foo/bar",
        "ab" * 32,
        ":latest",
        "x/" + "a" * 300,
    ],
)
def test_invalid(ref: str) -> None:
    with pytest.raises(InvalidArgument):
        reference.parse(ref)
    assert not reference.is_valid(ref)


def test_parse_parts() -> None:
    r = reference.parse(f"registry:5000/x/y:v2@{DIGEST}")
    assert (r.domain, r.path, r.tag, r.digest) == ("registry:5000", "x/y", "v2", DIGEST)
    assert r.repository == "registry:5000/x/y"
    r = reference.parse("busybox")
    assert (r.domain, r.path, r.tag, r.digest) == ("docker.io", "library/busybox", "latest", "")
    r = reference.parse(f"busybox@{DIGEST}")
    assert r.tag == "" and r.digest == DIGEST


def test_repo_digest_and_check_digest() -> None:
    assert reference.repo_digest("busybox:1.28", DIGEST) == f"docker.io/library/busybox@{DIGEST}"
    assert reference.check_digest(DIGEST) == DIGEST
    for bad in ("sha512:" + "a" * 128, "sha256:" + "a" * 63, "sha256:../x", "", "ab"):
        with pytest.raises(InvalidArgument):
            reference.check_digest(bad)
