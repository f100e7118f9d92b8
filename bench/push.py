"""Pushing images to a registry: how tests and benchmarks fill their local registries.

podhost itself never pushes (CRI has no push). This builds manifests (OCI, or Docker schema 2 with
`docker=True`) and indexes for blobs given as bytes, uploads blobs monolithically and puts manifests by
tag, through `RegistryClient`. It checks nothing about the blobs: tests push hostile layers with it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field

from podhost.runtime.image.registry import manifest
from podhost.runtime.image.registry.client import RegistryClient
from podhost.runtime.image.registry.manifest import Platform, sha256_digest

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_LAYER_TYPES = {
    (False, False): "application/vnd.oci.image.layer.v1.tar",
    (False, True): "application/vnd.oci.image.layer.v1.tar+gzip",
    (True, False): "application/vnd.docker.image.rootfs.diff.tar",
    (True, True): "application/vnd.docker.image.rootfs.diff.tar.gzip",
}

ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def gzip_layer(tar: bytes, level: int = 6) -> bytes:
    """A gzip layer blob, deterministic (no name, mtime 0), as registries usually hold layers."""
    return gzip.compress(tar, compresslevel=level, mtime=0)


@dataclass
class PushImage:
    """One platform's image as blobs: its config and its layer blobs (gzip or plain tar)."""

    config: bytes
    layers: list[bytes]
    platform: Platform | None = None
    docker: bool = False  # Docker schema 2 media types instead of OCI
    annotations: dict[str, str] = field(default_factory=dict)

    def manifest(self) -> bytes:
        doc = {
            "schemaVersion": 2,
            "mediaType": manifest.DOCKER_MANIFEST if self.docker else manifest.OCI_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG if self.docker else OCI_CONFIG,
                "digest": sha256_digest(self.config),
                "size": len(self.config),
            },
            "layers": [
                {
                    "mediaType": ZSTD_LAYER
                    if blob[:4] == b"\x28\xb5\x2f\xfd"
                    else _LAYER_TYPES[(self.docker, blob[:2] == b"\x1f\x8b")],
                    "digest": sha256_digest(blob),
                    "size": len(blob),
                }
                for blob in self.layers
            ],
        }
        return json.dumps(doc, sort_keys=True).encode()


def index_json(entries: list[tuple[bytes, Platform]], docker: bool = False) -> bytes:
    """An OCI index (or Docker manifest list) of already-built platform manifests."""
    media_type = manifest.DOCKER_MANIFEST if docker else manifest.OCI_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": manifest.DOCKER_LIST if docker else manifest.OCI_INDEX,
        "manifests": [
            {
                "mediaType": media_type,
                "digest": sha256_digest(data),
                "size": len(data),
                "platform": {
                    k: v
                    for k, v in (("os", p.os), ("architecture", p.architecture), ("variant", p.variant))
                    if v
                },
            }
            for data, p in entries
        ],
    }
    return json.dumps(doc, sort_keys=True).encode()


def push_image(client: RegistryClient, repository_path: str, tag: str, image: PushImage) -> str:
    """Upload the image's blobs and put its manifest under `tag`; returns the manifest digest."""
    for blob in (image.config, *image.layers):
        client.upload_blob(repository_path, blob)
    data = image.manifest()
    media_type = manifest.DOCKER_MANIFEST if image.docker else manifest.OCI_MANIFEST
    return client.put_manifest(repository_path, tag, data, media_type)


def push_index(
    client: RegistryClient, repository_path: str, tag: str, images: list[PushImage], docker: bool = False
) -> str:
    """Push each platform image by digest, then an index of them under `tag`; returns the index digest."""
    entries = []
    for image in images:
        if image.platform is None:
            raise ValueError("every image of an index needs a platform")
        digest = push_image(client, repository_path, sha256_digest(image.manifest()), image)
        assert digest == sha256_digest(image.manifest())
        entries.append((image.manifest(), image.platform))
    data = index_json(entries, docker)
    return client.put_manifest(
        repository_path, tag, data, manifest.DOCKER_LIST if docker else manifest.OCI_INDEX
    )
