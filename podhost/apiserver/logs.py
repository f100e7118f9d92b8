"""`pods/log`: a container's output from the CRI log file the pod manager locates, as the kubelet serves it.

The file is CRI's format (conmon's k8s-file driver): `<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`,
one record a line; a `P` (partial) record continues in the next one without a newline. The kubelet
answers with the text only, stdout and stderr interleaved as written (`timestamps=true` puts each
record's time first). `tailLines`, `sinceSeconds` and `limitBytes` narrow it; `follow=true` keeps reading
while the container runs and ends once it has exited and the file is drained.

Which container: the `container` parameter, else the pod's `kubectl.kubernetes.io/default-container`
annotation, else its only container; a pod with more and neither is a 400 naming its containers, as
kube-apiserver answers.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from podhost.apiserver.status import BadRequest

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
FOLLOW_POLL_SECONDS = 0.1
LIVENESS_SECONDS = 1.0


def default_container(pod: dict[str, Any], asked: str) -> str:
    spec, meta = pod.get("spec", {}), pod.get("metadata", {})
    names = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if asked:
        if asked not in [*names, *init, *ephemeral]:
            raise BadRequest(f"container {asked} is not valid for pod {meta.get('name')}")
        return asked
    annotated = (meta.get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION, "")
    if annotated in names:
        return str(annotated)
    if len(names) == 1:
        return names[0]
    raise BadRequest(
        f"a container name must be specified for pod {meta.get('name')}, choose one of: [{' '.join(names)}]"
        + (f" or one of the init containers: [{' '.join(init)}]" if init else "")
    )


@dataclass(frozen=True)
class LogOptions:
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: float | None = None
    limit_bytes: int | None = None
    follow: bool = False

    @classmethod
    def from_query(cls, q: dict[str, str]) -> LogOptions:
        def number(key: str) -> int | None:
            if key not in q or q[key] == "":
                return None
            try:
                return int(q[key])
            except ValueError:
                raise BadRequest(f"{key}: must be a number") from None

        return cls(
            timestamps=q.get("timestamps") in ("true", "1"),
            tail_lines=number("tailLines"),
            since_seconds=number("sinceSeconds"),
            limit_bytes=number("limitBytes"),
            follow=q.get("follow") in ("true", "1"),
        )


def _record_time(stamp: bytes) -> float:
    text = stamp.decode(errors="replace")
    try:
        main, _, frac = text.rstrip("Z").partition(".")
        tz = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, tz = frac.split(sign, 1)
                tz = sign + tz
        base = datetime.datetime.fromisoformat(main + (tz or "+00:00"))
        return base.timestamp() + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return 0.0


def render(line: bytes, options: LogOptions, not_before: float) -> bytes | None:
    """What a reader sees of one CRI log line; None for a line that is not a record or is too old."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
        return None
    if not_before and _record_time(parts[0]) < not_before:
        return None
    content = parts[3] if len(parts) == 4 else b""
    if b"P" not in parts[2].split(b":"):
        content += b"\n"
    return parts[0] + b" " + content if options.timestamps else content


def tail(data: bytes, n: int | None) -> list[bytes]:
    lines = data.splitlines(keepends=True)
    if n is None or n < 0:
        return lines
    return lines[-n:] if n else []


async def stream(
    path: str,
    options: LogOptions,
    write: Callable[[bytes], Awaitable[None]],
    running: Callable[[], Awaitable[bool]],
) -> None:
    """Write the log at `path` through `write`; with `follow`, until `running()` says the container
    stopped and the file is drained."""
    loop = asyncio.get_running_loop()
    not_before = time.time() - options.since_seconds if options.since_seconds else 0.0
    budget = options.limit_bytes

    async def emit(lines: list[bytes]) -> bool:
        nonlocal budget
        out = b"".join(x for x in (render(line, options, not_before) for line in lines) if x is not None)
        if budget is not None:
            out = out[:budget]
            budget -= len(out)
        if out:
            await write(out)
        return budget is None or budget > 0

    try:
        f = open(path, "rb")  # noqa: SIM115 - kept open while following
    except FileNotFoundError:
        if not options.follow:
            return
        f = None
    try:
        pending = b""
        if f is not None:
            data = f.read()
            complete, _, pending = data.rpartition(b"\n")
            if not await emit(tail(complete + b"\n" if complete else b"", options.tail_lines)):
                return
        if not options.follow:
            return
        last_check = loop.time()
        alive = True
        while True:
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    f = None
            chunk = f.read() if f is not None else b""
            if f is not None and not chunk and os.fstat(f.fileno()).st_ino != _inode(path):
                f.close()  # rotated (ReopenContainerLog): the new file from its start
                f, pending = None, b""
                continue
            if chunk:
                data = pending + chunk
                complete, _, pending = data.rpartition(b"\n")
                if complete and not await emit((complete + b"\n").splitlines(keepends=True)):
                    return
                continue
            if not alive:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
            if loop.time() - last_check >= LIVENESS_SECONDS:
                last_check = loop.time()
                alive = await running()
    finally:
        if f is not None:
            f.close()


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1
