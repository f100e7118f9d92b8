"""The `podhost.v1.Pods` gRPC service: thin methods over `PodManager`, served on the daemon's socket.

No decisions here: each method calls the one manager method of its name; errors become status codes
through `podhost.cri.status.rpc`, as for CRI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from podhost.cri.status import rpc
from podhost.kubelet import api_pb2 as api
from podhost.kubelet import api_pb2_grpc

if TYPE_CHECKING:
    from podhost.kubelet.manager import PodManager

#: How long Watch waits for a change before it looks again whether the caller is still there.
WATCH_POLL_SECONDS = 0.5


class PodsServicer(api_pb2_grpc.PodsServicer):  # type: ignore[misc]
    def __init__(self, manager: PodManager) -> None:
        self.manager = manager

    @rpc
    def Apply(self, request: api.ApplyRequest, context: grpc.ServicerContext) -> api.ApplyResponse:
        return api.ApplyResponse(results=self.manager.apply(request.manifest, request.source))

    @rpc
    def Delete(self, request: api.DeleteRequest, context: grpc.ServicerContext) -> api.DeleteResponse:
        result = self.manager.delete(request.kind, request.namespace or "default", request.name, request.wait)
        return api.DeleteResponse(result=result)

    def _get(self, request: api.GetRequest) -> api.GetResponse:
        version = self.manager.version
        objects = self.manager.get(request.kind, request.namespace, request.name)
        return api.GetResponse(objects=[json.dumps(o) for o in objects], version=version)

    @rpc
    def Get(self, request: api.GetRequest, context: grpc.ServicerContext) -> api.GetResponse:
        return self._get(request)

    @rpc
    def Watch(self, request: api.GetRequest, context: grpc.ServicerContext) -> Iterator[api.GetResponse]:
        response = self._get(request)
        yield response
        version = response.version
        while context.is_active():
            now = self.manager.wait_changed(version, WATCH_POLL_SECONDS)
            if now != version:
                version = now
                yield self._get(request)

    @rpc
    def Locate(self, request: api.LocateRequest, context: grpc.ServicerContext) -> api.LocateResponse:
        found = self.manager.locate(
            request.namespace or "default", request.pod, request.container, request.previous
        )
        return api.LocateResponse(**found)


def register(manager: PodManager, server: grpc.Server) -> None:
    api_pb2_grpc.add_PodsServicer_to_server(PodsServicer(manager), server)
