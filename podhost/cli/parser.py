"""The whole grammar of the `podhost` command, and nothing else.

Parsing must be cheap: `podhost --help` or a typo must not pay for gRPC, protobuf or the runtime. So this
module imports only argparse, and each command is a `Lazy` reference ("module", "function") that imports
its module when it runs. The commands themselves live in podhost.cli.cri (crictl's verbs),
podhost.cli.kubectl (a pass-through to the real kubectl), podhost.cli.demo and podhost.cli.kubeconfig.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from podhost import __version__

#: `podhost cri pods --state` and `ps --state` (podhost.cli.cri maps them to CRI states).
POD_STATES = ("notready", "ready")
CONTAINER_STATES = ("created", "exited", "running", "unknown")
#: kubectl's verbs, which are not podhost's: `podhost get pods` is answered with where they are.
KUBECTL_VERBS = frozenset(
    {"apply", "get", "describe", "logs", "exec", "delete", "create", "edit", "wait", "port-forward", "cp"}
)


class Lazy:
    """A command function named by module and attribute, imported on the first call."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args)

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _Unbuilt:
    """Stands in for the parser of a CRI verb the command line does not name: its arguments are not made
    (building every verb's parser is ~10 ms of a short command)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def cri_verb_of(argv: list[str]) -> str | None:
    """The CRI verb `argv` names (`podhost [globals] cri VERB ...`), or None."""
    words, valued = list(argv), ("--root", "--runtime-endpoint", "--timeout")
    while words and words[0].startswith("-"):
        words = words[2:] if words[0] in valued else words[1:]
    return words[1] if len(words) > 1 and words[0] == "cri" and not words[1].startswith("-") else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The grammar; given `argv`, only the CRI verb it names gets its arguments (any other command line,
    a typo or --help included, gets the whole grammar)."""
    only = cri_verb_of(argv) if argv is not None else None
    parser, verbs_built = _build(only)
    if only is not None and not verbs_built:
        parser, _ = _build(None)  # not a verb: argparse's own message lists them all
    return parser


def _build(only: str | None) -> tuple[argparse.ArgumentParser, int]:
    """The grammar (CRI verbs: only `only`, when given), and how many CRI verbs it has."""
    parser = argparse.ArgumentParser(prog="podhost", description="Kubernetes pods on one Linux machine.")
    parser.add_argument("--version", action="version", version=f"podhost {__version__}")
    parser.add_argument(
        "--root", metavar="DIR", help="isolate state, run files and socket under DIR (PODHOST_ROOT)"
    )
    parser.add_argument(
        "--runtime-endpoint",
        metavar="ENDPOINT",
        help="CRI socket, unix:///path or /path (default: the instance's own socket)",
    )
    parser.add_argument(
        "--timeout",
        dest="call_timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="per-call deadline (default 120)",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_daemon(commands)
    verbs_built = _add_cri(commands, only)
    _add_demo(commands)
    _add_kubectl(commands)
    _add_kubeconfig(commands)
    return parser, verbs_built


# --- podhost daemon --------------------------------------------------------------------------------------


def _add_daemon(commands: Any) -> None:
    daemon = commands.add_parser("daemon", help="run the runtime and serve CRI on its socket")
    daemon.add_argument("--bridge", help="CNI bridge name (default podhost0)")
    daemon.add_argument("--subnet", help="pod subnet CIDR (default 10.88.0.0/16)")
    daemon.add_argument("--config", metavar="FILE", help="TOML config file")
    daemon.add_argument(
        "--nri-socket", metavar="PATH", help="serve NRI plugins on this socket (default: off)"
    )
    # The pod manager (the global --runtime-endpoint picks the runtime it drives).
    daemon.add_argument(
        "--manifests", metavar="DIR", help="static pod directory: every Pod manifest in it runs, kept in sync"
    )
    daemon.add_argument(
        "--restart-backoff",
        type=float,
        metavar="SECONDS",
        help="CrashLoopBackOff's first wait, doubling to 5 min (default 10)",
    )
    daemon.add_argument(
        "--pod-cgroup-parent",
        metavar="PATH",
        help="put each pod's cgroup at PATH/pod<uid> (give one when driving containerd)",
    )
    # The Kubernetes API.
    daemon.add_argument(
        "--kube-api-port",
        type=int,
        metavar="PORT",
        help="serve the Kubernetes API on 127.0.0.1:PORT (default 0: the previous port if free, else any)",
    )
    daemon.add_argument(
        "--no-kube-api",
        dest="kube_api",
        action="store_false",
        default=None,
        help="do not serve the Kubernetes API",
    )
    daemon.set_defaults(func=None)


def daemon_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's flags as `Config` overrides (None: keep the config file's value)."""
    return {
        "bridge": args.bridge,
        "subnet": args.subnet,
        "nri_socket": args.nri_socket,
        "log_level": "debug" if args.debug else None,
        "kubelet_runtime_endpoint": args.runtime_endpoint,
        "kubelet_manifests_dir": str(Path(args.manifests).absolute()) if args.manifests else None,
        "kubelet_restart_backoff": args.restart_backoff,
        "kubelet_pod_cgroup_parent": args.pod_cgroup_parent,
        "kube_api": args.kube_api,
        "kube_api_port": args.kube_api_port,
    }


# --- podhost cri ---------------------------------------------------------------------------------------


def _output_arg(p: argparse.ArgumentParser, choices: tuple[str, ...], default: str) -> None:
    p.add_argument(
        "-o", "--output", choices=choices, default=default, help=f"output format (default {default})"
    )


def _listing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only print IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    p.add_argument("-l", "--latest", action="store_true", help="only the newest")
    p.add_argument("--last", type=int, default=0, metavar="N", help="only the N newest")
    p.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="label selector (repeatable)"
    )
    _output_arg(p, ("table", "json", "yaml"), "table")


def _transport_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--transport",
        choices=("websocket", "spdy"),
        default="websocket",
        help="streaming protocol (default websocket: v5.channel.k8s.io)",
    )


def _add_cri(subparsers: Any, only: str | None = None) -> int:
    """`podhost cri <verb>`: podhost.cli.cri's commands (only verb `only`, when given). How many verbs
    were built."""
    cri = subparsers.add_parser("cri", help="crictl-style commands against a CRI runtime endpoint")
    verbs = cri.add_subparsers(dest="verb", metavar="VERB", required=True)
    built = 0

    def verb(name: str, func: str, help: str) -> Any:
        nonlocal built
        if only is not None and name != only:
            return _Unbuilt()
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help, description=help)
        p.set_defaults(func=Lazy("podhost.cli.cri", func))
        built += 1
        return p

    verb("version", "cmd_version", "runtime name and version")
    p = verb("info", "cmd_info", "runtime status and configuration")
    _output_arg(p, ("json", "yaml"), "json")

    p = verb("pods", "cmd_pods", "list pod sandboxes")
    p.add_argument("--id", help="pod sandbox ID (prefix)")
    p.add_argument("--name", help="pod name regular expression")
    p.add_argument("--namespace", help="pod namespace regular expression")
    p.add_argument("-s", "--state", choices=POD_STATES, type=str.lower, help="pod state")
    _listing_args(p)

    p = verb("inspectp", "cmd_inspectp", "status of pod sandboxes")
    p.add_argument("ids", nargs="+", metavar="POD-ID")
    _output_arg(p, ("json", "yaml"), "json")

    p = verb("runp", "cmd_runp", "run a pod sandbox from a pod config file (JSON or YAML)")
    p.add_argument("config", metavar="POD-CONFIG")
    p.add_argument("-r", "--runtime", default="", help="runtime handler (default: the runtime's default)")

    p = verb("stopp", "cmd_stopp", "stop pod sandboxes")
    p.add_argument("ids", nargs="*", metavar="POD-ID")
    p.add_argument("-a", "--all", action="store_true", help="every pod sandbox")

    p = verb("rmp", "cmd_rmp", "remove pod sandboxes")
    p.add_argument("ids", nargs="*", metavar="POD-ID")
    p.add_argument("-a", "--all", action="store_true", help="every pod sandbox")
    p.add_argument("-f", "--force", action="store_true", help="stop first")

    p = verb("ps", "cmd_ps", "list containers (running only, unless -a or --state)")
    p.add_argument("-a", "--all", action="store_true", help="all states")
    p.add_argument("--id", help="container ID (prefix)")
    p.add_argument("-p", "--pod", help="pod sandbox ID (prefix)")
    p.add_argument("--name", help="container name regular expression")
    p.add_argument("-s", "--state", choices=CONTAINER_STATES, type=str.lower, help="container state")
    _listing_args(p)

    p = verb("inspect", "cmd_inspect", "status of containers")
    p.add_argument("ids", nargs="+", metavar="CONTAINER-ID")
    _output_arg(p, ("json", "yaml"), "json")

    p = verb("create", "cmd_create", "create a container in a pod sandbox")
    p.add_argument("pod_id", metavar="POD-ID")
    p.add_argument("container_config", metavar="CONTAINER-CONFIG")
    p.add_argument("pod_config", metavar="POD-CONFIG")
    p.add_argument("--with-pull", action="store_true", help="pull the image first if it is not present")

    p = verb("start", "cmd_start", "start created containers")
    p.add_argument("ids", nargs="+", metavar="CONTAINER-ID")

    p = verb("stop", "cmd_stop", "stop running containers")
    p.add_argument("ids", nargs="+", metavar="CONTAINER-ID")
    p.add_argument("-t", "--timeout", type=int, default=0, help="seconds to wait before killing (default 0)")

    p = verb("rm", "cmd_rm", "remove containers")
    p.add_argument("ids", nargs="*", metavar="CONTAINER-ID")
    p.add_argument("-a", "--all", action="store_true", help="every container")
    p.add_argument("-f", "--force", action="store_true", help="stop first")

    p = verb("exec", "cmd_exec", "run a command in a container and wait (exit code propagated)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (streaming exec)")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (streaming exec)")
    _transport_arg(p)
    p.add_argument("--timeout", type=int, default=0, help="seconds before the command is killed (0: none)")
    p.add_argument("container", metavar="CONTAINER-ID")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")

    p = verb("attach", "cmd_attach", "attach to a running container's stdio")
    p.add_argument("-i", "--stdin", action="store_true", help="send stdin to the container")
    p.add_argument("-t", "--tty", action="store_true", help="the container has a terminal")
    _transport_arg(p)
    p.add_argument("container", metavar="CONTAINER-ID")

    p = verb("port-forward", "cmd_port_forward", "forward local ports to ports inside a pod")
    p.add_argument("pod_id", metavar="POD-ID")
    p.add_argument("ports", nargs="+", metavar="[LOCAL:]REMOTE")
    p.add_argument("--address", default="127.0.0.1", help="local address to listen on (default 127.0.0.1)")

    p = verb("logs", "cmd_logs", "print a container's log")
    p.add_argument("container", metavar="CONTAINER-ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("--tail", type=int, default=-1, metavar="N", help="only the last N lines")
    p.add_argument("-t", "--timestamps", action="store_true", help="show each line's timestamp")

    p = verb("statsp", "cmd_statsp", "pod resource usage (PodSandboxStats)")
    p.add_argument("--id", help="pod sandbox ID (prefix)")
    p.add_argument("-s", "--seconds", type=float, default=1.0, help="CPU sample duration (default 1)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label selector")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    _output_arg(p, ("table", "json", "yaml"), "table")

    p = verb("stats", "cmd_stats", "container resource usage")
    p.add_argument("container", nargs="?", metavar="CONTAINER-ID")
    p.add_argument("--id", help="container ID (prefix)")
    p.add_argument("-p", "--pod", help="pod sandbox ID (prefix)")
    p.add_argument("-a", "--all", action="store_true", help="include containers that are not running")
    p.add_argument("-s", "--seconds", type=float, default=1.0, help="CPU sample duration (default 1)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label selector")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    _output_arg(p, ("table", "json", "yaml"), "table")

    p = verb("images", "cmd_images", "list images")
    p.add_argument("image", nargs="?", metavar="IMAGE")
    p.add_argument("-q", "--quiet", action="store_true", help="only print image IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten IDs")
    _output_arg(p, ("table", "json", "yaml"), "table")

    p = verb("inspecti", "cmd_inspecti", "status of images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _output_arg(p, ("json", "yaml"), "json")

    p = verb(
        "pull", "cmd_pull", "pull an image (elapsed time and image filesystem growth shown on a terminal)"
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--creds", metavar="USER[:PASSWORD]", help="registry credentials")
    p.add_argument("--auth", metavar="BASE64", help="registry credentials as base64 of USER:PASSWORD")

    p = verb("rmi", "cmd_rmi", "remove images")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument(
        "-q", "--prune", action="store_true", help="remove every image no container uses (pinned kept)"
    )

    p = verb("load", "cmd_load", "import an image archive on this machine (podhost only)")
    p.add_argument("file", metavar="FILE")
    return built


# --- podhost demo, podhost kubeconfig ---------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    from_repo = Path(__file__).resolve().parents[2] / "examples" / "shared-namespace-demo.yaml"
    demo = commands.add_parser(
        "demo", help="run the article's shared-namespace-demo pod with the real kubectl on a private instance"
    )
    demo.add_argument("-f", "--filename", default=str(from_repo), help="the Pod manifest to run")
    demo.add_argument(
        "--keep", action="store_true", help="leave the pod and daemon running (prints how to clean up)"
    )
    demo.add_argument("--bridge", default="phdemo0", help="the private instance's bridge (default phdemo0)")
    demo.add_argument(
        "--subnet", default="10.244.250.0/24", help="the private instance's subnet (default 10.244.250.0/24)"
    )
    demo.add_argument(
        "--images-only",
        action="store_true",
        help="only load the example's images (Debian's nginx, busybox:1.28) into the running instance "
        "--root names, offline",
    )
    demo.set_defaults(func=Lazy("podhost.cli.demo", "run_demo"), needs_client=False)


def _add_kubeconfig(commands: Any) -> None:
    p = commands.add_parser(
        "kubeconfig", help="print the kubeconfig for kubectl (or --merge it into ~/.kube/config)"
    )
    p.add_argument("--merge", action="store_true", help="add context `podhost` to ~/.kube/config and use it")
    p.set_defaults(func=Lazy("podhost.cli.kubeconfig", "run"), needs_client=False)


# --- podhost kubectl ----------------------------------------------------------------------------------


def _add_kubectl(commands: Any) -> None:
    """`podhost kubectl ARGS...`: the real kubectl with the instance's kubeconfig (podhost.cli.kubectl).
    Every argument after `kubectl` is kubectl's, options included: the subparser has no options of its
    own (no prefix characters argparse would recognise, no -h)."""
    p = commands.add_parser(
        "kubectl",
        help="run the real kubectl against this instance's Kubernetes API (its kubeconfig)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("kubectl_args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=Lazy("podhost.cli.kubectl", "run"), needs_client=False)
