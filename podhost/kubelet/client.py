"""A client of podhost's `podhost.v1.Pods` service (the pod manager in the daemon), for the CLI and tests.

Objects come back as the JSON documents the service sends (Kubernetes v1 shapes); failures raise the
`podhost.errors` class of their status code, with the daemon's own message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from podhost.cri.status import error_from_rpc
from podhost.cri.transport import channel_options, target
from podhost.kubelet import api_pb2 as api
from podhost.kubelet import api_pb2_grpc

DEFAULT_TIMEOUT = 60.0
M = TypeVar("M")


class PodsClient:
    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = target(endpoint)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.endpoint, options=channel_options())
        self.stub = api_pb2_grpc.PodsStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PodsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., M], request: Any, timeout: float | None = -1.0) -> M:
        try:
            return method(request, timeout=self.timeout if timeout == -1.0 else timeout)
        except grpc.RpcError as err:
            raise error_from_rpc(err, f"the podhost daemon at {self.endpoint}") from None

    def answers(self, timeout: float = 1.0) -> bool:
        """True when a daemon serving Pods answers on the endpoint."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        try:
            self.stub.Get(api.GetRequest(kind="services", name=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return True

    def apply(self, manifest: str, source: str = "") -> list[str]:
        return list(self._call(self.stub.Apply, api.ApplyRequest(manifest=manifest, source=source)).results)

    def delete(self, kind: str, name: str, namespace: str = "default", wait: bool = True) -> str:
        request = api.DeleteRequest(kind=kind, namespace=namespace, name=name, wait=wait)
        return self._call(self.stub.Delete, request, None if wait else -1.0).result

    def get(self, kind: str, namespace: str = "", name: str = "") -> list[dict[str, Any]]:
        response = self._call(self.stub.Get, api.GetRequest(kind=kind, namespace=namespace, name=name))
        return [json.loads(o) for o in response.objects]

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.get("pods", namespace, name)[0]

    def watch(self, kind: str, namespace: str = "", name: str = "") -> Iterator[list[dict[str, Any]]]:
        """The objects now, then again after every change, until the caller stops iterating."""
        call = self.stub.Watch(api.GetRequest(kind=kind, namespace=namespace, name=name))
        try:
            for response in call:
                yield [json.loads(o) for o in response.objects]
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise error_from_rpc(err, f"the podhost daemon at {self.endpoint}") from None
        finally:
            call.cancel()

    def locate(
        self, pod: str, container: str = "", namespace: str = "default", previous: bool = False
    ) -> api.LocateResponse:
        request = api.LocateRequest(namespace=namespace, pod=pod, container=container, previous=previous)
        return self._call(self.stub.Locate, request)
