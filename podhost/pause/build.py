"""Build pause from pause.c: freestanding and static where the architecture allows, else against libc.

Run as `python -m podhost.pause.build` (the set-up script does); rebuilds only when pause.c is newer than
the binary. Prints what it built and how, since the two builds differ ~50x in memory.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from podhost.pause import PACKAGE_DIR, binary_path

log = logging.getLogger(__name__)

FREESTANDING_FLAGS = [
    "-Os",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-pie",
    "-no-pie",
    "-Wl,--gc-sections",
    "-Wl,--build-id=none",
]
LIBC_FLAGS = ["-DPAUSE_LIBC", "-Os", "-static"]


def compile_commands(cc: str, source: Path, out: Path, machine: str) -> list[list[str]]:
    """The compiler invocations to try, best first."""
    commands = []
    if machine in ("x86_64", "aarch64", "arm64"):
        commands.append([cc, *FREESTANDING_FLAGS, "-o", str(out), str(source)])
    commands.append([cc, *LIBC_FLAGS, "-o", str(out), str(source)])
    commands.append([cc, "-DPAUSE_LIBC", "-Os", "-o", str(out), str(source)])  # no static libc installed
    return commands


def build(force: bool = False) -> Path | None:
    """Build the pause binary; None when no C compiler exists (the Python fallback is used then)."""
    out, source = binary_path(), PACKAGE_DIR / "pause.c"
    if not force and out.exists() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    errors = []
    for cmd in compile_commands(cc, source, tmp, platform.machine()):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, out)
            kind = "freestanding" if "-nostdlib" in cmd else "libc"
            print(f"podhost: built pause ({kind}, {out.stat().st_size} bytes) at {out}")
            return out
        errors.append(proc.stderr.strip())
    raise SystemExit("podhost: could not build pause:\n" + "\n".join(errors))


if __name__ == "__main__":
    if build(force="--force" in sys.argv) is None:
        print("podhost: no C compiler found; pods will use the Python pause fallback (more memory per pod)")
