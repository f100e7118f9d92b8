"""gRPC transport settings shared by the CRI server and client: message limits and endpoint syntax.

Kept apart from both so the client (and so the CLI) imports neither the servicers nor the runtime.
"""

from __future__ import annotations

from podhost.errors import InvalidArgument

#: The kubelet's own limit for CRI messages (large ListContainers answers on busy nodes).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel_options() -> list[tuple[str, int]]:
    """gRPC options both ends use, so neither refuses a message the other may send."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def target(endpoint: str) -> str:
    """A gRPC target for a CRI endpoint: "unix:///run/x.sock", "unix:/run/x.sock" or a bare "/run/x.sock"."""
    if endpoint.startswith("unix://"):
        path = endpoint.removeprefix("unix://")
    elif endpoint.startswith("unix:"):
        path = endpoint.removeprefix("unix:")
    else:
        path = endpoint
    if not path.startswith("/"):
        raise InvalidArgument(
            f"runtime endpoint {endpoint!r}: expected unix:///absolute/path or /absolute/path"
        )
    return "unix://" + path
