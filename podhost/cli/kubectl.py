"""kubectl's everyday verbs against podhost's pod manager: apply, get, describe, logs, exec, delete.

    podhost apply -f FILE|DIR|-            podhost get pods [NAME] [-o wide|yaml|json] [-w]
    podhost describe pod NAME              podhost get services | endpoints | events
    podhost logs POD [-c C] [-f] [--previous]
    podhost exec [-i] [-t] POD [-c C] -- CMD...
    podhost delete pod NAME | service NAME | -f FILE

They talk to the daemon's `podhost.v1.Pods` service on the instance's socket (`--root`), and start a
daemon when none answers there (the embedded default: `podhost [--root DIR] daemon`, with DIR's
podhost.toml when it has one). exec and logs then go straight to the runtime the manager drives: ExecSync
(or the CRI streaming client for -i/-t) and the container's CRI log file. Rendering is pure (`*_rows`,
`pod_status_text`, `describe_text`); errors are `podhost.errors` exceptions that `podhost.cli.main` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from podhost.config import Config
from podhost.errors import InvalidArgument, NotFound, PodhostError, Unavailable

if TYPE_CHECKING:
    from podhost.kubelet.client import PodsClient

#: How long the CLI waits for a daemon it started to answer.
AUTOSTART_TIMEOUT = 60.0
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KINDS = {
    "pod": "pods",
    "pods": "pods",
    "po": "pods",
    "service": "services",
    "services": "services",
    "svc": "services",
    "endpoints": "endpoints",
    "ep": "endpoints",
    "event": "events",
    "events": "events",
    "ev": "events",
}


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- the daemon ---------------------------------------------------------------------------------------------


def daemon_argv(root: str | None) -> list[str]:
    """`podhost daemon` for the instance `root` names, with its podhost.toml when there is one."""
    argv = [sys.executable, "-m", "podhost.cli.main"]
    if root:
        argv += ["--root", str(root)]
    argv.append("daemon")
    if root and (Path(root) / "podhost.toml").is_file():
        argv += ["--config", str(Path(root) / "podhost.toml")]
    return argv


def connect(args: argparse.Namespace) -> PodsClient:
    """A client of the instance's daemon; one is started when none answers on its socket."""
    from podhost.kubelet.client import PodsClient

    config = Config.load(root=args.root)
    client = PodsClient(f"unix://{config.socket}", timeout=getattr(args, "call_timeout", 120.0))
    if client.answers():
        return client
    config.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.run_dir / "daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            daemon_argv(args.root),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # the daemon outlives this command
        )
    print(
        f"podhost: no daemon answered on {config.socket}; started one (pid {proc.pid}, log {log_path})",
        file=sys.stderr,
    )
    deadline = time.monotonic() + AUTOSTART_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"the podhost daemon exited with {proc.returncode}; see {log_path}")
        if client.answers(timeout=0.5):
            return client
        time.sleep(0.1)
    raise Unavailable(f"the podhost daemon did not answer within {AUTOSTART_TIMEOUT:.0f} s; see {log_path}")


# --- pure rendering -----------------------------------------------------------------------------------------

#: Spaces between columns, as kubectl's tabwriter pads them.
COLUMN_PADDING = 3


def render(rows: list[list[str]]) -> str:
    """Rows as aligned columns, kubectl's way (the last column unpadded)."""
    if not rows:
        return ""
    widths = [0] * max(len(r) for r in rows)
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + COLUMN_PADDING)
    lines = []
    for row in rows:
        cells = "".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1]))
        lines.append((cells + (row[-1] if row else "")).rstrip() + "\n")
    return "".join(lines)


def parse_time(text: str) -> float:
    if not text:
        return 0.0
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def age(text: str, now: float) -> str:
    """kubectl's short ages: 5s, 3m12s, 4h, 2d."""
    ts = parse_time(text)
    if not ts:
        return "<unknown>"
    s = max(0, int(now - ts))
    if s < 120:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def pod_status_text(pod: dict[str, Any]) -> str:
    """The STATUS column, kubectl's printPod: an init step, a container's waiting or terminated reason,
    Terminating, or the phase."""
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase", "Unknown")
    inits = status.get("initContainerStatuses", [])
    initializing = False
    for i, c in enumerate(inits):
        state = c.get("state", {})
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        initializing = True
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif wait and wait.get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(inits)}"
        break
    if not initializing:
        has_running = False
        for c in reversed(status.get("containerStatuses", [])):
            state = c.get("state", {})
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif "terminated" in state:
                term = state["terminated"]
                reason = term.get("reason") or f"ExitCode:{term.get('exitCode')}"
            elif "running" in state and c.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def pod_row(pod: dict[str, Any], now: float, wide: bool, all_namespaces: bool) -> list[str]:
    status = pod.get("status", {})
    containers = status.get("containerStatuses", [])
    ready = sum(1 for c in containers if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in containers)
    last = max(
        (parse_time(c.get("lastState", {}).get("terminated", {}).get("finishedAt", "")) for c in containers),
        default=0.0,
    )
    restart_text = str(restarts)
    if restarts and last:
        restart_text += f" ({age(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(last)), now)} ago)"
    meta = pod.get("metadata", {})
    row = [
        meta.get("name", ""),
        f"{ready}/{len(pod.get('spec', {}).get('containers', containers))}",
        pod_status_text(pod),
        restart_text,
        age(meta.get("creationTimestamp", ""), now),
    ]
    if wide:
        row += [status.get("podIP") or "<none>", os.uname().nodename]
    if all_namespaces:
        row.insert(0, meta.get("namespace", ""))
    return row


def pod_rows(pods: Iterable[dict[str, Any]], now: float, wide: bool, all_namespaces: bool) -> list[list[str]]:
    header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] + (["IP", "NODE"] if wide else [])
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    return [header] + [pod_row(p, now, wide, all_namespaces) for p in pods]


def service_rows(services: Iterable[dict[str, Any]], now: float) -> list[list[str]]:
    rows = [["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]]
    for s in services:
        spec = s.get("spec", {})
        ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])) or "<none>"
        cluster_ip = spec.get("clusterIP") or "<none>"
        rows.append(
            [
                s["metadata"]["name"],
                spec.get("type", "ClusterIP"),
                cluster_ip,
                "<none>",
                ports,
                age(s["metadata"].get("creationTimestamp", ""), now),
            ]
        )
    return rows


def endpoint_addresses(ep: dict[str, Any]) -> list[str]:
    out = []
    for subset in ep.get("subsets", []):
        for port in subset.get("ports", []):
            out += [f"{a['ip']}:{port['port']}" for a in subset.get("addresses", [])]
    return out


def endpoint_rows(endpoints: Iterable[dict[str, Any]], now: float) -> list[list[str]]:
    rows = [["NAME", "ENDPOINTS", "AGE"]]
    for ep in endpoints:
        addresses = endpoint_addresses(ep)
        text = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
        rows.append(
            [ep["metadata"]["name"], text or "<none>", age(ep["metadata"].get("creationTimestamp", ""), now)]
        )
    return rows


def _ago(ts: float, now: float) -> str:
    return age(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), now)


def event_rows(events: Iterable[dict[str, Any]], now: float) -> list[list[str]]:
    rows = [["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]]
    for e in sorted(events, key=lambda e: e["last_timestamp"]):
        count = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
        rows.append(
            [_ago(e["last_timestamp"], now), e["type"], e["reason"], e["object"], e["message"] + count]
        )
    return rows


def _probe_text(probe: dict[str, Any]) -> str:
    if "exec" in probe:
        what = f"exec {probe['exec'].get('command', [])}"
    elif "httpGet" in probe:
        h = probe["httpGet"]
        what = f"http-get http://{h.get('host', '')}:{h.get('port')}{h.get('path', '/')}"
    else:
        what = f"tcp-socket :{probe.get('tcpSocket', {}).get('port')}"
    return (
        f"{what} delay={probe.get('initialDelaySeconds', 0)}s timeout={probe.get('timeoutSeconds', 1)}s "
        f"period={probe.get('periodSeconds', 10)}s #success={probe.get('successThreshold', 1)} "
        f"#failure={probe.get('failureThreshold', 3)}"
    )


def _state_lines(state: dict[str, Any], label: str) -> list[str]:
    if not state:
        return []
    kind, detail = next(iter(state.items()))
    lines = [f"    {label}:\t{kind.capitalize()}"]
    for key, name in (
        ("reason", "Reason"),
        ("message", "Message"),
        ("exitCode", "Exit Code"),
        ("startedAt", "Started"),
        ("finishedAt", "Finished"),
    ):
        if key in detail and detail[key] not in ("", None):
            lines.append(f"      {name}:\t{detail[key]}")
    return lines


def _container_lines(spec: dict[str, Any], status: dict[str, Any]) -> list[str]:
    lines = [f"  {spec['name']}:"]
    if status.get("containerID"):
        lines.append(f"    Container ID:\t{status['containerID']}")
    lines.append(f"    Image:\t{spec.get('image', '')}")
    if status.get("imageID"):
        lines.append(f"    Image ID:\t{status['imageID']}")
    if spec.get("ports"):
        lines.append(
            "    Port:\t"
            + ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in spec["ports"])
        )
    if spec.get("command"):
        lines.append(f"    Command:\t{' '.join(spec['command'])}")
    if spec.get("args"):
        lines.append(f"    Args:\t{' '.join(str(a) for a in spec['args'])}")
    lines += _state_lines(status.get("state", {}), "State")
    lines += _state_lines(status.get("lastState", {}), "Last State")
    lines.append(f"    Ready:\t{status.get('ready', False)}")
    lines.append(f"    Restart Count:\t{status.get('restartCount', 0)}")
    for key, name in (
        ("livenessProbe", "Liveness"),
        ("readinessProbe", "Readiness"),
        ("startupProbe", "Startup"),
    ):
        if key in spec:
            lines.append(f"    {name}:\t{_probe_text(spec[key])}")
    if status.get("logPath"):
        lines.append(f"    Log:\t{status['logPath']}")
    return lines


def _tabbed(lines: list[str]) -> str:
    """Align "key:\\tvalue" lines at one column per indentation level, as kubectl's describe does."""
    width: dict[int, int] = {}
    for line in lines:
        if "\t" in line:
            key = line.split("\t", 1)[0]
            indent = len(key) - len(key.lstrip())
            width[indent] = max(width.get(indent, 0), len(key))
    out = []
    for line in lines:
        if "\t" in line:
            key, value = line.split("\t", 1)
            indent = len(key) - len(key.lstrip())
            out.append(key.ljust(width[indent] + 2) + value)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def describe_text(pod: dict[str, Any], events: list[dict[str, Any]], now: float) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    lines = [
        f"Name:\t{meta.get('name', '')}",
        f"Namespace:\t{meta.get('namespace', '')}",
        f"UID:\t{meta.get('uid', '')}",
        f"Node:\t{os.uname().nodename}",
        f"Start Time:\t{status.get('startTime', '<none>')}",
        "Labels:\t" + (" ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"),
        "Annotations:\t" + (" ".join(f"{k}: {v}" for k, v in sorted(annotations.items())) or "<none>"),
        f"Status:\t{pod_status_text(pod)}",
        f"IP:\t{status.get('podIP') or '<none>'}",
    ]
    sandbox = status.get("sandbox", {})
    if sandbox.get("id"):
        lines.append(f"Pod Sandbox:\t{sandbox['id'][:13]} (attempt {sandbox.get('attempt', 0)})")
    lines.append(f"Restart Policy:\t{spec.get('restartPolicy', 'Always')}")
    for group, key, skey in (
        ("Init Containers", "initContainers", "initContainerStatuses"),
        ("Containers", "containers", "containerStatuses"),
    ):
        specs = spec.get(key) or []
        if not specs:
            continue
        by_name = {s.get("name"): s for s in status.get(skey, [])}
        lines.append(f"{group}:")
        for c in specs:
            lines += _container_lines(c, by_name.get(c["name"], {}))
    conditions = status.get("conditions", [])
    rows = [["  Type", "Status", "Reason", "Message"]]
    rows += [["  " + c["type"], c["status"], c.get("reason", ""), c.get("message", "")] for c in conditions]
    text = _tabbed(lines) + "Conditions:\n" + render(rows)
    volumes = spec.get("volumes") or []
    if volumes:
        text += "Volumes:\n" + "".join(
            f"  {v['name']}:  {', '.join(k for k in v if k != 'name')}\n" for v in volumes
        )
    if events:
        rows = [["  Type", "Reason", "Age", "Object", "Message"]]
        for e in events:
            count = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
            rows.append(
                [
                    "  " + e["type"],
                    e["reason"],
                    _ago(e["last_timestamp"], now),
                    e["object"],
                    e["message"] + count,
                ]
            )
        text += "Events:\n" + render(rows)
    else:
        text += "Events:  <none>\n"
    return text


def document(objects: list[dict[str, Any]], single: bool, fmt: str) -> str:
    doc: Any = (
        objects[0] if single and len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
    )
    if fmt == "json":
        return json.dumps(doc, indent=4) + "\n"
    return yaml.safe_dump(doc, sort_keys=False)


# --- manifests ------------------------------------------------------------------------------------------------


def read_manifests(paths: list[str]) -> list[tuple[str, str]]:
    """(source, text) for every -f: a file, each manifest of a directory, or "-" for stdin."""
    out = []
    for p in paths:
        if p == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(p)
        try:
            if path.is_dir():
                files = sorted(f for f in path.iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file())
                out += [(str(f), f.read_text()) for f in files]
            else:
                out.append((str(path), path.read_text()))
        except OSError as e:
            raise InvalidArgument(f"{p}: {e.strerror or e}") from e
    if not out:
        raise InvalidArgument("no manifests found (give -f FILE, -f DIR or -f -)")
    return out


# --- commands -------------------------------------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    from podhost.kubelet.manifest import Pod, load_objects

    manifests = read_manifests(args.filename)
    objects = []
    for source, text in manifests:  # every file valid before anything is sent: a broken one creates nothing
        objects += load_objects(text, source)
    since = time.time()
    with connect(args) as client:
        for source, text in manifests:
            for line in client.apply(text, source):
                _out(line + "\n")
        if sys.stderr.isatty():
            show_image_pulls(client, [o for o in objects if isinstance(o, Pod)], since, args)
    return 0


def show_image_pulls(client: PodsClient, pods: list[Any], since: float, args: argparse.Namespace) -> None:
    """On a terminal, the pod manager's image pulls for the pods just applied, as they happen."""
    from podhost.cli import pulls
    from podhost.cri.client import CRIClient

    containers = {
        f"{p.namespace}/pod/{p.name}/{c.name}" for p in pods for c in [*p.init_containers, *p.containers]
    }
    if not containers:
        return
    tracker = pulls.PullTracker(containers, since)
    with CRIClient(f"unix://{Config.load(root=args.root).socket}", timeout=5) as cri:

        def fs_used() -> int | None:
            try:
                return sum(f.used_bytes.value for f in cri.image_fs_info().image_filesystems)
            except PodhostError:  # progress is decoration: never fail an apply over it
                return None

        def events() -> list[dict[str, Any]]:
            return [e for p in pods for e in client.get("events", p.namespace, p.name)]

        pulls.follow(tracker, events, fs_used)


def _kind(text: str) -> str:
    kind = KINDS.get(text.lower())
    if kind is None:
        raise InvalidArgument(
            f'the server doesn\'t have a resource type "{text}" (podhost serves pods, '
            "services, endpoints, events)"
        )
    return kind


def _namespace(args: argparse.Namespace) -> str:
    return "" if getattr(args, "all_namespaces", False) else args.namespace


def _rows(kind: str, objects: list[dict[str, Any]], args: argparse.Namespace) -> list[list[str]]:
    now = time.time()
    if kind == "pods":
        return pod_rows(objects, now, args.output == "wide", args.all_namespaces)
    if kind == "services":
        return service_rows(objects, now)
    if kind == "endpoints":
        return endpoint_rows(objects, now)
    return event_rows(objects, now)


def cmd_get(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    with connect(args) as client:
        if args.watch:
            return _watch(client, kind, args)
        objects = client.get(kind, _namespace(args), args.name or "")
    if args.output in ("json", "yaml"):
        _out(document(objects, bool(args.name), args.output))
    elif not objects:
        print(f"No resources found in {args.namespace} namespace.", file=sys.stderr)
    else:
        _out(render(_rows(kind, objects, args)))
    return 0


def _watch(client: PodsClient, kind: str, args: argparse.Namespace) -> int:
    """kubectl get -w: the table, then a line for each object whose row changed (ages left aside)."""
    shown: dict[str, list[str]] = {}
    first = True
    for objects in client.watch(kind, _namespace(args), args.name or ""):
        if args.output in ("json", "yaml"):
            _out(document(objects, False, args.output))
            continue
        rows = _rows(kind, objects, args)
        header, body = rows[0], rows[1:]
        changed = []
        for obj, row in zip(objects, body, strict=True):
            meta = obj.get("metadata", {})
            key = f"{meta.get('namespace', '')}/{meta.get('name', '')}" if meta else json.dumps(obj)
            signature = [
                cell for cell, title in zip(row, header, strict=True) if title not in ("AGE", "LAST SEEN")
            ]
            if shown.get(key) != signature:
                shown[key] = signature
                changed.append(row)
        text = render([header, *changed])
        if first:
            _out(text)
            first = False
        elif changed:
            _out(text.split("\n", 1)[1])
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    if _kind(args.kind) != "pods":
        raise InvalidArgument("podhost describes pods (use get -o yaml for services and endpoints)")
    with connect(args) as client:
        pod = client.get("pods", args.namespace, args.name)[0]
        events = client.get("events", args.namespace, args.name)
    _out(describe_text(pod, events, time.time()))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from podhost.cli import crilog
    from podhost.cri.client import CRIClient

    with connect(args) as client:
        where = client.locate(args.pod, args.container or "", args.namespace, args.previous)
    writer = crilog.LogWriter(sys.stdout.buffer, sys.stderr.buffer, args.timestamps)
    tail = args.tail if args.tail >= 0 else None
    sys.stdout.flush()
    try:
        if args.follow and not args.previous and where.container_id:
            with CRIClient(where.runtime_endpoint) as cri:
                crilog.show_container_log(cri, where.container_id, where.log_path, writer, True, tail)
        else:
            crilog.copy_log(where.log_path, writer, tail)
    except FileNotFoundError as e:
        what = "previous terminated container" if args.previous else "container"
        raise NotFound(
            f'{what} "{where.container}" in pod "{args.pod}" has no log yet ({where.log_path})'
        ) from e
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from podhost.cli.cri import exec_interactive, print_exec_result
    from podhost.cri.client import CRIClient

    command = _exec_flags_after_pod(args)
    if not command:
        raise InvalidArgument("give the command after --: podhost exec POD -- CMD [ARGS...]")
    with connect(args) as client:
        where = client.locate(args.pod, args.container or "", args.namespace)
    if not where.running:
        raise InvalidArgument(f'container "{where.container}" in pod "{args.pod}" is not running')
    with CRIClient(where.runtime_endpoint) as cri:
        if args.stdin or args.tty:
            return exec_interactive(cri, where.container_id, command, args.stdin, args.tty)
        return print_exec_result(cri.exec_sync(where.container_id, command, 0))


def _exec_flags_after_pod(args: argparse.Namespace) -> list[str]:
    """kubectl takes its flags after POD too (`exec web -c shell -- ps`): read those before `--`."""
    rest = list(args.cmd)
    if "--" not in rest:
        return rest
    cut = rest.index("--")
    flags, command = rest[:cut], rest[cut + 1 :]
    extra = argparse.ArgumentParser(prog="podhost exec", add_help=False)
    extra.add_argument("-c", "--container")
    extra.add_argument("-n", "--namespace")
    extra.add_argument("-i", "--stdin", action="store_true")
    extra.add_argument("-t", "--tty", action="store_true")
    try:
        parsed = extra.parse_args(flags)
    except SystemExit as e:
        raise InvalidArgument(f"exec: cannot read the flags {' '.join(flags)!r} before --") from e
    args.container = parsed.container or args.container
    args.namespace = parsed.namespace or args.namespace
    args.stdin, args.tty = args.stdin or parsed.stdin, args.tty or parsed.tty
    return command


def cmd_delete(args: argparse.Namespace) -> int:
    from podhost.kubelet.manifest import Service, load_objects

    targets: list[tuple[str, str, str]] = []
    if args.filename:
        for source, text in read_manifests(args.filename):
            for obj in load_objects(text, source):
                kind = "service" if isinstance(obj, Service) else "pod"
                targets.append((kind, obj.namespace, obj.name))
    else:
        if not args.kind or not args.names:
            raise InvalidArgument("give KIND NAME... (pod or service) or -f FILE")
        singular = {"pods": "pod", "services": "service"}.get(_kind(args.kind))
        if singular is None:
            raise InvalidArgument("podhost deletes pods and services")
        targets = [(singular, args.namespace, name) for name in args.names]
    with connect(args) as client:
        for kind, namespace, name in targets:
            _out(client.delete(kind, name, namespace, wait=args.wait) + "\n")
    return 0


# --- argument parsing ---------------------------------------------------------------------------------------
