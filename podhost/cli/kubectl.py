"""`podhost kubectl ARGS...`: the real kubectl, pointed at the instance's Kubernetes API.

    podhost [--root DIR] kubectl get pods -o wide    ==   kubectl --kubeconfig DIR/state/kubeconfig get pods -o wide

podhost has no kubectl of its own: its daemon serves the Kubernetes API and every view (tables, describe,
logs, exec) is the server's, rendered by the user's own kubectl. This command only finds kubectl and the
kubeconfig the daemon wrote for the instance `--root` names, then execs kubectl in its place (so its exit
status, signals and terminal are kubectl's own). It never starts a daemon: with none running there is no
kubeconfig, and it says so. `podhost kubeconfig --merge` makes plain `kubectl` reach the instance too.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from podhost.config import Config
from podhost.errors import FailedPrecondition, NotFound


def kubeconfig_path(root: str | None) -> Path:
    """The instance's kubeconfig, readable by this user (else a message saying why not)."""
    path = Config.load(root=root).state_dir / "kubeconfig"
    if not path.exists():
        raise FailedPrecondition(
            f"no kubeconfig at {path}: start the instance's daemon first (podhost daemon); it writes the "
            "kubeconfig when its Kubernetes API starts"
        )
    if not os.access(path, os.R_OK):
        raise FailedPrecondition(
            f"{path} is readable by its owner only (it holds the cluster's admin credentials): run as root"
        )
    return path


def kubectl_argv(kubectl: str, kubeconfig: Path, args: list[str]) -> list[str]:
    return [kubectl, "--kubeconfig", str(kubeconfig), *args]


def run(args: argparse.Namespace) -> int:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise NotFound(
            "kubectl is not installed: `apt-get install kubernetes-client` (Debian), or any kubectl on PATH"
        )
    argv = kubectl_argv(kubectl, kubeconfig_path(args.root), list(args.kubectl_args))
    os.execv(kubectl, argv)
    return 0  # not reached
