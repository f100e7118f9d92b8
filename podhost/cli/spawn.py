"""Start a `podhost daemon` in the background and wait until it answers CRI.

Used by the demo and the test harness; the daemon is a separate process so that it can be killed and
restarted like a real node's runtime while its pods keep running.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from podhost.cri.client import CRIClient
from podhost.errors import Unavailable


def daemon_command(root: Path, bridge: str, subnet: str, config_file: Path | None = None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "podhost.cli.main",
        "--root",
        str(root),
        "daemon",
        "--bridge",
        bridge,
        "--subnet",
        subnet,
    ]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    return cmd


def spawn_daemon(
    cmd: list[str], log_path: Path, client: CRIClient, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """Run `cmd` with its output in `log_path`; return once `client` gets a Version answer."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"podhost daemon exited with {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(Exception):
            client.version()
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise Unavailable(f"podhost daemon did not answer within {timeout:.0f} s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
