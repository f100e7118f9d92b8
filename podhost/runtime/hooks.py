"""The points of the pod and container lifecycle where something outside podhost may take part (NRI).

The services call these at fixed places; the default does nothing, so a runtime without plugins pays a
method call. Hooks that may refuse (`run_pod_sandbox`, `create_container`, `start_container`,
`update_container`) raise, and the verb unwinds through its ordinary undo; the others are notifications
and never fail the verb. Where each is called, and what holds then:
- `run_pod_sandbox`: the sandbox is made (pause, namespaces, network) but still CREATING, so hidden
  from List/Status and refusing containers;
- `stop_pod_sandbox`: on its first stop only, with every container already stopped, before pause dies;
- `create_container`: the OCI spec is built but not yet written; the hook may change it (and the
  container's annotations); the container is still CREATING, so hidden;
- `stop_container`: once the container's exit is recorded, whether CRI stopped it or it ended itself;
- `*_undone`: a verb failed after its hook ran: what the plugins saw did not happen after all.
"""

from __future__ import annotations

from typing import Any

from podhost.runtime.model import Container, LinuxContainerResources, PodSandbox


class LifecycleHooks:
    def run_pod_sandbox(self, sandbox: PodSandbox) -> None:
        pass

    def pod_sandbox_undone(self, sandbox: PodSandbox) -> None:
        pass

    def stop_pod_sandbox(self, sandbox: PodSandbox) -> None:
        pass

    def remove_pod_sandbox(self, sandbox: PodSandbox) -> None:
        pass

    def create_container(self, sandbox: PodSandbox, container: Container, spec: dict[str, Any]) -> None:
        pass

    def container_undone(self, container: Container) -> None:
        pass

    def post_create_container(self, container: Container) -> None:
        pass

    def start_container(self, container: Container) -> None:
        pass

    def post_start_container(self, container: Container) -> None:
        pass

    def update_container(self, container: Container, resources: LinuxContainerResources) -> None:
        pass

    def post_update_container(self, container: Container) -> None:
        pass

    def stop_container(self, container: Container) -> None:
        pass

    def remove_container(self, container: Container) -> None:
        pass
