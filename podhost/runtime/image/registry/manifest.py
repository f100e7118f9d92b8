"""Manifests and indexes as registries serve them: parse, check, and pick this machine's platform.

Formats (OCI image-spec manifest.md and image-index.md; Docker "Image Manifest V2, Schema 2"):

- an image manifest: OCI `application/vnd.oci.image.manifest.v1+json` or Docker
  `application/vnd.docker.distribution.manifest.v2+json`; a config descriptor and layer descriptors;
- an index: OCI `application/vnd.oci.image.index.v1+json` or Docker manifest list
  `application/vnd.docker.distribution.manifest.list.v2+json`; one descriptor per platform.

Docker schema 1 (signed, v1 history) is refused with a clear message, as containerd 2 does. Layers must
be tar, tar+gzip or tar+zstd (what `unpack` reads); foreign (URL-only) layers are refused by name.

Platform choice follows containerd's `platforms.Default()` matching: same os and architecture; the
variant must match where it matters (arm), an absent variant means the architecture's default
(`arm64` = `v8`). This module is pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from podhost.errors import InvalidArgument
from podhost.runtime.image import reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")  # fmt: skip
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: The Accept header of a manifest request: every type we read, indexes first.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
#: Manifests, indexes and configs larger than this are refused before they are read whole.
MAX_DOCUMENT_BYTES = 4 << 20

_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv8l": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def host_platform() -> Platform:
    """This machine's platform as image indexes name it (GOOS/GOARCH/variant)."""
    machine = os.uname().machine
    arch = _GOARCH.get(machine, machine)
    variant = {"armv6l": "v6", "armv7l": "v7", "armv8l": "v7"}.get(machine, _DEFAULT_VARIANT.get(arch, ""))
    return Platform("linux", arch, variant)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str, what: str) -> None:
    """InvalidArgument unless `data` hashes to `digest` (sha256 only, as the store)."""
    reference.check_digest(digest)
    got = sha256_digest(data)
    if got != digest:
        raise InvalidArgument(f"{what}: content does not match its digest (expected {digest}, got {got})")


def _descriptor(d: Any, what: str) -> Descriptor:
    if not isinstance(d, dict):
        raise InvalidArgument(f"{what}: descriptor is not an object")
    digest = d.get("digest")
    size = d.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}: descriptor needs a digest and a size")
    reference.check_digest(digest)
    platform = None
    p = d.get("platform")
    if isinstance(p, dict):
        platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
    urls = d.get("urls") or []
    return Descriptor(
        media_type=str(d.get("mediaType", "")),
        digest=digest,
        size=size,
        platform=platform,
        urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
    )


def media_type_of(data: bytes, content_type: str) -> str:
    """The document's media type: its own `mediaType`, else the HTTP Content-Type, else by shape."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"manifest is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidArgument("manifest is not a JSON object")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    content_type = content_type.split(";")[0].strip()
    if content_type in INDEX_TYPES | MANIFEST_TYPES or content_type in DOCKER_SCHEMA1:
        return content_type
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[0]
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def parse(data: bytes, content_type: str, what: str) -> Index | Manifest:
    """An index or an image manifest from its bytes (already verified against its digest)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"{what}: manifest of {len(data)} bytes is too large")
    media_type = media_type_of(data, content_type)
    doc = json.loads(data)
    if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise InvalidArgument(
            f"{what}: Docker schema 1 manifests are not supported (push the image again with a current tool)"
        )
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidArgument(f"{what}: index has no manifests list")
        return Index(media_type, tuple(_descriptor(d, what) for d in entries))
    if media_type not in MANIFEST_TYPES:
        raise InvalidArgument(f"{what}: unsupported manifest media type {media_type!r}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument(f"{what}: manifest has no layers list")
    manifest = Manifest(
        media_type,
        _descriptor(doc.get("config"), f"{what} config"),
        tuple(_descriptor(d, f"{what} layer") for d in layers),
    )
    check_supported(manifest, what)
    return manifest


def check_supported(manifest: Manifest, what: str) -> None:
    """Refuse, by name, what podhost cannot unpack, before anything is downloaded."""
    if manifest.config.media_type and manifest.config.media_type not in CONFIG_TYPES:
        raise InvalidArgument(
            f"{what}: config media type {manifest.config.media_type!r} is not a container image "
            "(an artifact such as a Helm chart or a signature?)"
        )
    for layer in manifest.layers:
        if "foreign" in layer.media_type or (layer.urls and "nondistributable" in layer.media_type):
            raise InvalidArgument(f"{what}: layer {layer.digest} is a foreign layer (Windows base images)")
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"{what}: unsupported layer media type {layer.media_type!r}")


def _variant_matches(want: Platform, got: Platform) -> bool:
    if want.variant == got.variant:
        return True
    default = _DEFAULT_VARIANT.get(want.architecture, "")
    return {want.variant or default, got.variant or default} == {default} if default else not got.variant


def choose(index: Index, platform: Platform, what: str) -> Descriptor:
    """The index entry for `platform`: an exact variant match first, then an equivalent one."""
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.platform.os == platform.os
        and d.platform.architecture == platform.architecture
        and d.media_type in MANIFEST_TYPES | {""}
    ]
    for d in candidates:
        if d.platform is not None and d.platform.variant == platform.variant:
            return d
    for d in candidates:
        if d.platform is not None and _variant_matches(platform, d.platform):
            return d
    have = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
    raise InvalidArgument(f"{what}: no manifest for {platform} in the index (it has: {have})")
