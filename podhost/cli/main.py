"""The `podhost` command: argument parsing, and the one place errors become messages and exit codes.

    podhost [--root DIR] [--runtime-endpoint EP] daemon [--bridge NAME] [--subnet CIDR] [--config FILE]
    podhost [--root DIR] [--runtime-endpoint EP] cri <verb> ...
    podhost [--root DIR] kubeconfig [--merge]

`--root` isolates an instance exactly as PODHOST_ROOT does (`Config.load(root=...)`); the CRI verbs talk
to that instance's socket unless `--runtime-endpoint` points elsewhere (containerd's socket works too).
Any `PodhostError` is printed as "podhost: <message>" on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from podhost import __version__
from podhost.cli import cri, demo, kubeconfig, kubectl
from podhost.config import Config
from podhost.errors import PodhostError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
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

    daemon = commands.add_parser("daemon", help="run the runtime and serve CRI on its socket")
    daemon.add_argument("--bridge", help="CNI bridge name (default podhost0)")
    daemon.add_argument("--subnet", help="pod subnet CIDR (default 10.88.0.0/16)")
    daemon.add_argument("--config", metavar="FILE", help="TOML config file")
    daemon.add_argument(
        "--nri-socket", metavar="PATH", help="serve NRI plugins on this socket (default: off)"
    )
    kubectl.add_daemon_arguments(daemon)
    kubeconfig.add_daemon_arguments(daemon)
    daemon.set_defaults(func=None)

    cri.add_parser(commands)
    demo.add_parser(commands)
    kubectl.add_parser(commands)
    kubeconfig.add_parser(commands)
    return parser


def run_daemon(args: argparse.Namespace) -> int:
    config = Config.load(
        root=args.root,
        config_file=args.config,
        bridge=args.bridge,
        subnet=args.subnet,
        nri_socket=args.nri_socket,
        log_level="debug" if args.debug else None,
        **kubectl.kubelet_settings(args),
        **kubeconfig.api_settings(args),
    )
    from podhost import daemon  # the runtime's whole import graph only when a daemon is wanted

    daemon.run(config)
    return 0


def endpoint(args: argparse.Namespace) -> str:
    """The CRI endpoint the verbs use: the flag, else the socket of the instance `--root` names."""
    if args.runtime_endpoint:
        return str(args.runtime_endpoint)
    return "unix://" + str(Config.load(root=args.root).socket)


def run_cri(args: argparse.Namespace) -> int:
    from podhost.cri.client import CRIClient

    with CRIClient(endpoint(args), timeout=args.call_timeout) as client:
        return int(args.func(client, args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "daemon":
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    try:
        if args.command == "daemon":
            return run_daemon(args)
        if not getattr(args, "needs_client", True):  # commands that manage their own connections
            return int(args.func(args))
        return run_cri(args)
    except PodhostError as e:
        print(f"podhost: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`podhost cri logs -f | head`): not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
