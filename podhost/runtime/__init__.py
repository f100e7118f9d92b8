"""The services behind CRI, as plain Python: sandbox, container, image, network, cgroups, state.

`podhost.runtime.runtime.Runtime` is the one facade the CRI servicers call; each method is named after
its CRI verb and takes/returns `podhost.runtime.model` types. Nothing here imports grpc or protobuf.
"""
