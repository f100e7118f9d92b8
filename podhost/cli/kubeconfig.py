"""`podhost kubeconfig`: the instance's kubeconfig for the real kubectl, and the daemon's API flags.

The daemon writes `<state_dir>/kubeconfig` (mode 0600, credentials embedded) each time its Kubernetes
API starts; this command prints it, or with `--merge` adds its cluster, user and context `podhost` to
`~/.kube/config` (or `$KUBECONFIG`'s first file), replacing entries of the same names and leaving the rest
alone. It only reads files: nothing here starts a daemon or imports the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from podhost.config import Config
from podhost.errors import FailedPrecondition

KUBECONFIG = "kubeconfig"


def read(root: str | None) -> dict[str, Any]:
    path = Config.load(root=root).state_dir / KUBECONFIG
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FailedPrecondition(
            f"no kubeconfig at {path}: the daemon writes it when its Kubernetes API starts (podhost daemon)"
        ) from None
    except PermissionError:
        raise FailedPrecondition(
            f"{path} is readable by its owner only (it holds the cluster's admin credentials): run as root"
        ) from None
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"{path} is not a kubeconfig")
    return doc


def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`into` with `new`'s clusters, users and contexts added (same names replaced), context current."""
    out: dict[str, Any] = dict(into) if into else {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    for section in ("clusters", "users", "contexts"):
        names = {entry.get("name") for entry in new.get(section) or []}
        kept = [e for e in out.get(section) or [] if e.get("name") not in names]
        out[section] = kept + list(new.get(section) or [])
    out["current-context"] = new.get("current-context", "")
    return out


def run(args: argparse.Namespace) -> int:
    doc = read(args.root)
    if not args.merge:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
        return 0
    target = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    existing = yaml.safe_load(target.read_text()) if target.exists() else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(merge(existing or {}, doc), sort_keys=False))
    print(f"context {doc.get('current-context')!r} added to {target} and made current")
    return 0
