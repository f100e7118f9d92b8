"""pause: the program that founds and holds every pod sandbox's namespaces (see pause.c).

`binary_path()` is where the built pause lives; `podhost.pause.build` builds it from pause.c at install
time, and falls back to `podhost.pause.fallback` (Python) only where no C compiler exists.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def binary_path() -> Path:
    """The built pause binary (not committed; made by `python -m podhost.pause.build`)."""
    return PACKAGE_DIR / "bin" / "pause"
