"""Image pulls for the pod worker: the kubelet's image manager (pkg/kubelet/images/image_manager.go).

`ensure_images` is EnsureImageExists under IfNotPresent, through CRI only: ImageStatus, and PullImage only
when the runtime lacks the image; for the container's image, then for the image volumes it mounts (the
runtime never pulls those: CRI `Mount.image` names an image already present). It records the Pulling /
Pulled events and reports a failure as ErrImagePull's message; the retry of a failed pull (the kubelet's
ImagePullBackOff) is the pod worker's one retry timer (kubelet/backoff.py), decided in pod_actions.
"""

from __future__ import annotations

from collections.abc import Callable

from podhost.cri.client import CRIClient
from podhost.errors import PodhostError
from podhost.kubelet.events import NORMAL
from podhost.kubelet.manifest import ContainerSpec, Pod

#: Records one event about the pod: (type, reason, message, container name).
Event = Callable[[str, str, str, str], None]


def image_volumes(pod: Pod) -> dict[str, str]:
    """Image volumes by name: their image references (the runtime mounts them: CRI `Mount.image`)."""
    return {v.name: v.reference for v in pod.volumes if v.kind == "image"}


def images_for(pod: Pod, spec: ContainerSpec) -> list[str]:
    """The images `spec` needs, once each: its own, then those of the image volumes it mounts."""
    images = image_volumes(pod)
    wanted = [spec.image] + [images[m.name] for m in spec.volume_mounts if m.name in images]
    return list(dict.fromkeys(wanted))


def ensure_images(cri: CRIClient, pod: Pod, spec: ContainerSpec, event: Event, first: bool) -> str:
    """Make sure every image `spec` needs is present; "" when they are, else why not (ErrImagePull's
    message). `first` (the container's first attempt) also announces an image already present."""
    for image in images_for(pod, spec):
        try:
            if cri.image_status(image).HasField("image"):
                if first:
                    event(
                        NORMAL, "Pulled", f'Container image "{image}" already present on machine', spec.name
                    )
                continue
            event(NORMAL, "Pulling", f'Pulling image "{image}"', spec.name)
            cri.pull_image(image)
            event(NORMAL, "Pulled", f'Successfully pulled image "{image}"', spec.name)
        except PodhostError as e:
            return f'Failed to pull image "{image}": {e}'
    return ""
