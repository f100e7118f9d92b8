"""Image pulls for the pod worker: the kubelet's image manager (pkg/kubelet/images/image_manager.go).

`ensure_images` is EnsureImageExists under IfNotPresent, through CRI only: ImageStatus, and PullImage only
when the runtime lacks the image; for the container's image, then for the image volumes it mounts (the
runtime never pulls those: CRI `Mount.image` names an image already present). It records the Pulling /
Pulled / Failed events and reports a failure as ErrImagePull with its message.

A failed pull steps the image's pull back-off (`pulls`, keyed by image: the pod worker's own, so per pod
and image like the kubelet's `<pod uid>_<image>` keys; 10 s doubling to 5 min, the kubelet's
backOffPeriod and MaxContainerBackOff). While it runs the start is held by pod_actions, and the container
waits as ImagePullBackOff with `Back-off pulling image "X"` (`pull_backoff`). Unlike the kubelet, which
asks the runtime first, an image loaded meanwhile is used once the back-off ends, not before.
"""

from __future__ import annotations

from collections.abc import Callable

from podhost.cri.client import CRIClient
from podhost.errors import PodhostError
from podhost.kubelet.backoff import Backoff
from podhost.kubelet.events import NORMAL, WARNING
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


def pull_backoff(pod: Pod, spec: ContainerSpec, pulls: Backoff, now: float) -> tuple[str, float, float]:
    """(image, until, wait) of the first image of `spec` whose pull back-off runs at `now`; ("", 0, 0)."""
    for image in images_for(pod, spec):
        if now < (until := pulls.until(image)):
            return image, until, pulls.wait(image)
    return "", 0.0, 0.0


def ensure_images(
    cri: CRIClient, pod: Pod, spec: ContainerSpec, event: Event, first: bool, pulls: Backoff, now: float
) -> str:
    """Make sure every image `spec` needs is present; "" when they are, else why not (ErrImagePull's
    message; the image's pull back-off is stepped). `first` (the container's first attempt) also
    announces an image already present."""
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
            pulls.step(image, now)
            failure = f'Failed to pull image "{image}": {e}'
            event(WARNING, "Failed", failure, spec.name)
            return failure
    return ""
