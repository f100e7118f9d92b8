"""CRI `runtime.v1.ImageService`: one thin method per verb over the runtime's image store.

Convert the request, call the `RuntimeAPI` method of the same name, convert the answer. Reference
normalisation, pulling and removal rules belong to `podhost.runtime.image`, not here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc

from podhost.cri import api_pb2 as pb
from podhost.cri import api_pb2_grpc, convert
from podhost.cri.status import rpc, unimplemented

if TYPE_CHECKING:
    from podhost.cri.runtime_api import RuntimeAPI


class ImageServicer(api_pb2_grpc.ImageServiceServicer):  # type: ignore[misc]
    def __init__(self, runtime: RuntimeAPI) -> None:
        self.runtime = runtime

    @rpc
    def ListImages(
        self, request: pb.ListImagesRequest, context: grpc.ServicerContext
    ) -> pb.ListImagesResponse:
        if request.filter.image.image:
            # A filter names one image: the store's own lookup resolves it the way ImageStatus does.
            found = self.runtime.image_status(request.filter.image.image)
            images = [found] if found is not None else []
        else:
            images = self.runtime.list_images()
        return pb.ListImagesResponse(images=[convert.image(i) for i in images])

    @rpc
    def ImageStatus(
        self, request: pb.ImageStatusRequest, context: grpc.ServicerContext
    ) -> pb.ImageStatusResponse:
        found = self.runtime.image_status(convert.image_ref(request.image))
        return convert.image_status_response(found, verbose=request.verbose)

    @rpc
    def PullImage(self, request: pb.PullImageRequest, context: grpc.ServicerContext) -> pb.PullImageResponse:
        ref = convert.image_ref(request.image)
        auth = convert.auth_config(request)
        image_id = self.runtime.pull_image(ref, auth)
        return pb.PullImageResponse(image_ref=image_id)

    @rpc
    def RemoveImage(
        self, request: pb.RemoveImageRequest, context: grpc.ServicerContext
    ) -> pb.RemoveImageResponse:
        self.runtime.remove_image(convert.image_ref(request.image))
        return pb.RemoveImageResponse()

    @rpc
    def ImageFsInfo(
        self, request: pb.ImageFsInfoRequest, context: grpc.ServicerContext
    ) -> pb.ImageFsInfoResponse:
        used_bytes, inodes_used, mountpoint = self.runtime.image_fs_info()
        return convert.image_fs_info_response(used_bytes, inodes_used, mountpoint, time.time_ns())

    StreamImages = unimplemented(
        "StreamImages", "use ListImages; streaming lists are not served by podhost yet"
    )


__all__ = ["ImageServicer"]
