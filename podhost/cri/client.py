"""A typed CRI v1 client: one method per verb, protobuf messages in and out, podhost errors on failure.

Works against any CRI runtime (podhost, containerd, CRI-O): only `load_image` uses podhost's own Admin
service, and against another runtime it fails with Unimplemented. Failed calls raise the `podhost.errors`
class their status code maps to (`podhost.cri.status`), with the server's message, so callers catch
NotFound / InvalidArgument / ... and the CLI prints the runtime's own words.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from podhost.cri import admin_pb2
from podhost.cri import api_pb2 as pb
from podhost.cri.transport import channel_options, target
from podhost.errors import PodhostError

#: Per-call deadline for ordinary verbs: the kubelet's default --runtime-request-timeout.
DEFAULT_TIMEOUT = 120.0
#: Slack added on top of a timeout the request itself carries (stop grace period, exec timeout).
TIMEOUT_SLACK = 30.0

M = TypeVar("M")


class CRIClient:
    """A connection to one CRI endpoint. Cheap to create; `close()` (or `with`) releases the channel."""

    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT, transport: str = "grpc") -> None:
        """`transport` "h2": unary calls over podhost's own HTTP/2 client (`cri/h2.py`), which spares a
        short-lived process the import of grpcio (the CLI); "grpc": grpcio, for everything else."""
        self.endpoint = target(endpoint)
        self.timeout = timeout
        self._h2 = transport == "h2"
        self._channel: Any
        if self._h2:
            from podhost.cri import h2

            self._channel = h2.Pool(self.endpoint.removeprefix("unix://"), self._peer)
            self.runtime: Any = h2.Stub(self._channel, pb.DESCRIPTOR.services_by_name["RuntimeService"])
            self.images: Any = h2.Stub(self._channel, pb.DESCRIPTOR.services_by_name["ImageService"])
            self.admin: Any = h2.Stub(self._channel, admin_pb2.DESCRIPTOR.services_by_name["Admin"])
            return
        import grpc

        from podhost.cri import admin_pb2_grpc, api_pb2_grpc

        self._channel = grpc.insecure_channel(self.endpoint, options=channel_options())
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self.images = api_pb2_grpc.ImageServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminStub(self._channel)

    @property
    def _peer(self) -> str:
        return f"the runtime at {self.endpoint}"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CRIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., M], request: Any, timeout: float | None = -1.0) -> M:
        """Call a unary method; `timeout=-1` means the client's default, None means no deadline."""
        deadline = self.timeout if timeout == -1.0 else timeout
        try:
            return method(request, timeout=deadline)
        except PodhostError:
            raise  # the h2 transport's, already in podhost's terms
        except Exception as err:
            raise _from_grpc(err, self._peer) from None

    def _slack(self, seconds: int) -> float | None:
        return None if seconds <= 0 else max(self.timeout, seconds + TIMEOUT_SLACK)

    # --- runtime ----------------------------------------------------------------------------------

    def version(self) -> pb.VersionResponse:
        return self._call(self.runtime.Version, pb.VersionRequest(version="v1"))

    def status(self, verbose: bool = False) -> pb.StatusResponse:
        return self._call(self.runtime.Status, pb.StatusRequest(verbose=verbose))

    def runtime_config(self) -> pb.RuntimeConfigResponse:
        return self._call(self.runtime.RuntimeConfig, pb.RuntimeConfigRequest())

    # --- pod sandboxes ----------------------------------------------------------------------------

    def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        return self._call(self.runtime.RunPodSandbox, request).pod_sandbox_id

    def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        self._call(self.runtime.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id))

    def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        self._call(self.runtime.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id))

    def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=verbose)
        return self._call(self.runtime.PodSandboxStatus, request)

    def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None) -> list[pb.PodSandbox]:
        request = pb.ListPodSandboxRequest(filter=filter)
        return list(self._call(self.runtime.ListPodSandbox, request).items)

    # --- containers -------------------------------------------------------------------------------

    def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str:
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod_sandbox_id, config=config, sandbox_config=sandbox_config
        )
        return self._call(self.runtime.CreateContainer, request).container_id

    def start_container(self, container_id: str) -> None:
        self._call(self.runtime.StartContainer, pb.StartContainerRequest(container_id=container_id))

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        request = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._call(self.runtime.StopContainer, request, max(self.timeout, timeout + TIMEOUT_SLACK))

    def remove_container(self, container_id: str) -> None:
        self._call(self.runtime.RemoveContainer, pb.RemoveContainerRequest(container_id=container_id))

    def list_containers(self, filter: pb.ContainerFilter | None = None) -> list[pb.Container]:
        request = pb.ListContainersRequest(filter=filter)
        return list(self._call(self.runtime.ListContainers, request).containers)

    def container_status(self, container_id: str, verbose: bool = False) -> pb.ContainerStatusResponse:
        request = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self._call(self.runtime.ContainerStatus, request)

    def update_container_resources(self, container_id: str, linux: pb.LinuxContainerResources) -> None:
        request = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux)
        self._call(self.runtime.UpdateContainerResources, request)

    def update_pod_sandbox_resources(self, sandbox_id: str, resources: pb.LinuxContainerResources) -> None:
        request = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=sandbox_id, resources=resources)
        self._call(self.runtime.UpdatePodSandboxResources, request)

    def reopen_container_log(self, container_id: str) -> None:
        self._call(self.runtime.ReopenContainerLog, pb.ReopenContainerLogRequest(container_id=container_id))

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 0) -> pb.ExecSyncResponse:
        """Run `cmd` in the container and wait; `timeout` 0 waits as long as the command runs."""
        request = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self._call(self.runtime.ExecSync, request, self._slack(timeout))

    def _url_deadline(self) -> float:
        # A streaming URL comes back at once; a client made with timeout 0 (no limit) still gets one.
        return self.timeout if self.timeout > 0 else DEFAULT_TIMEOUT

    def exec(self, request: pb.ExecRequest) -> str:
        """The streaming URL of an exec session (run it with podhost.cri.streaming.client)."""
        return self._call(self.runtime.Exec, request, self._url_deadline()).url

    def attach(self, request: pb.AttachRequest) -> str:
        """The streaming URL of an attach session."""
        return self._call(self.runtime.Attach, request, self._url_deadline()).url

    def port_forward(self, pod_sandbox_id: str, ports: list[int]) -> str:
        """The streaming URL of a port-forward session into the pod's network namespace."""
        request = pb.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=ports)
        return self._call(self.runtime.PortForward, request, self._url_deadline()).url

    def container_stats(self, container_id: str) -> pb.ContainerStats:
        request = pb.ContainerStatsRequest(container_id=container_id)
        return self._call(self.runtime.ContainerStats, request).stats

    def list_container_stats(self, filter: pb.ContainerStatsFilter | None = None) -> list[pb.ContainerStats]:
        request = pb.ListContainerStatsRequest(filter=filter)
        return list(self._call(self.runtime.ListContainerStats, request).stats)

    def pod_sandbox_stats(self, pod_sandbox_id: str) -> pb.PodSandboxStats:
        request = pb.PodSandboxStatsRequest(pod_sandbox_id=pod_sandbox_id)
        return self._call(self.runtime.PodSandboxStats, request).stats

    def list_pod_sandbox_stats(
        self, filter: pb.PodSandboxStatsFilter | None = None
    ) -> list[pb.PodSandboxStats]:
        request = pb.ListPodSandboxStatsRequest(filter=filter)
        return list(self._call(self.runtime.ListPodSandboxStats, request).stats)

    def list_metric_descriptors(self) -> list[pb.MetricDescriptor]:
        request = pb.ListMetricDescriptorsRequest()
        return list(self._call(self.runtime.ListMetricDescriptors, request).descriptors)

    def list_pod_sandbox_metrics(self) -> list[pb.PodSandboxMetrics]:
        request = pb.ListPodSandboxMetricsRequest()
        return list(self._call(self.runtime.ListPodSandboxMetrics, request).pod_metrics)

    def container_events(self) -> EventStream:
        """GetContainerEvents: iterate for the events (failures raise podhost's exceptions); `cancel()`,
        from any thread, ends the iteration quietly."""
        call = self.runtime.GetContainerEvents(pb.GetEventsRequest())
        return call if self._h2 else _GrpcEvents(call, self._peer)

    def get_container_events(self) -> Iterator[pb.ContainerEventResponse]:
        """Events until the caller stops iterating (then the stream is cancelled) or the server ends it."""
        stream = self.container_events()
        try:
            yield from stream
        finally:
            stream.cancel()

    # --- images -----------------------------------------------------------------------------------

    def list_images(self, image: str = "") -> list[pb.Image]:
        request = pb.ListImagesRequest(
            filter=pb.ImageFilter(image=pb.ImageSpec(image=image)) if image else None
        )
        return list(self._call(self.images.ListImages, request).images)

    def image_status(self, image: str, verbose: bool = False) -> pb.ImageStatusResponse:
        request = pb.ImageStatusRequest(image=pb.ImageSpec(image=image), verbose=verbose)
        return self._call(self.images.ImageStatus, request)

    def pull_image(
        self, image: str, auth: pb.AuthConfig | None = None, sandbox_config: pb.PodSandboxConfig | None = None
    ) -> str:
        """Pull and return the image reference the runtime resolved; no deadline (layers can be large)."""
        request = pb.PullImageRequest(
            image=pb.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        return self._call(self.images.PullImage, request, None).image_ref

    def remove_image(self, image: str) -> None:
        self._call(self.images.RemoveImage, pb.RemoveImageRequest(image=pb.ImageSpec(image=image)))

    def image_fs_info(self) -> pb.ImageFsInfoResponse:
        return self._call(self.images.ImageFsInfo, pb.ImageFsInfoRequest())

    # --- podhost admin ----------------------------------------------------------------------------

    def load_image(self, path: str) -> list[pb.Image]:
        """Import an image archive at `path` on the runtime's machine (podhost only)."""
        request = admin_pb2.LoadImageRequest(path=path)
        return list(self._call(self.admin.LoadImage, request, None).images)


def _from_grpc(err: Exception, peer: str) -> Exception:
    """A grpcio failure as the podhost exception its status names; anything else as it is."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(err, grpc.RpcError):
        return err
    from podhost.cri.status import error_from_rpc

    return error_from_rpc(err, peer)


class EventStream(Protocol):
    def __iter__(self) -> Iterator[pb.ContainerEventResponse]: ...

    def cancel(self) -> None: ...


class _GrpcEvents:
    """grpcio's streaming call as an `EventStream`: its failures in podhost's terms, cancel() quiet."""

    def __init__(self, call: Any, peer: str) -> None:
        self._call, self._peer = call, peer

    def __iter__(self) -> Iterator[pb.ContainerEventResponse]:
        import grpc

        try:
            yield from self._call
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise _from_grpc(err, self._peer) from None

    def cancel(self) -> None:
        self._call.cancel()
