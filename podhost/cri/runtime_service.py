"""CRI `runtime.v1.RuntimeService`: one thin method per verb.

Each method converts the request (`convert`), calls the one `RuntimeAPI` method of the same name, and
converts the result back. No decisions are made here: validation lives in `convert` (what CRI requires of
a message) and in the runtime (everything else); error codes come from `status.rpc`.

Exec/Attach/PortForward answer a URL of the streaming server (podhost.cri.streaming.server), given to
the servicer by whoever serves it (the daemon); without one they answer UNIMPLEMENTED. Verbs podhost does
not serve yet (checkpoint/restore, the Stream* listings) answer UNIMPLEMENTED with
the reason.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from podhost.cri import api_pb2 as pb
from podhost.cri import api_pb2_grpc, convert
from podhost.cri.status import rpc, unimplemented
from podhost.errors import NotFound, Unimplemented
from podhost.runtime import model, mount
from podhost.runtime.container import recursive_read_only
from podhost.runtime.model import Container, ContainerEvent, PodSandbox
from podhost.runtime.runtime import ContainerFilter

if TYPE_CHECKING:
    from podhost.cri.runtime_api import RuntimeAPI
    from podhost.cri.streaming.server import StreamingServer

log = logging.getLogger(__name__)

#: How long GetContainerEvents waits for an event before it looks again whether the client is still there.

_STREAMING = "streaming (exec/attach/port-forward) has no streaming server in this process; use ExecSync"
_NOT_YET = "not served by podhost yet"


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: RuntimeAPI, streaming: StreamingServer | None = None) -> None:
        self.runtime = runtime
        self.streaming = streaming

    # --- runtime ----------------------------------------------------------------------------------

    @rpc
    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        name, version = self.runtime.version()
        return convert.version_response(name, version)

    @rpc
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        info = {"config": model.to_dict(self.runtime.config)} if request.verbose else None
        return convert.status_response(
            self.runtime.status(),
            self.runtime.runtime_handlers(),
            info,
            recursive_read_only_mounts=recursive_read_only.supported(),
            user_namespaces=mount.idmapped_overlay_supported(),
        )

    @rpc
    def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: grpc.ServicerContext
    ) -> pb.UpdateRuntimeConfigResponse:
        # The kubelet sends the node's pod CIDR here; podhost's CNI config owns addressing, so (like
        # containerd with a CNI config present) the value is acknowledged and not applied.
        log.info(
            "UpdateRuntimeConfig: pod_cidr %r noted, not applied",
            request.runtime_config.network_config.pod_cidr,
        )
        return pb.UpdateRuntimeConfigResponse()

    @rpc
    def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: grpc.ServicerContext
    ) -> pb.RuntimeConfigResponse:
        # podhost manages cgroups through the cgroupfs tree (cgroup_parent paths), never through systemd.
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=pb.CGROUPFS))

    # --- pod sandboxes ----------------------------------------------------------------------------

    @rpc
    def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: grpc.ServicerContext
    ) -> pb.RunPodSandboxResponse:
        config = convert.pod_sandbox_config(request.config)
        sandbox_id = self.runtime.run_pod_sandbox(config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    @rpc
    def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: grpc.ServicerContext
    ) -> pb.StopPodSandboxResponse:
        self.runtime.stop_pod_sandbox(convert.required_id(request.pod_sandbox_id, "pod_sandbox_id"))
        return pb.StopPodSandboxResponse()

    @rpc
    def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: grpc.ServicerContext
    ) -> pb.RemovePodSandboxResponse:
        self.runtime.remove_pod_sandbox(convert.required_id(request.pod_sandbox_id, "pod_sandbox_id"))
        return pb.RemovePodSandboxResponse()

    @rpc
    def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: grpc.ServicerContext
    ) -> pb.PodSandboxStatusResponse:
        sandbox = self.runtime.pod_sandbox_status(
            convert.required_id(request.pod_sandbox_id, "pod_sandbox_id")
        )
        network = self.runtime.pod_network_result(sandbox.id) if request.verbose else {}
        return convert.pod_sandbox_status_response(
            sandbox, verbose=request.verbose, network=network, timestamp=time.time_ns()
        )

    @rpc
    def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: grpc.ServicerContext
    ) -> pb.ListPodSandboxResponse:
        sandboxes = self.runtime.list_pod_sandbox(convert.pod_sandbox_filter(request.filter))
        return pb.ListPodSandboxResponse(items=[convert.pod_sandbox(s) for s in sandboxes])

    # --- containers -------------------------------------------------------------------------------

    @rpc
    def CreateContainer(
        self, request: pb.CreateContainerRequest, context: grpc.ServicerContext
    ) -> pb.CreateContainerResponse:
        config = convert.container_config(request.config)
        sandbox_config = (
            convert.pod_sandbox_config(request.sandbox_config, validate=False)
            if request.HasField("sandbox_config")
            else None
        )
        container_id = self.runtime.create_container(
            convert.required_id(request.pod_sandbox_id, "pod_sandbox_id"), config, sandbox_config
        )
        return pb.CreateContainerResponse(container_id=container_id)

    @rpc
    def StartContainer(
        self, request: pb.StartContainerRequest, context: grpc.ServicerContext
    ) -> pb.StartContainerResponse:
        self.runtime.start_container(convert.required_id(request.container_id, "container_id"))
        return pb.StartContainerResponse()

    @rpc
    def StopContainer(
        self, request: pb.StopContainerRequest, context: grpc.ServicerContext
    ) -> pb.StopContainerResponse:
        self.runtime.stop_container(
            convert.required_id(request.container_id, "container_id"), int(request.timeout)
        )
        return pb.StopContainerResponse()

    @rpc
    def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: grpc.ServicerContext
    ) -> pb.RemoveContainerResponse:
        self.runtime.remove_container(convert.required_id(request.container_id, "container_id"))
        return pb.RemoveContainerResponse()

    @rpc
    def ListContainers(
        self, request: pb.ListContainersRequest, context: grpc.ServicerContext
    ) -> pb.ListContainersResponse:
        containers = self.runtime.list_containers(convert.container_filter(request.filter))
        return pb.ListContainersResponse(containers=[convert.container(c) for c in containers])

    @rpc
    def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: grpc.ServicerContext
    ) -> pb.ContainerStatusResponse:
        container = self.runtime.container_status(convert.required_id(request.container_id, "container_id"))
        return convert.container_status_response(container, verbose=request.verbose)

    @rpc
    def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: grpc.ServicerContext
    ) -> pb.UpdateContainerResourcesResponse:
        resources = convert.update_resources(request)
        self.runtime.update_container_resources(
            convert.required_id(request.container_id, "container_id"), resources
        )
        return pb.UpdateContainerResourcesResponse()

    @rpc
    def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: grpc.ServicerContext
    ) -> pb.ReopenContainerLogResponse:
        self.runtime.reopen_container_log(convert.required_id(request.container_id, "container_id"))
        return pb.ReopenContainerLogResponse()

    @rpc
    def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.ServicerContext) -> pb.ExecSyncResponse:
        result = self.runtime.exec_sync(request.container_id, convert.exec_cmd(request), int(request.timeout))
        return convert.exec_sync_response(result.stdout, result.stderr, result.exit_code)

    # --- streaming: a URL on the streaming server, which runs the session when the client connects ---

    def _streaming(self, verb: str) -> StreamingServer:
        if self.streaming is None:
            raise Unimplemented(f"{verb}: {_STREAMING}")
        return self.streaming

    @rpc
    def Exec(self, request: pb.ExecRequest, context: grpc.ServicerContext) -> pb.ExecResponse:
        server = self._streaming("Exec")
        req = convert.exec_request(request)
        container = self.runtime.exec_target(req.container_id)
        return pb.ExecResponse(url=server.get_exec(dataclasses.replace(req, container_id=container.id)))

    @rpc
    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> pb.AttachResponse:
        server = self._streaming("Attach")
        req = convert.attach_request(request)
        container = self.runtime.exec_target(req.container_id)
        return pb.AttachResponse(url=server.get_attach(dataclasses.replace(req, container_id=container.id)))

    @rpc
    def PortForward(
        self, request: pb.PortForwardRequest, context: grpc.ServicerContext
    ) -> pb.PortForwardResponse:
        server = self._streaming("PortForward")
        req = convert.port_forward_request(request)
        sandbox = self.runtime.port_forward_target(req.pod_sandbox_id)
        return pb.PortForwardResponse(
            url=server.get_port_forward(dataclasses.replace(req, pod_sandbox_id=sandbox.id))
        )

    # --- stats ------------------------------------------------------------------------------------

    @rpc
    def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: grpc.ServicerContext
    ) -> pb.ContainerStatsResponse:
        container_id = convert.required_id(request.container_id, "container_id")
        stats = self.runtime.container_stats(container_id)
        container = self.runtime.container_status(container_id)
        return pb.ContainerStatsResponse(stats=convert.container_stats(stats, container))

    @rpc
    def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: grpc.ServicerContext
    ) -> pb.ListContainerStatsResponse:
        f = convert.container_filter(request.filter)
        containers = {c.id: c for c in self.runtime.list_containers(f)}
        stats = self.runtime.list_container_stats(f)
        return pb.ListContainerStatsResponse(
            stats=[convert.container_stats(s, containers.get(s.container_id)) for s in stats]
        )

    @rpc
    def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: grpc.ServicerContext
    ) -> pb.PodSandboxStatsResponse:
        stats = self.runtime.pod_sandbox_stats(convert.required_id(request.pod_sandbox_id, "pod_sandbox_id"))
        containers = {
            c.id: c for c in self.runtime.list_containers(ContainerFilter(pod_sandbox_id=stats.sandbox.id))
        }
        return pb.PodSandboxStatsResponse(stats=convert.pod_sandbox_stats(stats, containers))

    @rpc
    def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: grpc.ServicerContext
    ) -> pb.ListPodSandboxStatsResponse:
        stats = self.runtime.list_pod_sandbox_stats(convert.pod_sandbox_filter(request.filter))
        containers = {c.id: c for c in self.runtime.list_containers(ContainerFilter())}
        return pb.ListPodSandboxStatsResponse(stats=[convert.pod_sandbox_stats(s, containers) for s in stats])

    # --- metrics ----------------------------------------------------------------------------------

    @rpc
    def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: grpc.ServicerContext
    ) -> pb.ListMetricDescriptorsResponse:
        descriptors = self.runtime.list_metric_descriptors()
        return pb.ListMetricDescriptorsResponse(
            descriptors=[convert.metric_descriptor(d) for d in descriptors]
        )

    @rpc
    def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: grpc.ServicerContext
    ) -> pb.ListPodSandboxMetricsResponse:
        pods = self.runtime.list_pod_sandbox_metrics()
        return pb.ListPodSandboxMetricsResponse(pod_metrics=[convert.pod_sandbox_metrics(p) for p in pods])

    # --- events -----------------------------------------------------------------------------------

    @rpc
    def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ContainerEventResponse]:
        subscription = self.runtime.subscribe_events()
        # The call's end (the client cancelled or went away) closes the subscription, which wakes the
        # blocked `get`: no timer, nothing wakes while no event comes.
        context.add_callback(subscription.close)
        try:
            while context.is_active():
                event = subscription.get()
                if event is None:
                    return
                yield convert.container_event_response(event, *self._event_subjects(event))
        finally:
            subscription.close()

    def _event_subjects(self, event: ContainerEvent) -> tuple[PodSandbox | None, list[Container]]:
        """The sandbox and its containers as they are now; gone ones (after a removal) are left out."""
        try:
            sandbox = self.runtime.pod_sandbox_status(event.sandbox_id)
        except NotFound:
            return None, []
        return sandbox, self.runtime.list_containers(ContainerFilter(pod_sandbox_id=sandbox.id))

    # --- not served yet ---------------------------------------------------------------------------

    CheckpointContainer = unimplemented("CheckpointContainer", "checkpoint/restore is " + _NOT_YET)
    CheckpointPod = unimplemented("CheckpointPod", "checkpoint/restore is " + _NOT_YET)
    RestorePod = unimplemented("RestorePod", "checkpoint/restore is " + _NOT_YET)
    UpdatePodSandboxResources = unimplemented("UpdatePodSandboxResources", "pod-level resize is " + _NOT_YET)
    StreamPodSandboxes = unimplemented(
        "StreamPodSandboxes", "use ListPodSandbox; streaming lists are " + _NOT_YET
    )
    StreamContainers = unimplemented(
        "StreamContainers", "use ListContainers; streaming lists are " + _NOT_YET
    )
    StreamContainerStats = unimplemented("StreamContainerStats", "use ListContainerStats")
    StreamPodSandboxStats = unimplemented("StreamPodSandboxStats", "pod sandbox stats are " + _NOT_YET)
    StreamPodSandboxMetrics = unimplemented("StreamPodSandboxMetrics", "metrics are " + _NOT_YET)


__all__ = ["RuntimeServicer"]
