"""crictl-style rendering of CRI messages: tables, human durations and sizes, JSON/YAML documents.

Pure functions from protobuf messages (and the current time, passed in) to text, so the CLI and the demo
print the same thing and tests check it without a runtime. The formats follow crictl's output: columns
padded like Go's tabwriter with crictl's settings (minimum cell width 20, padding 3), ids cut to 13
characters, CREATED as "About a minute ago" (docker/go-units HumanDuration), sizes as "1.24MB".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from podhost.cri import api_pb2 as pb

TRUNCATED_ID_LEN = 13
MIN_CELL_WIDTH = 20
CELL_PADDING = 3

POD_STATES = {pb.SANDBOX_READY: "Ready", pb.SANDBOX_NOTREADY: "NotReady"}
CONTAINER_STATES = {
    pb.CONTAINER_CREATED: "Created",
    pb.CONTAINER_RUNNING: "Running",
    pb.CONTAINER_EXITED: "Exited",
    pb.CONTAINER_UNKNOWN: "Unknown",
}
POD_NAME_LABEL = "io.kubernetes.pod.name"

# --- cells ---------------------------------------------------------------------------------------------


def truncate_id(value: str, prefix: str = "") -> str:
    """`value` without `prefix`, cut to 13 characters (crictl's short ids)."""
    return value.removeprefix(prefix)[:TRUNCATED_ID_LEN]


def human_duration(seconds: float) -> str:
    """A duration as docker/go-units `HumanDuration` words it ("3 seconds", "About a minute", "2 days")."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def created_ago(created_at_ns: int, now_ns: int) -> str:
    return human_duration((now_ns - created_at_ns) / 1e9) + " ago"


_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float, precision: int = 4) -> str:
    """Decimal units with `precision` significant digits, as go-units (crictl: 3 for images, 4 for stats)."""
    unit = 0
    while size >= 1000 and unit < len(_SIZE_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.{precision}g}{_SIZE_UNITS[unit]}"


def render(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, the way Go's tabwriter lays out crictl's tables (last column unpadded)."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + CELL_PADDING, MIN_CELL_WIDTH)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + (row[-1] if row else ""))
    return "\n".join(lines) + "\n"


# --- tables --------------------------------------------------------------------------------------------

POD_COLUMNS = ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]
CONTAINER_COLUMNS = ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"]
STATS_COLUMNS = ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES", "SWAP"]
POD_STATS_COLUMNS = ["POD", "POD ID", "CPU %", "MEM"]


def newest_first(items: Iterable[Any]) -> list[Any]:
    """crictl lists pods and containers newest first."""
    return sorted(items, key=lambda m: m.created_at, reverse=True)


def pod_rows(pods: Iterable[pb.PodSandbox], now_ns: int, no_trunc: bool = False) -> list[list[str]]:
    rows = [POD_COLUMNS]
    for p in newest_first(pods):
        rows.append(
            [
                p.id if no_trunc else truncate_id(p.id),
                created_ago(p.created_at, now_ns),
                POD_STATES.get(p.state, str(p.state)),
                p.metadata.name,
                p.metadata.namespace,
                str(p.metadata.attempt),
                p.runtime_handler or "(default)",
            ]
        )
    return rows


def pods_table(pods: Iterable[pb.PodSandbox], now_ns: int, no_trunc: bool = False) -> str:
    return render(pod_rows(pods, now_ns, no_trunc))


def _image_cell(image: str, no_trunc: bool) -> str:
    """The IMAGE column: an image id ("sha256:<hex>") is shortened to its first 13 hex digits."""
    algorithm, sep, hexpart = image.partition(":")
    if not no_trunc and sep and algorithm == "sha256" and len(hexpart) == 64:
        return truncate_id(hexpart)
    return image


def container_rows(
    containers: Iterable[pb.Container], now_ns: int, no_trunc: bool = False
) -> list[list[str]]:
    rows = [CONTAINER_COLUMNS]
    for c in newest_first(containers):
        rows.append(
            [
                c.id if no_trunc else truncate_id(c.id),
                _image_cell(c.image.image, no_trunc),
                created_ago(c.created_at, now_ns),
                CONTAINER_STATES.get(c.state, str(c.state)),
                c.metadata.name,
                str(c.metadata.attempt),
                c.pod_sandbox_id if no_trunc else truncate_id(c.pod_sandbox_id),
                c.labels.get(POD_NAME_LABEL, "unknown"),
            ]
        )
    return rows


def containers_table(containers: Iterable[pb.Container], now_ns: int, no_trunc: bool = False) -> str:
    return render(container_rows(containers, now_ns, no_trunc))


def split_repo_tag(repo_tag: str) -> tuple[str, str]:
    """("docker.io/library/busybox", "1.36") from "docker.io/library/busybox:1.36" (the last colon)."""
    name, sep, tag = repo_tag.rpartition(":")
    if not sep or "/" in tag:
        return repo_tag, "<none>"
    return name, tag


def image_rows(images: Iterable[pb.Image], no_trunc: bool = False, digests: bool = False) -> list[list[str]]:
    header = ["IMAGE", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "SIZE"]
    rows = [header]
    ordered = sorted(images, key=lambda i: (not i.repo_tags, i.repo_tags[0] if i.repo_tags else i.id))
    for image in ordered:
        repo, digest = "<none>", "<none>"
        if image.repo_digests:
            repo, _, digest = image.repo_digests[0].partition("@")
        image_id = image.id if no_trunc else truncate_id(image.id, "sha256:")
        if not no_trunc:
            digest = truncate_id(digest, "sha256:")
        pairs = [split_repo_tag(t) for t in image.repo_tags] or [(repo, "<none>")]
        for name, tag in pairs:
            rows.append([name, tag] + ([digest] if digests else []) + [image_id, human_size(image.size, 3)])
    return rows


def images_table(images: Iterable[pb.Image], no_trunc: bool = False, digests: bool = False) -> str:
    return render(image_rows(images, no_trunc, digests))


def cpu_percent(
    old: pb.ContainerStats | pb.LinuxPodSandboxStats | None, new: pb.ContainerStats | pb.LinuxPodSandboxStats
) -> float:
    """CPU use between two samples (of a container or a pod), in percent of one core (crictl stats)."""
    if old is None:
        return 0.0
    elapsed = new.cpu.timestamp - old.cpu.timestamp
    used = new.cpu.usage_core_nano_seconds.value - old.cpu.usage_core_nano_seconds.value
    if elapsed <= 0 or new.cpu.usage_core_nano_seconds.value == 0:
        return 0.0
    return used / elapsed * 100


def stats_rows(
    samples: Iterable[pb.ContainerStats], previous: Mapping[str, pb.ContainerStats], no_trunc: bool = False
) -> list[list[str]]:
    rows = [STATS_COLUMNS]
    for s in samples:
        cid = s.attributes.id
        rows.append(
            [
                cid if no_trunc else truncate_id(cid),
                s.attributes.metadata.name,
                f"{cpu_percent(previous.get(cid), s):.2f}",
                human_size(s.memory.working_set_bytes.value),
                human_size(s.writable_layer.used_bytes.value),
                str(s.writable_layer.inodes_used.value),
                human_size(s.swap.swap_usage_bytes.value),
            ]
        )
    return rows


def stats_table(
    samples: Iterable[pb.ContainerStats], previous: Mapping[str, pb.ContainerStats], no_trunc: bool = False
) -> str:
    return render(stats_rows(samples, previous, no_trunc))


def pod_stats_table(
    samples: Iterable[pb.PodSandboxStats], previous: Mapping[str, pb.PodSandboxStats], no_trunc: bool = False
) -> str:
    """crictl statsp: a pod's CPU (between the two samples) and memory working set."""
    rows = [POD_STATS_COLUMNS]
    for s in samples:
        old = previous.get(s.attributes.id)
        rows.append(
            [
                s.attributes.metadata.name,
                s.attributes.id if no_trunc else truncate_id(s.attributes.id),
                f"{cpu_percent(old.linux if old else None, s.linux):.2f}",
                human_size(s.linux.memory.working_set_bytes.value),
            ]
        )
    return render(rows)


# --- documents -----------------------------------------------------------------------------------------


def version_text(v: pb.VersionResponse) -> str:
    return (
        f"Version:  {v.version}\nRuntimeName:  {v.runtime_name}\n"
        f"RuntimeVersion:  {v.runtime_version}\nRuntimeApiVersion:  {v.runtime_api_version}\n"
    )


def message_dict(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON (camelCase names, int64 as strings), the form crictl prints."""
    from google.protobuf import json_format  # only for -o json|yaml: a table needs neither

    return json_format.MessageToDict(message)


def parsed_info(info: Mapping[str, str]) -> dict[str, Any]:
    """A verbose `info` map with each JSON value parsed, as crictl inspect shows it."""
    out: dict[str, Any] = {}
    for key in sorted(info):
        try:
            out[key] = json.loads(info[key])
        except ValueError:
            out[key] = info[key]
    return out


def status_document(status: Message, info: Mapping[str, str]) -> dict[str, Any]:
    """{"status": ..., "info": ...}: the document `crictl inspect`/`inspectp`/`inspecti` print."""
    document: dict[str, Any] = {"status": message_dict(status)}
    if info:
        document["info"] = parsed_info(info)
    return document


def dump(document: Any, fmt: str) -> str:
    """`document` as "json" (indented like crictl) or "yaml"."""
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return json.dumps(document, indent=2) + "\n"
