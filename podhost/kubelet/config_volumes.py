"""A pod's configMap, secret, downwardAPI and projected volumes, and its memory-backed emptyDirs.

The kubelet's volume plugins for these (pkg/volume/configmap, secret, downwardapi, projected, emptydir)
as one small manager per pod (`PodVolumes`):

- `set_up()` before the sandbox (the kubelet's WaitForAttachAndMount): every tmpfs mounted (secret,
  downwardAPI and projected volumes, which upstream wraps in a memory emptyDir, so that secret data never
  touches a disk; emptyDir `medium: Memory`, sized by sizeLimit or the pod's memory limit; a configMap
  volume is a directory on disk, as upstream), then every config volume's payload
  written by the atomic writer. A ConfigMap or Secret that is missing and not `optional` fails it with
  the plugin's words (`configmap "cfg" not found`); the pod waits in ContainerCreating and is retried,
  and starts once the object appears.
- `sync()` while the pod runs (on every change of a ConfigMap or Secret, and at least every
  `RESYNC_SECONDS`, the kubelet's sync period): the payloads again, so a changed object reaches the
  files by the atomic `..data` swap. A failure keeps the files as they were, as upstream.
- `tear_down()` when the pod goes: the tmpfs mounts, then the files.

emptyDir on disk with a sizeLimit is accepted and not enforced (the kubelet enforces it by eviction, which
podhost does not do). With a pod fsGroup the files belong to that group and are group-readable, as
SetVolumeOwnership leaves them; their owner is root.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from podhost.kubelet import atomic_writer, tmpfs
from podhost.kubelet.atomic_writer import FileProjection
from podhost.kubelet.configobjects import ConfigSource
from podhost.kubelet.downward_api import FieldError, NodeInfo, PodFacts, field_value, resource_value
from podhost.kubelet.envvars import not_found
from podhost.kubelet.manifest import CONFIG_VOLUMES, Pod, Volume

log = logging.getLogger(__name__)

RESYNC_SECONDS = 10.0


class VolumeError(Exception):
    """A volume that cannot be set up; the message is the plugin's (no data in it)."""


def _missing_key(kind: str, key: str) -> str:
    if kind == "ConfigMap":
        return f"configmap references non-existent config key: {key}"
    return f"references non-existent secret key: {key}"


def volume_payload(
    volume: Volume, pod: Pod, source: ConfigSource, facts: PodFacts
) -> dict[str, FileProjection]:
    """The files of a config volume: path -> content and mode; raises VolumeError."""
    payload: dict[str, FileProjection] = {}
    errors: list[str] = []
    for src in volume.sources:
        if src.kind == "downwardAPI":
            for f in src.files:
                mode = volume.default_mode if f.mode is None else f.mode
                try:
                    if f.resource is not None:
                        value = resource_value(pod, f.resource, None, facts.node)
                    else:
                        value = field_value(pod, f.field_path, facts)
                except FieldError as e:
                    errors.append(str(e))
                    continue
                payload[f.path] = FileProjection(value.encode(), mode)
            continue
        kind = "ConfigMap" if src.kind == "configMap" else "Secret"
        data = source.config_data(kind, pod.namespace, src.name)
        if data is None:
            if not src.optional:
                errors.append(not_found(kind, src.name))
            continue
        if not src.items:
            payload.update({key: FileProjection(value, volume.default_mode) for key, value in data.items()})
            continue
        for item in src.items:
            if item.key not in data:
                if not src.optional:
                    errors.append(_missing_key(kind, item.key))
                continue
            mode = volume.default_mode if item.mode is None else item.mode
            payload[item.path] = FileProjection(data[item.key], mode)
    if errors:
        raise VolumeError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    if pod.fs_group is not None:  # the fsGroup may read every file (SetVolumeOwnership's read-only mask)
        payload = {p: FileProjection(f.data, f.mode | 0o440) for p, f in payload.items()}
    return payload


def memory_size(volume: Volume, pod: Pod, node: NodeInfo) -> int:
    """An emptyDir medium Memory's tmpfs size (calculateEmptyDirMemorySize): the pod's memory limit when
    every container has one (else the node's memory), capped by sizeLimit."""
    containers = [*pod.init_containers, *pod.containers]
    limits = [c.resources.memory_limit for c in containers]
    pod_limit = sum(limits) if limits and all(limits) else node.memory
    if volume.size_limit:
        return min(volume.size_limit, pod_limit) if pod_limit else volume.size_limit
    return pod_limit


class PodVolumes:
    """The config and memory volumes of one pod under `directory` (<volume root>/<pod uid>)."""

    def __init__(self, pod: Pod, directory: Path, source: ConfigSource, node: NodeInfo) -> None:
        self.pod, self.directory, self.source, self.node = pod, directory, source, node
        self.volumes = [v for v in pod.volumes if v.kind in CONFIG_VOLUMES or v.tmpfs]
        self.failed: dict[str, str] = {}  # volume name -> its last failure, told once per change

    @property
    def config_volumes(self) -> list[Volume]:
        return [v for v in self.volumes if v.kind in CONFIG_VOLUMES]

    def _write(self, volume: Volume) -> None:
        payload = volume_payload(volume, self.pod, self.source, PodFacts(self.node))
        try:
            atomic_writer.write(self.directory / volume.name, payload, self.pod.fs_group)
        except (OSError, atomic_writer.PayloadError) as e:
            raise VolumeError(f"error writing the volume's files: {e.__class__.__name__}") from None

    def set_up(self) -> list[tuple[str, str]]:
        """Mount and fill every volume; the (volume, message) of each that failed."""
        failures = []
        for volume in self.volumes:
            path = self.directory / volume.name
            try:
                if volume.tmpfs:
                    size = memory_size(volume, self.pod, self.node) if volume.kind == "emptyDir" else 0
                    tmpfs.mount_tmpfs(path, size)
                if volume.kind in CONFIG_VOLUMES:
                    self._write(volume)
            except (VolumeError, OSError) as e:
                failures.append((volume.name, str(e)))
        return failures

    def sync(self) -> list[tuple[str, str]]:
        """Rewrite the config volumes from the current objects; the (volume, message) of each failure that
        is new since the last sync (a failure leaves the files as they were)."""
        news = []
        for volume in self.config_volumes:
            try:
                self._write(volume)
                self.failed.pop(volume.name, None)
            except VolumeError as e:
                if self.failed.get(volume.name) != str(e):
                    news.append((volume.name, str(e)))
                self.failed[volume.name] = str(e)
        return news

    def tear_down(self) -> None:
        """Unmount every tmpfs of the pod, then remove its volume directory."""
        try:
            tmpfs.unmount_all(self.directory)
        except OSError as e:
            log.warning("pod %s/%s: unmounting volumes: %s", self.pod.namespace, self.pod.name, e)
        shutil.rmtree(self.directory, ignore_errors=True)


def host_path(volume_path: Path, sub_path: str) -> str:
    """A subPath of a config volume as bound into a container: the file (or directory) it resolves to now,
    which must stay within the volume (so an update, a new `..data`, never reaches it: as upstream)."""
    root = volume_path.resolve()
    target = (volume_path / sub_path).resolve()
    if target != root and root not in target.parents:
        raise VolumeError(f"subPath {sub_path!r} leaves the volume")
    if not target.exists():
        target.mkdir(parents=True)
    return str(target)
