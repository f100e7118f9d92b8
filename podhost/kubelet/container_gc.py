"""Container garbage collection within one pod: the kubelet's containerGC (kuberuntime_gc.go) with
MaxPerPodContainer = 2.

Per container name, the newest two containers of the current sandbox stay (the running one and the
previous, for `logs --previous` and lastState); older exited ones are removed through CRI. Containers of
dead sandboxes go with their sandbox (the pod worker removes those), and a running container is never
removed here.
"""

from __future__ import annotations

import logging

from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import PodhostError
from podhost.kubelet.manifest import Pod
from podhost.kubelet.observation import Observation

log = logging.getLogger(__name__)

#: Containers kept per name in the current sandbox: the running one and the previous (for --previous).
KEEP_PER_NAME = 2


def evictable_containers(pod: Pod, obs: Observation, sandbox_id: str, keep: int = KEEP_PER_NAME) -> list[str]:
    """The ids of the exited containers of the sandbox beyond the newest `keep` of each name."""
    return [
        old.id
        for spec in [*pod.init_containers, *pod.containers]
        for old in obs.of(spec.name, sandbox_id)[keep:]
        if obs.statuses[old.id].state == pb.CONTAINER_EXITED
    ]


def remove_dead_containers(cri: CRIClient, pod: Pod, obs: Observation, sandbox_id: str) -> None:
    for container_id in evictable_containers(pod, obs, sandbox_id):
        try:
            cri.remove_container(container_id)
        except PodhostError as e:
            log.warning(
                "pod %s/%s: removing old container %s: %s", pod.namespace, pod.name, container_id[:13], e
            )
