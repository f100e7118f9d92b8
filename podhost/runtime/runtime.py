"""The runtime facade: one object per daemon that the CRI servicers call, one method per CRI verb.

It owns the wiring between the layer services (sandbox, container, image, network) and the event bus.
Methods take and return `podhost.runtime.model` types; errors are `podhost.errors` exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podhost.runtime.model import (
    Container,
    ContainerConfig,
    ContainerState,
    Image,
    PodSandbox,
    PodSandboxConfig,
    PodSandboxState,
)


@dataclass
class PodSandboxFilter:
    id: str = ""  # an id prefix, as crictl passes it
    state: PodSandboxState | None = None
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass
class ContainerFilter:
    id: str = ""  # an id prefix
    state: ContainerState | None = None
    pod_sandbox_id: str = ""  # an id prefix
    label_selector: dict[str, str] = field(default_factory=dict)


@dataclass
class RuntimeCondition:
    type: str  # RuntimeReady, NetworkReady
    status: bool
    reason: str = ""
    message: str = ""


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass
class ContainerStats:
    container_id: str
    timestamp: int
    cpu_usage_core_nano_seconds: int = 0
    memory_working_set_bytes: int = 0
    memory_usage_bytes: int = 0
    writable_layer_used_bytes: int = 0


__all__ = [
    "Container",
    "ContainerConfig",
    "ContainerFilter",
    "ContainerStats",
    "ExecResult",
    "Image",
    "PodSandbox",
    "PodSandboxConfig",
    "PodSandboxFilter",
    "RuntimeCondition",
]
