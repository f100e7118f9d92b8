"""What every pod worker shares, built once by the pod manager: the runtime's CRI client, the event
recorder, the pool probes run in, where logs and volumes go, and the node's settings."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from podhost.cri.client import CRIClient
from podhost.kubelet import allocation, configobjects, downward_api
from podhost.kubelet.events import EventRecorder


@dataclass
class WorkerContext:
    """What every pod worker shares: the runtime, the recorder, the pool for probes, the settings."""

    cri: CRIClient
    events: EventRecorder
    probe_pool: ThreadPoolExecutor
    log_root: Path
    volume_root: Path
    backoff_base: float = 10.0
    pod_cgroup_parent: str = ""  # when set, each pod's cgroup is <this>/pod<uid> (what containerd needs)
    runtime_name: str = "cri"
    on_status: Callable[[], None] = lambda: None
    allotted: Callable[[str], allocation.Allotted] = allocation.nothing_allotted  # by the node's other pods
    config: configobjects.ConfigSource = field(default_factory=configobjects.ConfigObjects)  # pods read these
    node: downward_api.NodeInfo = field(default_factory=downward_api.NodeInfo)  # for the downward API
