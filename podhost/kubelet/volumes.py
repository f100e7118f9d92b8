"""The pod's volumes on the host: the kubelet's volume manager, for the kinds podhost supports.

emptyDir volumes are directories under the pod manager's volume root (<root>/<pod uid>/<name>), made
before the sandbox and removed with the pod; hostPath volumes of type DirectoryOrCreate / FileOrCreate are
made when missing; image volumes are not host paths at all (the runtime mounts the image: images.py).
configMap, secret, downwardAPI and projected volumes, and emptyDir medium Memory, are config_volumes.py's.
"""

from __future__ import annotations

from pathlib import Path

from podhost.kubelet.manifest import CONFIG_VOLUMES, Pod


def prepare_pod_dirs(pod: Pod, log_directory: str, volume_directory: Path) -> None:
    """Make the pod's log directory and the volumes that must exist before its containers."""
    Path(log_directory).mkdir(parents=True, exist_ok=True)
    for volume in pod.volumes:
        if volume.kind == "emptyDir":
            (volume_directory / volume.name).mkdir(parents=True, exist_ok=True)
        elif volume.host_path_type in ("DirectoryOrCreate",):
            Path(volume.path).mkdir(parents=True, exist_ok=True)
        elif volume.host_path_type == "FileOrCreate":
            Path(volume.path).parent.mkdir(parents=True, exist_ok=True)
            Path(volume.path).touch(exist_ok=True)


def volume_paths(pod: Pod, volume_directory: Path) -> dict[str, str]:
    """The host path of each volume that has one, by volume name (the pod manager's own volumes,
    emptyDir and the config volumes of config_volumes.py, are under `volume_directory`)."""
    return {
        v.name: str(volume_directory / v.name) if v.kind in ("emptyDir", *CONFIG_VOLUMES) else v.path
        for v in pod.volumes
        if v.kind != "image"
    }
