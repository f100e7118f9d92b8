"""`podhost.v1.Admin`: what CRI has no verb for, served beside it on the same socket.

LoadImage imports an image archive that is already on this machine (`podhost cri load FILE`), so tests
and air-gapped nodes need no registry. Thin like the CRI servicers: convert, call `RuntimeAPI`, convert.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import grpc

from podhost.cri import admin_pb2, admin_pb2_grpc, convert
from podhost.cri.status import rpc
from podhost.errors import InvalidArgument

if TYPE_CHECKING:
    from podhost.cri.runtime_api import RuntimeAPI


class AdminServicer(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    def __init__(self, runtime: RuntimeAPI) -> None:
        self.runtime = runtime

    @rpc
    def LoadImage(
        self, request: admin_pb2.LoadImageRequest, context: grpc.ServicerContext
    ) -> admin_pb2.LoadImageResponse:
        if not request.path or not os.path.isabs(request.path):
            # The daemon's working directory means nothing to the caller; the CLI sends absolute paths.
            raise InvalidArgument(f"LoadImageRequest.path must be an absolute path, not {request.path!r}")
        images = self.runtime.import_image(request.path)
        return admin_pb2.LoadImageResponse(images=[convert.image(i) for i in images])


__all__ = ["AdminServicer"]
