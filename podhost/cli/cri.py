"""`podhost cri <verb>`: crictl's everyday verbs over `CRIClient`, against podhost or any CRI runtime.

Each command is a function `(client, args) -> exit code` that calls the client and prints with
`podhost.cli.tables`. Errors are not handled here: they propagate as `podhost.errors` exceptions to
`podhost.cli.main`, the one place that turns them into messages and exit codes. Only `load` needs
podhost's Admin service; every other verb is plain CRI.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

from podhost.cli import crilog, tables
from podhost.cri import api_pb2 as pb
from podhost.cri.client import CRIClient
from podhost.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented

Command = Callable[[CRIClient, argparse.Namespace], int]
M = TypeVar("M", bound=Message)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _now_ns() -> int:
    return time.time_ns()


# --- inputs --------------------------------------------------------------------------------------------


def load_message(path: str, message: M) -> M:
    """Fill `message` from a crictl-style JSON or YAML file (proto field names or their camelCase)."""
    import yaml  # here, not at the top: the listing verbs (the common case) need neither
    from google.protobuf import json_format

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise InvalidArgument(f"{path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{path}: not JSON or YAML: {e}") from e
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: expected a mapping at the top level")
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as e:
        raise InvalidArgument(f"{path}: {e}") from e


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"label selector {pair!r}: expected key=value")
        labels[key] = value
    return labels


def _regex(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise InvalidArgument(f"invalid regular expression {pattern!r}: {e}") from e


def _matches(pattern: re.Pattern[str] | None, value: str) -> bool:
    return pattern is None or pattern.search(value) is not None


def _latest(items: list[Any], latest: bool, last: int) -> list[Any]:
    """crictl's -l / --last N: keep the newest one or N (items are newest first)."""
    if latest:
        return items[:1]
    if last > 0:
        return items[:last]
    return items


def _print_document(document: Any, fmt: str) -> None:
    _out(tables.dump(document, fmt))


# --- runtime -------------------------------------------------------------------------------------------


def cmd_version(client: CRIClient, args: argparse.Namespace) -> int:
    _out(tables.version_text(client.version()))
    return 0


def cmd_info(client: CRIClient, args: argparse.Namespace) -> int:
    resp = client.status(verbose=True)
    document: dict[str, Any] = {"status": tables.message_dict(resp.status)}
    if resp.runtime_handlers:
        document["runtimeHandlers"] = [tables.message_dict(h) for h in resp.runtime_handlers]
    document.update(tables.parsed_info(resp.info))
    _print_document(document, args.output)
    return 0


# --- pod sandboxes -------------------------------------------------------------------------------------

#: The states `--state` takes (podhost.cli.parser lists the same names).
_POD_STATES = {"ready": pb.SANDBOX_READY, "notready": pb.SANDBOX_NOTREADY}


def _print_listing(
    args: argparse.Namespace,
    items: list[Any],
    document: Callable[[], Message],
    table: Callable[[list[Any], int, bool], str],
) -> None:
    """`pods` and `ps` output: the list response as JSON/YAML, the ids alone (-q), or crictl's table."""
    if args.output in ("json", "yaml"):
        _print_document(tables.message_dict(document()), args.output)
    elif args.quiet:
        _out("".join(item.id + "\n" for item in items))
    else:
        _out(table(items, _now_ns(), args.no_trunc))


def cmd_pods(client: CRIClient, args: argparse.Namespace) -> int:
    f = pb.PodSandboxFilter(id=args.id or "", label_selector=parse_labels(args.label))
    if args.state:
        f.state.state = _POD_STATES[args.state.lower()]
    name_re, ns_re = _regex(args.name), _regex(args.namespace)
    pods = [
        p
        for p in client.list_pod_sandbox(f)
        if _matches(name_re, p.metadata.name) and _matches(ns_re, p.metadata.namespace)
    ]
    pods = _latest(tables.newest_first(pods), args.latest, args.last)
    _print_listing(args, pods, lambda: pb.ListPodSandboxResponse(items=pods), tables.pods_table)
    return 0


def cmd_inspectp(client: CRIClient, args: argparse.Namespace) -> int:
    for pod_id in args.ids:
        resp = client.pod_sandbox_status(pod_id, verbose=True)
        _print_document(tables.status_document(resp.status, resp.info), args.output)
    return 0


def cmd_runp(client: CRIClient, args: argparse.Namespace) -> int:
    config = load_message(args.config, pb.PodSandboxConfig())
    _out(client.run_pod_sandbox(config, args.runtime) + "\n")
    return 0


def _pod_ids(client: CRIClient, args: argparse.Namespace) -> list[str]:
    if getattr(args, "all", False):
        return [p.id for p in client.list_pod_sandbox()]
    if not args.ids:
        raise InvalidArgument("give at least one pod sandbox ID (or --all)")
    return list(args.ids)


def cmd_stopp(client: CRIClient, args: argparse.Namespace) -> int:
    for pod_id in _pod_ids(client, args):
        client.stop_pod_sandbox(pod_id)
        _out(f"Stopped sandbox {pod_id}\n")
    return 0


def cmd_rmp(client: CRIClient, args: argparse.Namespace) -> int:
    for pod_id in _pod_ids(client, args):
        if args.force:
            client.stop_pod_sandbox(pod_id)
        client.remove_pod_sandbox(pod_id)
        _out(f"Removed sandbox {pod_id}\n")
    return 0


# --- containers ----------------------------------------------------------------------------------------

_CONTAINER_STATES = {
    "created": pb.CONTAINER_CREATED,
    "running": pb.CONTAINER_RUNNING,
    "exited": pb.CONTAINER_EXITED,
    "unknown": pb.CONTAINER_UNKNOWN,
}


def cmd_ps(client: CRIClient, args: argparse.Namespace) -> int:
    f = pb.ContainerFilter(
        id=args.id or "", pod_sandbox_id=args.pod or "", label_selector=parse_labels(args.label)
    )
    if args.state:
        f.state.state = _CONTAINER_STATES[args.state.lower()]
    elif not args.all:
        f.state.state = pb.CONTAINER_RUNNING
    name_re = _regex(args.name)
    containers = [c for c in client.list_containers(f) if _matches(name_re, c.metadata.name)]
    containers = _latest(tables.newest_first(containers), args.latest, args.last)
    _print_listing(
        args, containers, lambda: pb.ListContainersResponse(containers=containers), tables.containers_table
    )
    return 0


def cmd_inspect(client: CRIClient, args: argparse.Namespace) -> int:
    for container_id in args.ids:
        resp = client.container_status(container_id, verbose=True)
        _print_document(tables.status_document(resp.status, resp.info), args.output)
    return 0


def cmd_create(client: CRIClient, args: argparse.Namespace) -> int:
    config = load_message(args.container_config, pb.ContainerConfig())
    sandbox_config = load_message(args.pod_config, pb.PodSandboxConfig())
    if args.with_pull and not client.image_status(config.image.image).HasField("image"):
        client.pull_image(config.image.image, sandbox_config=sandbox_config)
    _out(client.create_container(args.pod_id, config, sandbox_config) + "\n")
    return 0


def cmd_start(client: CRIClient, args: argparse.Namespace) -> int:
    for container_id in args.ids:
        client.start_container(container_id)
        _out(container_id + "\n")
    return 0


def cmd_stop(client: CRIClient, args: argparse.Namespace) -> int:
    for container_id in args.ids:
        client.stop_container(container_id, args.timeout)
        _out(container_id + "\n")
    return 0


def cmd_rm(client: CRIClient, args: argparse.Namespace) -> int:
    ids = [c.id for c in client.list_containers()] if args.all else list(args.ids)
    if not ids:
        raise InvalidArgument("give at least one container ID (or --all)")
    for container_id in ids:
        if args.force:
            client.stop_container(container_id, 0)
        client.remove_container(container_id)
        _out(container_id + "\n")
    return 0


def cmd_exec(client: CRIClient, args: argparse.Namespace) -> int:
    if not args.cmd:
        raise InvalidArgument("give the command to run after the container ID")
    if args.interactive or args.tty:
        return _exec_streaming(client, args)
    return print_exec_result(client.exec_sync(args.container, list(args.cmd), args.timeout))


def print_exec_result(resp: pb.ExecSyncResponse) -> int:
    """An ExecSync's output on our stdout/stderr, byte for byte; its exit code becomes ours."""
    for stream, data in ((sys.stdout, resp.stdout), (sys.stderr, resp.stderr)):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
    return resp.exit_code


def _exec_streaming(client: CRIClient, args: argparse.Namespace) -> int:
    return exec_interactive(
        client, args.container, list(args.cmd), args.interactive, args.tty, args.transport
    )


def exec_interactive(
    client: CRIClient, container_id: str, cmd: list[str], stdin: bool, tty: bool, transport: str = "websocket"
) -> int:
    """`exec -i/-t`: a CRI Exec URL, run on this terminal (podhost.cri.streaming.client)."""
    from podhost.cri.streaming.client import run_interactive

    request = pb.ExecRequest(
        container_id=container_id, cmd=cmd, tty=tty, stdin=stdin, stdout=True, stderr=not tty
    )
    try:
        url = client.exec(request)
    except Unimplemented as e:
        raise Unimplemented(f"interactive exec (-i/-t) needs the runtime's streaming server: {e}") from e
    return run_interactive(url, stdin=stdin, tty=tty, transport=transport)


def cmd_attach(client: CRIClient, args: argparse.Namespace) -> int:
    from podhost.cri.streaming.client import run_interactive

    request = pb.AttachRequest(
        container_id=args.container, tty=args.tty, stdin=args.stdin, stdout=True, stderr=not args.tty
    )
    url = client.attach(request)
    return run_interactive(url, stdin=args.stdin, tty=args.tty, transport=args.transport)


def parse_port_mapping(text: str) -> tuple[int, int]:
    """crictl/kubectl port-forward's `[LOCAL:]REMOTE` (LOCAL 0 or empty: a free port)."""
    local, sep, remote = text.rpartition(":")
    try:
        mapping = (int(local or 0) if sep else int(remote), int(remote))
    except ValueError as e:
        raise InvalidArgument(f"port mapping {text!r}: expected [LOCAL:]REMOTE") from e
    if not (0 <= mapping[0] < 65536 and 0 < mapping[1] < 65536):
        raise InvalidArgument(f"port mapping {text!r}: ports must be 1-65535")
    return mapping


def cmd_port_forward(client: CRIClient, args: argparse.Namespace) -> int:
    from podhost.cri.streaming.client import PortForwarder

    mappings = [parse_port_mapping(p) for p in args.ports]
    url = client.port_forward(args.pod_id, sorted({remote for _, remote in mappings}))
    forwarder = PortForwarder(url, mappings, args.address)
    forwarder.start()
    try:
        for (_, remote), local in zip(mappings, forwarder.local_ports, strict=True):
            _out(f"Forwarding from {args.address}:{local} -> {remote}\n")
        forwarder.wait()
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.close()
    return 0


def cmd_logs(client: CRIClient, args: argparse.Namespace) -> int:
    status = client.container_status(args.container).status
    if not status.log_path:
        raise FailedPrecondition(f"container {status.id[:13]} has no log file (its config set no log_path)")
    sys.stdout.flush()
    writer = crilog.LogWriter(sys.stdout.buffer, sys.stderr.buffer, args.timestamps)
    tail = args.tail if args.tail >= 0 else None
    try:
        crilog.show_container_log(client, status.id, status.log_path, writer, args.follow, tail)
    except FileNotFoundError as e:
        raise NotFound(f"log file {status.log_path} of container {status.id[:13]} does not exist") from e
    except PermissionError as e:
        raise FailedPrecondition(f"log file {status.log_path}: permission denied (run as root?)") from e
    return 0


def cmd_stats(client: CRIClient, args: argparse.Namespace) -> int:
    f = pb.ContainerStatsFilter(
        id=args.container or args.id or "",
        pod_sandbox_id=args.pod or "",
        label_selector=parse_labels(args.label),
    )
    first = client.list_container_stats(f)
    if args.output in ("json", "yaml"):
        _print_document(tables.message_dict(pb.ListContainerStatsResponse(stats=first)), args.output)
        return 0
    time.sleep(args.seconds)
    previous = {s.attributes.id: s for s in first}
    second = [
        s
        for s in client.list_container_stats(f)
        if s.attributes.id in previous
        and (args.all or s.cpu.usage_core_nano_seconds.value or s.memory.working_set_bytes.value)
    ]
    _out(tables.stats_table(second, previous, args.no_trunc))
    return 0


def cmd_statsp(client: CRIClient, args: argparse.Namespace) -> int:
    f = pb.PodSandboxStatsFilter(id=args.id or "", label_selector=parse_labels(args.label))
    first = client.list_pod_sandbox_stats(f)
    if args.output in ("json", "yaml"):
        _print_document(tables.message_dict(pb.ListPodSandboxStatsResponse(stats=first)), args.output)
        return 0
    time.sleep(args.seconds)
    previous = {s.attributes.id: s for s in first}
    second = [s for s in client.list_pod_sandbox_stats(f) if s.attributes.id in previous]
    _out(tables.pod_stats_table(second, previous, args.no_trunc))
    return 0


# --- images --------------------------------------------------------------------------------------------


def cmd_images(client: CRIClient, args: argparse.Namespace) -> int:
    images = client.list_images(args.image or "")
    if args.output in ("json", "yaml"):
        _print_document(tables.message_dict(pb.ListImagesResponse(images=images)), args.output)
    elif args.quiet:
        _out("".join(i.id + "\n" for i in images))
    else:
        _out(tables.images_table(images, args.no_trunc, args.digests))
    return 0


def cmd_inspecti(client: CRIClient, args: argparse.Namespace) -> int:
    for ref in args.images:
        resp = client.image_status(ref, verbose=True)
        if not resp.HasField("image"):
            raise NotFound(f"no such image {ref!r}")
        _print_document(tables.status_document(resp.image, resp.info), args.output)
    return 0


def pull_auth(creds: str | None, auth: str | None) -> pb.AuthConfig | None:
    """crictl's --creds USER[:PASSWORD] / --auth BASE64 as a CRI AuthConfig."""
    if creds and auth:
        raise InvalidArgument("give --creds or --auth, not both")
    if auth:
        try:
            base64.b64decode(auth, validate=True)
        except ValueError as e:
            raise InvalidArgument("--auth must be base64 of USER:PASSWORD") from e
        return pb.AuthConfig(auth=auth)
    if creds:
        username, _, password = creds.partition(":")
        if not username:
            raise InvalidArgument("--creds must be USER[:PASSWORD]")
        return pb.AuthConfig(username=username, password=password)
    return None


def pull_progress_line(ref: str, elapsed: float, grown: int | None, tick: int) -> str:
    """One redrawn status line. CRI PullImage is unary, so the runtime cannot stream its progress:
    the client shows the time spent and how much the image filesystem grew (ImageFsInfo) meanwhile."""
    spinner = "|/-\\"[tick % 4]
    line = f"Pulling {ref} {spinner} {elapsed:5.1f}s"
    if grown is not None and grown > 0:
        line += f"  image filesystem +{tables.human_size(grown, 3)}"
    return line


def _image_fs_used(client: CRIClient) -> int | None:
    try:
        fs = client.image_fs_info().image_filesystems
    except Exception:  # progress is decoration: never fail a pull over it
        return None
    return sum(f.used_bytes.value for f in fs) if fs else None


def cmd_pull(client: CRIClient, args: argparse.Namespace) -> int:
    auth = pull_auth(args.creds, args.auth)
    if not sys.stderr.isatty():
        ref = client.pull_image(args.image, auth)
        _out(f"Image is up to date for {ref}\n")
        return 0
    result: dict[str, Any] = {}

    def pull() -> None:
        try:
            result["ref"] = client.pull_image(args.image, auth)
        except BaseException as e:  # re-raised on the main thread
            result["error"] = e

    worker = threading.Thread(target=pull, daemon=True)
    started, tick = time.monotonic(), 0
    base = _image_fs_used(client)
    worker.start()
    grown: int | None = None
    while worker.is_alive():
        worker.join(0.25)
        tick += 1
        if base is not None and tick % 4 == 0:
            used = _image_fs_used(client)
            grown = used - base if used is not None else None
        sys.stderr.write("\r\x1b[K" + pull_progress_line(args.image, time.monotonic() - started, grown, tick))
        sys.stderr.flush()
    sys.stderr.write("\r\x1b[K")
    sys.stderr.flush()
    if "error" in result:
        raise result["error"]
    _out(f"Image is up to date for {result['ref']}\n")
    return 0


def unused_images(images: list[pb.Image], containers: list[pb.Container]) -> list[pb.Image]:
    """Images no container references and that are not pinned (what `rmi --prune` removes)."""
    refs = {r for c in containers for r in (c.image_id, c.image_ref, c.image.image) if r}
    return [
        i for i in images if not i.pinned and not refs.intersection([i.id, *i.repo_tags, *i.repo_digests])
    ]


def cmd_rmi(client: CRIClient, args: argparse.Namespace) -> int:
    if args.prune:
        if args.images:
            raise InvalidArgument("--prune removes every unused image: give no IMAGE with it")
        for image in unused_images(client.list_images(), client.list_containers()):
            client.remove_image(image.id)
            for name in image.repo_tags or [image.id]:
                _out(f"Deleted: {name}\n")
        return 0
    if not args.images:
        raise InvalidArgument("give at least one IMAGE (or --prune)")
    for ref in args.images:
        resp = client.image_status(ref)
        if not resp.HasField("image"):
            raise NotFound(f"no such image {ref!r}")
        client.remove_image(resp.image.id)
        for name in resp.image.repo_tags or [resp.image.id]:
            _out(f"Deleted: {name}\n")
    return 0


def cmd_load(client: CRIClient, args: argparse.Namespace) -> int:
    path = os.path.abspath(args.file)
    if not os.path.exists(path):
        raise NotFound(f"{args.file}: no such file")
    try:
        images = client.load_image(path)
    except Unimplemented as e:
        if "unknown service" not in str(e) and "Method not found" not in str(e):
            raise
        # Another CRI runtime (containerd, CRI-O) has no podhost.v1.Admin service.
        raise Unimplemented(
            f"the runtime at {client.endpoint} cannot load images through podhost ({e})"
        ) from e
    for image in images:
        for name in image.repo_tags or [image.id]:
            _out(f"Loaded image: {name}\n")
    return 0


# --- argument parsing ----------------------------------------------------------------------------------
