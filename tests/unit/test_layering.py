"""The layers of DESIGN.md, checked on the source: every import points down. The kubelet speaks only CRI
(it can drive containerd as well), the runtime knows nothing of CRI's servicers or of who calls them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import podhost

PACKAGE = Path(podhost.__file__).parent

#: package -> the podhost packages it must never import (directly or lazily, inside a function).
FORBIDDEN = {
    "cli": ("podhost.apiserver", "podhost.kubelet"),
    "apiserver": ("podhost.cli", "podhost.runtime"),
    "kubelet": ("podhost.cli", "podhost.apiserver", "podhost.runtime"),
    "cri": ("podhost.cli", "podhost.apiserver", "podhost.kubelet"),
    "runtime": ("podhost.cli", "podhost.apiserver", "podhost.kubelet", "podhost.cri"),
    "pause": ("podhost.cli", "podhost.apiserver", "podhost.kubelet", "podhost.cri"),
    "kubeapi": ("podhost.cli", "podhost.apiserver", "podhost.kubelet", "podhost.cri", "podhost.runtime"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[package])
    ]
    assert not upward, "\n".join(upward)
