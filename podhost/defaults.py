"""Where an instance lives by default and where its CRI socket is, cheap to import: a `podhost cri` verb
needs the socket before anything else, and `podhost.config` (TOML, dataclasses) costs it ~15 ms."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/podhost")
DEFAULT_RUN_DIR = Path("/run/podhost")
SOCKET_NAME = "podhost.sock"
#: Isolates an instance exactly as `--root` does.
ROOT_ENV = "PODHOST_ROOT"


def socket_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The CRI socket of the instance at `root` (else $PODHOST_ROOT), else the default instance's."""
    root = root or os.environ.get(ROOT_ENV) or None
    return Path(root).absolute() / SOCKET_NAME if root else DEFAULT_RUN_DIR / SOCKET_NAME
