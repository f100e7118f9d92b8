"""Desired state on disk: every applied Pod and Service, so a daemon restart keeps them.

One JSON file per object under `<state dir>/kubelet/{pods,services,configmaps}/<namespace>_<name>.json`, written
atomically (`write_json_atomic`): a daemon killed at any instant leaves the old or the new file. A file
holds the manifest as applied (with the uid podhost gave the pod) and when it was created. Only desired
state lives here; what actually runs is always read back from the runtime through CRI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhost.atomicfile import write_json_atomic

log = logging.getLogger(__name__)

PODS, SERVICES, CONFIGMAPS = "pods", "services", "configmaps"
KINDS = (PODS, SERVICES, CONFIGMAPS)


@dataclass
class Stored:
    kind: str  # PODS, SERVICES or CONFIGMAPS (Secrets are never here: configobjects.SecretFiles)
    manifest: dict[str, Any]
    created_at: float


class DesiredState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        for kind in KINDS:
            (directory / kind).mkdir(parents=True, exist_ok=True)

    def _path(self, kind: str, namespace: str, name: str) -> Path:
        return self.directory / kind / f"{namespace}_{name}.json"

    def put(self, kind: str, namespace: str, name: str, manifest: dict[str, Any], created_at: float) -> None:
        write_json_atomic(self._path(kind, namespace, name), {"manifest": manifest, "createdAt": created_at})

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._path(kind, namespace, name).unlink(missing_ok=True)

    def load(self) -> list[Stored]:
        out = []
        for kind in KINDS:
            for path in sorted((self.directory / kind).glob("*.json")):
                try:
                    data = json.loads(path.read_bytes())
                    out.append(Stored(kind, data["manifest"], float(data.get("createdAt", 0.0))))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    log.error("desired state %s cannot be read (%s): kept aside as .corrupt", path, e)
                    path.rename(path.with_suffix(".corrupt"))
        return out
