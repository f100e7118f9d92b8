"""The `podhost` command: argument parsing, and the one place errors become messages and exit codes.

    podhost [--root DIR] [--runtime-endpoint EP] daemon [--bridge NAME] [--subnet CIDR] [--config FILE]
    podhost [--root DIR] [--runtime-endpoint EP] cri <verb> ...
    podhost [--root DIR] kubeconfig [--merge]
    podhost [--root DIR] kubectl ARGS...        the real kubectl with the instance's kubeconfig

`--root` isolates an instance exactly as PODHOST_ROOT does (`Config.load(root=...)`); the CRI verbs talk
to that instance's socket unless `--runtime-endpoint` points elsewhere (containerd's socket works too).
Any `PodhostError` is printed as "podhost: <message>" on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from podhost.cli.parser import KUBECTL_VERBS, build_parser, cri_verb_of, daemon_overrides
from podhost.errors import PodhostError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def run_daemon(args: argparse.Namespace) -> int:
    from podhost.config import Config

    config = Config.load(root=args.root, config_file=args.config, **daemon_overrides(args))
    from podhost import daemon  # the runtime's whole import graph only when a daemon is wanted

    daemon.run(config)
    return 0


def endpoint(args: argparse.Namespace) -> str:
    """The CRI endpoint the verbs use: the flag, else the socket of the instance `--root` names."""
    if args.runtime_endpoint:
        return str(args.runtime_endpoint)
    from podhost.defaults import socket_path

    return "unix://" + str(socket_path(args.root))


def run_cri(args: argparse.Namespace) -> int:
    from podhost.cri.client import CRIClient

    # podhost's own HTTP/2 client: a verb's process does not pay grpcio's import (cri/h2.py)
    with CRIClient(endpoint(args), timeout=args.call_timeout, transport="h2") as client:
        return int(args.func(client, args))


def kubectl_hint(argv: Sequence[str]) -> str:
    """For `podhost get pods` and the like: the command the user meant ("" when argv is not that)."""
    words = list(argv)
    while words[:1] and words[0].startswith("-"):  # podhost's global options and their values
        words = words[2:] if words[0] in ("--root", "--runtime-endpoint", "--timeout") else words[1:]
    if not words or words[0] not in KUBECTL_VERBS:
        return ""
    return (
        f"podhost: {words[0]!r} is kubectl's verb: `podhost kubectl {' '.join(words)}` runs the real kubectl "
        "with this instance's kubeconfig (or `podhost kubeconfig --merge`, then plain kubectl)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    hint = kubectl_hint(argv)
    if hint:
        print(hint, file=sys.stderr)
        return 2
    parser = build_parser(list(argv))
    args = parser.parse_args(argv)
    if args.command != "daemon" and args.debug:  # (warnings reach stderr without it, in fewer ms)
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        logging.getLogger("hpack").setLevel(logging.INFO)  # its debug is every header of every CRI call
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


def run() -> None:
    """The `podhost` command: `main()`, then, after a CRI verb, an exit without the interpreter's teardown
    (~12 ms of a short command, none of it needed once stdout and stderr are flushed)."""
    argv = sys.argv[1:]
    rc = main(argv)
    if cri_verb_of(argv) is not None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    run()
